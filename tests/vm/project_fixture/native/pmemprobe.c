/* On DIR: map DIR/probe.map with pmem_map_file and print pmem_is_pmem(); create a libpmemobj
 * pool DIR/probe.pool, write a string transactionally, reopen it and read it back.
 * Exits 1 unless the mapping is pmem and the string survives. */
#include <libpmem.h>
#include <libpmemobj.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAYOUT "pmemprobe"

struct root {
	char text[64];
};

int main(int argc, char *argv[])
{
	char path[4096];
	size_t len;
	int is_pmem;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	snprintf(path, sizeof(path), "%s/probe.map", argv[1]);
	void *addr = pmem_map_file(path, 1 << 20, PMEM_FILE_CREATE, 0644, &len, &is_pmem);
	if (addr == NULL) {
		perror("pmem_map_file");
		return 1;
	}
	printf("%s: pmem_is_pmem=%d mapped_is_pmem=%d\n", argv[1], pmem_is_pmem(addr, len), is_pmem);
	int ok = pmem_is_pmem(addr, len) == 1;
	pmem_unmap(addr, len);

	snprintf(path, sizeof(path), "%s/probe.pool", argv[1]);
	PMEMobjpool *pop = pmemobj_create(path, LAYOUT, PMEMOBJ_MIN_POOL, 0644);
	if (pop == NULL) {
		fprintf(stderr, "pmemobj_create: %s\n", pmemobj_errormsg());
		return 1;
	}
	PMEMoid root = pmemobj_root(pop, sizeof(struct root));
	struct root *r = pmemobj_direct(root);
	TX_BEGIN(pop) {
		pmemobj_tx_add_range(root, 0, sizeof(struct root));
		strcpy(r->text, "persisted by libpmemobj");
	} TX_END
	pmemobj_close(pop);

	pop = pmemobj_open(path, LAYOUT);
	if (pop == NULL) {
		fprintf(stderr, "pmemobj_open: %s\n", pmemobj_errormsg());
		return 1;
	}
	r = pmemobj_direct(pmemobj_root(pop, sizeof(struct root)));
	printf("%s: pool text=%s\n", argv[1], r->text);
	ok = ok && strcmp(r->text, "persisted by libpmemobj") == 0;
	pmemobj_close(pop);
	return ok ? 0 : 1;
}
