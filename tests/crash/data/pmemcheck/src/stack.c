/*
 * stack.c -- nested marker sections, and a checker that reads PMREORDER_MARKERS.
 *
 * Three groups of four ints are written and persisted, group by group, inside the nested
 * sections OUTER.BEGIN, INNER.BEGIN, INNER.END, OUTER.END (the same shape as PMDK's
 * pmreorder_stack test, written independently). Modes:
 *   w FILE  write
 *   c FILE  check: group k (0..2) must be complete once k + 3 markers have been seen
 *           (the writer has passed the marker after it), and PMREORDER_MARKERS must be set
 *           (exit 1 if not)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpmem.h>
#if __has_include(<valgrind/pmemcheck.h>)
#include <valgrind/pmemcheck.h>
#else /* built only to check: the markers are written when recording under pmemcheck */
#define VALGRIND_PMC_EMIT_LOG(name) ((void)(name))
#endif

struct groups {
	int g[3][4];
};

static void
write_group(struct groups *p, int k)
{
	for (int i = 0; i < 4; i++)
		p->g[k][i] = 1;
	pmem_persist(p->g[k], sizeof(p->g[k]));
}

static int
count_markers(const char *list)
{
	int n = 0;
	if (*list == '\0')
		return 0;
	for (n = 1; *list; list++)
		n += *list == '|';
	return n;
}

int
main(int argc, char *argv[])
{
	if (argc != 3 || strlen(argv[1]) != 1 || !strchr("wc", argv[1][0])) {
		fprintf(stderr, "usage: %s w|c FILE\n", argv[0]);
		return 2;
	}
	size_t len;
	struct groups *p = pmem_map_file(argv[2], 0, 0, 0, &len, NULL);
	if (p == NULL || len < sizeof(*p)) {
		perror(argv[2]);
		return 2;
	}
	int status = 0;
	if (argv[1][0] == 'c') {
		const char *markers = getenv("PMREORDER_MARKERS");
		if (markers == NULL) {
			fprintf(stderr, "PMREORDER_MARKERS is not set\n");
			status = 1;
		} else {
			/* group k is persisted before marker number k + 3 */
			int n = count_markers(markers);
			for (int k = 0; k + 3 <= n && k < 3; k++)
				for (int i = 0; i < 4; i++)
					if (p->g[k][i] != 1) {
						fprintf(stderr, "group %d incomplete after markers %s\n", k, markers);
						status = 1;
					}
		}
	} else {
		pmem_memset_persist(p, 0, sizeof(*p));
		VALGRIND_PMC_EMIT_LOG("OUTER.BEGIN");
		VALGRIND_PMC_EMIT_LOG("INNER.BEGIN");
		write_group(p, 0);
		VALGRIND_PMC_EMIT_LOG("INNER.END");
		write_group(p, 1);
		VALGRIND_PMC_EMIT_LOG("OUTER.END");
		write_group(p, 2);
	}
	pmem_unmap(p, len);
	return status;
}
