/*
 * objreorder.c -- PMDK's obj_reorder_basic test program (src/test/obj_reorder_basic) on a
 * libpmemobj pool of any size, without PMDK's unittest framework, plus a persistent checker.
 *
 * The root object is {size_t len; char buf[10]}. Modes:
 *   w FILE    write len (persisted), then buf (pmemobj_memcpy_persist) inside the
 *             PMREORDER_MARKER_WRITE section (the pool was made by
 *             `pmempool create --layout intro_1 obj FILE -s SIZE`)
 *   c FILE    check: pmemobj_open with copy_on_write.at_open (recovery on a private copy);
 *             exit 1 when len == strlen(buf) != 0 but buf is not all 'a', else 0
 *   serve     the same check for every path read from stdin, one line per path, answering
 *             "0" or "1 ..." on stdout (pmemkit's persistent-checker line protocol)
 */
#include <stdio.h>
#include <string.h>
#include <libpmemobj.h>
#if __has_include(<valgrind/pmemcheck.h>)
#include <valgrind/pmemcheck.h>
#else
#define VALGRIND_PMC_EMIT_LOG(name) ((void)(name))
#endif

#define LAYOUT_NAME "intro_1"
#define MAX_BUF_LEN 10
#define BUF_VALUE 'a'

struct my_root {
	size_t len;
	char buf[MAX_BUF_LEN];
};

static void
write_consistent(PMEMobjpool *pop)
{
	PMEMoid root = pmemobj_root(pop, sizeof(struct my_root));
	struct my_root *rootp = pmemobj_direct(root);
	char buf[MAX_BUF_LEN];
	memset(buf, BUF_VALUE, sizeof(buf));
	buf[MAX_BUF_LEN - 1] = '\0';
	rootp->len = strlen(buf);
	pmemobj_persist(pop, &rootp->len, sizeof(rootp->len));
	pmemobj_memcpy_persist(pop, rootp->buf, buf, rootp->len);
}

/* 0 consistent, 1 inconsistent, 2 the pool does not open */
static int
check_file(const char *path)
{
	PMEMobjpool *pop = pmemobj_open(path, LAYOUT_NAME);
	if (pop == NULL) {
		fprintf(stderr, "%s: %s\n", path, pmemobj_errormsg());
		return 2;
	}
	PMEMoid root = pmemobj_root(pop, sizeof(struct my_root));
	struct my_root *rootp = pmemobj_direct(root);
	int ret = 0;
	if (rootp->len == strlen(rootp->buf) && rootp->len != 0)
		for (int i = 0; i < MAX_BUF_LEN - 1; ++i)
			if (rootp->buf[i] != BUF_VALUE)
				ret = 1;
	pmemobj_close(pop);
	return ret;
}

int
main(int argc, char *argv[])
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (strcmp(mode, "c") == 0 || strcmp(mode, "serve") == 0) {
		int y = 1;
		pmemobj_ctl_set(NULL, "copy_on_write.at_open", &y);
	}
	if (strcmp(mode, "serve") == 0 && argc == 2) {
		char line[4096];
		while (fgets(line, sizeof(line), stdin)) {
			line[strcspn(line, "\t\n")] = 0;
			int ret = check_file(line);
			puts(ret == 0 ? "0" : ret == 1 ? "1 len matches buf but buf is not all 'a'"
				: "2 pmemobj_open failed");
			fflush(stdout);
		}
		return 0;
	}
	if (strcmp(mode, "c") == 0 && argc == 3)
		return check_file(argv[2]);
	if (strcmp(mode, "w") != 0 || argc != 3) {
		fprintf(stderr, "usage: %s w|c FILE, or %s serve\n", argv[0], argv[0]);
		return 2;
	}
	PMEMobjpool *pop = pmemobj_open(argv[2], LAYOUT_NAME);
	if (pop == NULL) {
		fprintf(stderr, "%s: %s\n", argv[2], pmemobj_errormsg());
		return 2;
	}
	VALGRIND_PMC_EMIT_LOG("PMREORDER_MARKER_WRITE.BEGIN");
	write_consistent(pop);
	VALGRIND_PMC_EMIT_LOG("PMREORDER_MARKER_WRITE.END");
	pmemobj_close(pop);
	return 0;
}
