/*
 * libpmemobj: N transactions keeping an invariant over three fields of the root
 * object, x + y == sum (each transaction adds i to x and 2i to y).
 *
 *   obj_tx create FILE            make the pool (not traced)
 *   obj_tx run MODE FILE N [timed] MODE: correct (every field pmemobj_tx_add_range'd)
 *                                       buggy (sum written without being added);
 *                                       timed: print the seconds the N transactions took
 *   obj_tx check FILE             open the pool (recovery runs), exit 0 iff the invariant holds
 *   obj_tx check-copy FILE        the same on a copy of FILE (for pmreorder, which replays onto FILE)
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <libpmemobj.h>

#define LAYOUT "pmemkit-obj-tx"
#define POOL_SIZE (8u << 20)

struct root {
	uint64_t x;
	uint64_t pad[7];   /* x, y and sum on different cache lines */
	uint64_t y;
	uint64_t pad2[7];
	uint64_t sum;
};

static int copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
	char buf[1 << 16];
	size_t n;
	int rc = in && out ? 0 : -1;
	while (rc == 0 && (n = fread(buf, 1, sizeof(buf), in)) > 0)
		if (fwrite(buf, 1, n, out) != n)
			rc = -1;
	if (in)
		fclose(in);
	if (out && fclose(out) != 0)
		rc = -1;
	return rc;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "create") == 0) {
		size_t size = argc > 3 ? strtoull(argv[3], NULL, 0) : POOL_SIZE;
		PMEMobjpool *pop = pmemobj_create(argv[2], LAYOUT, size, 0644);
		if (!pop) { fprintf(stderr, "create: %s\n", pmemobj_errormsg()); return 2; }
		pmemobj_root(pop, sizeof(struct root));
		pmemobj_close(pop);
		return 0;
	}
	/* check-copy: check a copy, because pmreorder keeps replaying onto the file it hands
	 * the checker, and pmemobj_open's recovery writes to it */
	int on_copy = argc == 3 && strcmp(argv[1], "check-copy") == 0;
	if (on_copy || (argc == 3 && strcmp(argv[1], "check") == 0)) {
		char copy[4096];
		const char *path = argv[2];
		if (on_copy) {
			snprintf(copy, sizeof(copy), "%s.check", argv[2]);
			if (copy_file(argv[2], copy) != 0) { perror(copy); return 1; }
			path = copy;
		}
		PMEMobjpool *pop = pmemobj_open(path, LAYOUT);
		if (on_copy)
			unlink(copy);
		if (!pop) { printf("cannot open: %s\n", pmemobj_errormsg()); return 1; }
		struct root *r = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
		int ok = r->x + r->y == r->sum;
		if (!ok)
			printf("x %lu + y %lu != sum %lu\n", (unsigned long)r->x, (unsigned long)r->y,
			       (unsigned long)r->sum);
		pmemobj_close(pop);
		return !ok;
	}
	if (argc < 5 || argc > 6 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "usage: %s create FILE [SIZE] | run correct|buggy FILE N [timed] | "
			"check FILE | check-copy FILE\n", argv[0]);
		return 2;
	}
	int buggy = strcmp(argv[2], "buggy") == 0;
	int n = atoi(argv[4]);
	PMEMobjpool *pop = pmemobj_open(argv[3], LAYOUT);
	if (!pop) { fprintf(stderr, "open: %s\n", pmemobj_errormsg()); return 2; }
	PMEMoid root = pmemobj_root(pop, sizeof(struct root));
	struct root *r = pmemobj_direct(root);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 1; i <= n; i++) {
		TX_BEGIN(pop) {
			if (buggy) {
				r->sum += 3 * (uint64_t)i;   /* not added to the transaction */
			} else {
				pmemobj_tx_add_range(root, offsetof(struct root, sum), 8);
				r->sum += 3 * (uint64_t)i;
			}
			pmemobj_tx_add_range(root, offsetof(struct root, x), 8);
			r->x += (uint64_t)i;
			pmemobj_tx_add_range(root, offsetof(struct root, y), 8);
			r->y += 2 * (uint64_t)i;
		} TX_ONABORT {
			fprintf(stderr, "transaction aborted\n");
			return 2;
		} TX_END
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (argc == 6)
		printf("%.9f\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
	pmemobj_close(pop);
	return 0;
}
