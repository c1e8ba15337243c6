/*
 * libpmemobj: N transactions keeping an invariant over three fields of the root
 * object, x + y == sum (each transaction adds i to x and 2i to y).
 *
 *   obj_tx create FILE            make the pool (not traced)
 *   obj_tx run MODE FILE N [timed] MODE: correct (every field pmemobj_tx_add_range'd)
 *                                       buggy (sum written without being added);
 *                                       timed: print the seconds the N transactions took
 *   obj_tx check FILE             open the pool (recovery runs), exit 0 iff the invariant holds
 *   obj_tx check-pmreorder FILE   the same, exit 1 iff it holds (pmreorder's convention)
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
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
	/* check-pmreorder: pmreorder's convention, exit 1 = consistent, 0 = inconsistent */
	int pmreorder = argc == 3 && strcmp(argv[1], "check-pmreorder") == 0;
	if (pmreorder || (argc == 3 && strcmp(argv[1], "check") == 0)) {
		PMEMobjpool *pop = pmemobj_open(argv[2], LAYOUT);
		if (!pop) { printf("cannot open: %s\n", pmemobj_errormsg()); return !pmreorder; }
		struct root *r = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
		int ok = r->x + r->y == r->sum;
		if (!ok)
			printf("x %lu + y %lu != sum %lu\n", (unsigned long)r->x, (unsigned long)r->y,
			       (unsigned long)r->sum);
		pmemobj_close(pop);
		return pmreorder ? ok : !ok;
	}
	if (argc < 5 || argc > 6 || strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "usage: %s create FILE [SIZE] | run correct|buggy FILE N [timed] | "
			"check FILE | check-pmreorder FILE\n", argv[0]);
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
