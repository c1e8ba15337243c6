/*
 * two.c -- one commit record in each of two pool files, written with libpmem.
 *
 * Each file holds {u64 data[4]; u64 valid}: consistent when valid is 0, or when valid is 1
 * and every data word holds its expected value (0x1111... in the first file, 0x2222... in
 * the second). Modes:
 *   g A B   both records written data first, then valid (correct)
 *   b A B   A correct; in B valid is set before the data, one persist for all (buggy)
 *   c A B   check both files: exit 0 when both are consistent, 1 when not
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <libpmem.h>

struct rec {
	uint64_t data[4];
	uint64_t valid;
};

static struct rec *
open_rec(const char *path, size_t *len)
{
	struct rec *r = pmem_map_file(path, 0, 0, 0, len, NULL);
	if (r == NULL || *len < sizeof(*r)) {
		perror(path);
		return NULL;
	}
	return r;
}

static void
commit(struct rec *r, uint64_t value, int buggy)
{
	if (buggy)
		r->valid = 1;
	for (int i = 0; i < 4; i++)
		r->data[i] = value;
	if (!buggy) {
		pmem_persist(r->data, sizeof(r->data));
		r->valid = 1;
		pmem_persist(&r->valid, sizeof(r->valid));
	} else {
		pmem_persist(r, sizeof(*r));
	}
}

static int
bad(const struct rec *r, uint64_t value)
{
	if (!r->valid)
		return 0;
	for (int i = 0; i < 4; i++)
		if (r->data[i] != value)
			return 1;
	return 0;
}

int
main(int argc, char *argv[])
{
	if (argc != 4 || strlen(argv[1]) != 1 || !strchr("gbc", argv[1][0])) {
		fprintf(stderr, "usage: %s g|b|c FILE_A FILE_B\n", argv[0]);
		return 2;
	}
	size_t la, lb;
	struct rec *a = open_rec(argv[2], &la), *b = open_rec(argv[3], &lb);
	if (a == NULL || b == NULL)
		return 2;
	int status = 0;
	if (argv[1][0] == 'c') {
		if (bad(a, 0x1111111111111111ULL)) {
			fprintf(stderr, "%s: valid record with wrong data\n", argv[2]);
			status = 1;
		}
		if (bad(b, 0x2222222222222222ULL)) {
			fprintf(stderr, "%s: valid record with wrong data\n", argv[3]);
			status = 1;
		}
	} else {
		commit(a, 0x1111111111111111ULL, 0);
		commit(b, 0x2222222222222222ULL, argv[1][0] == 'b');
	}
	pmem_unmap(a, la);
	pmem_unmap(b, lb);
	return status;
}
