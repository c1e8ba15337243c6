/*
 * A libpmem program with pmreorder-style marker sections (pmemkit_mark, found with dlsym).
 *
 * The pool holds two counters a and b; the invariant a checker tests is a == b. The SETUP
 * section persists a before b, so a crash inside it leaves a != b: deliberately inconsistent,
 * as PMDK's pmreorder_simple does in its setup. After SETUP the program only persists a third
 * field, so every crash image after SETUP.END keeps the invariant.
 *
 * usage: sections MODE POOL   (MODE: setup = the above; crossed = SETUP and WORK sections that
 * cross, which pmreorder refuses; memset = the setup is one pmem_memset_persist of a and b,
 * unmarked: with PMREORDER_EMIT_LOG=1 it is the section pmem_memset_persist, as in pmemcheck)
 */
#include <dlfcn.h>
#include <libpmem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL 4096

static void mark(const char *name)
{
	void (*m)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "pmemkit_mark");
	if (m)
		m(name);
}

static void set(uint64_t *field, uint64_t value)
{
	*field = value;
	pmem_persist(field, sizeof(*field));
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s setup|crossed|memset POOL\n", argv[0]);
		return 2;
	}
	int crossed = strcmp(argv[1], "crossed") == 0;
	size_t len;
	int is_pmem;
	uint64_t *p = pmem_map_file(argv[2], POOL, PMEM_FILE_CREATE, 0644, &len, &is_pmem);
	if (!p) {
		perror("pmem_map_file");
		return 2;
	}
	if (strcmp(argv[1], "memset") == 0) {
		/* a crash inside it may leave a != b (x86: independent 8-byte units) */
		pmem_memset_persist(p, 1, 2 * sizeof(*p));
		mark("WORK.BEGIN");
		set(&p[2], 42);
		mark("WORK.END");
		pmem_unmap(p, len);
		return 0;
	}
	mark("SETUP.BEGIN");
	set(&p[0], 1);          /* a crash here: a == 1, b == 0 */
	set(&p[1], 1);
	if (crossed)
		mark("WORK.BEGIN");
	mark("SETUP.END");
	if (!crossed)
		mark("WORK.BEGIN");
	set(&p[2], 42);
	mark("WORK.END");
	pmem_unmap(p, len);
	return 0;
}
