/*
 * flag.c -- a three-field record guarded by a flag, written with libpmem.
 *
 * The record is consistent when the flag is clear, or when the flag is set and the three
 * fields are equal. Modes (the same as PMDK's pmreorder_simple test, written independently):
 *   g FILE  write the fields, persist, then set the flag and persist (correct)
 *   b FILE  set the flag first, then the fields, one persist for all (buggy)
 *   m FILE  like g, but first persist a deliberately inconsistent record with
 *           pmem_memset_persist and clear it again (setup a checker must not see)
 *   c FILE  check: exit 0 when consistent, 1 when not
 * Markers (pmemcheck client requests): CHANGE.BEGIN/CHANGE.END around the write,
 * UNUSED.BEGIN/UNUSED.END after it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpmem.h>
#if __has_include(<valgrind/pmemcheck.h>)
#include <valgrind/pmemcheck.h>
#else /* built only to check: the markers are written when recording under pmemcheck */
#define VALGRIND_PMC_EMIT_LOG(name) ((void)(name))
#endif

struct record {
	int first;
	int second;
	int third;
	int flag;
};

static void
write_good(struct record *r)
{
	r->first = 1;
	r->second = 1;
	r->third = 1;
	pmem_persist(&r->first, sizeof(int) * 3);
	r->flag = 1;
	pmem_persist(&r->flag, sizeof(r->flag));
}

static void
write_bad(struct record *r)
{
	r->flag = 1;
	r->first = 1;
	r->second = 1;
	r->third = 1;
	pmem_persist(r, sizeof(*r));
}

static int
inconsistent(const struct record *r)
{
	return r->flag && (r->first != r->second || r->first != r->third);
}

int
main(int argc, char *argv[])
{
	if (argc != 3 || strlen(argv[1]) != 1 || !strchr("gbmc", argv[1][0])) {
		fprintf(stderr, "usage: %s g|b|m|c FILE\n", argv[0]);
		return 2;
	}
	size_t len;
	int is_pmem;
	struct record *r = pmem_map_file(argv[2], 0, 0, 0, &len, &is_pmem);
	if (r == NULL || len < sizeof(*r)) {
		perror(argv[2]);
		return 2;
	}
	char mode = argv[1][0];
	int status = 0;
	if (mode == 'c') {
		status = inconsistent(r);
		if (status)
			fprintf(stderr, "flag set but fields %d %d %d\n", r->first, r->second, r->third);
	} else {
		if (mode == 'm') {
			pmem_memset_persist(&r->flag, 1, sizeof(int));
			pmem_memset_persist(&r->first, 0, sizeof(int) * 2);
			pmem_memset_persist(&r->third, 1, sizeof(int));
		}
		pmem_memset_persist(r, 0, sizeof(*r));
		VALGRIND_PMC_EMIT_LOG("CHANGE.BEGIN");
		if (mode == 'b')
			write_bad(r);
		else
			write_good(r);
		VALGRIND_PMC_EMIT_LOG("CHANGE.END");
		VALGRIND_PMC_EMIT_LOG("UNUSED.BEGIN");
		VALGRIND_PMC_EMIT_LOG("UNUSED.END");
	}
	pmem_unmap(r, len);
	return status;
}
