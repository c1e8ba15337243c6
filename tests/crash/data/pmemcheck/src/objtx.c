/*
 * objtx.c -- libpmemobj transactions keeping an invariant over three fields.
 *
 * The root object is {u64 a, b, sum}; the invariant is a + b == sum. Modes:
 *   create FILE   create the pool (layout "objtx") with a zeroed root
 *   tx FILE N     N transactions, each adds 1 to a and to sum, every field added to the
 *                 undo log with pmemobj_tx_add_range (correct)
 *   bad FILE N    the same, but sum is written without pmemobj_tx_add_range (buggy)
 *   c FILE        check: pmemobj_open (runs recovery), exit 0 when a + b == sum, else 1
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpmemobj.h>

struct root {
	uint64_t a;
	uint64_t b;
	uint64_t sum;
};

int
main(int argc, char *argv[])
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s create|tx|bad|c FILE [N]\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1], *path = argv[2];
	PMEMobjpool *pop;
	if (strcmp(mode, "create") == 0)
		pop = pmemobj_create(path, "objtx", PMEMOBJ_MIN_POOL, 0600);
	else
		pop = pmemobj_open(path, "objtx");
	if (pop == NULL) {
		fprintf(stderr, "%s: %s\n", path, pmemobj_errormsg());
		return 2;
	}
	PMEMoid oid = pmemobj_root(pop, sizeof(struct root));
	struct root *r = pmemobj_direct(oid);
	int status = 0;
	if (strcmp(mode, "c") == 0) {
		if (r->a + r->b != r->sum) {
			fprintf(stderr, "a %lu + b %lu != sum %lu\n", (unsigned long)r->a,
				(unsigned long)r->b, (unsigned long)r->sum);
			status = 1;
		}
	} else if (strcmp(mode, "tx") == 0 || strcmp(mode, "bad") == 0) {
		int n = argc > 3 ? atoi(argv[3]) : 1;
		int buggy = strcmp(mode, "bad") == 0;
		for (int i = 0; i < n; i++) {
			TX_BEGIN(pop) {
				pmemobj_tx_add_range(oid, offsetof(struct root, a), sizeof(uint64_t));
				if (!buggy)
					pmemobj_tx_add_range(oid, offsetof(struct root, sum),
							sizeof(uint64_t));
				r->a += 1;
				r->sum += 1;
			} TX_END
		}
	}
	pmemobj_close(pop);
	return status;
}
