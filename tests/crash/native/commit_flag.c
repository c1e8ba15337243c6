/*
 * A commit-flag program: a 64-byte payload at offset 0, a 64-bit flag at offset
 * 4096 (a different page and cache line). Consistent: flag == 1 implies the payload
 * is complete; once the program records "committed", the flag must be 1.
 *
 *   commit_flag BACKEND MODE FILE
 *   BACKEND: pmem (libpmem), pmem2 (libpmem2 getters), msync (plain mmap + msync)
 *   MODE: correct, correct-memcpy, flag-first, payload-unflushed, flush-no-drain,
 *         unpersisted-unmap, unpersisted-return, unpersisted-exit
 *
 * It finds pmemkit_mark and pmemkit_record with dlsym, so it runs without pmemkit too. -DNO_LIBPMEM and
 * -DNO_PMEM2 leave the libraries out (the msync backend only).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef NO_LIBPMEM
#include <libpmem.h>
#endif
#ifndef NO_PMEM2
#include <libpmem2.h>
#endif

#define POOL 16384
#define PAYLOAD 64
#define FLAG 4096

static void (*persist)(const void *, size_t);
static void (*flush)(const void *, size_t);
static void (*drain)(void);
static void *(*memcpy_persist)(void *, const void *, size_t);

static int msync_fd;
static char *base;

static void ms_persist(const void *p, size_t n)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
	msync((void *)a, (uintptr_t)p + n - a, MS_SYNC);
}

static void ms_drain(void) { }

static void *ms_memcpy_persist(void *d, const void *s, size_t n)
{
	memcpy(d, s, n);
	ms_persist(d, n);
	return d;
}

#ifndef NO_LIBPMEM
static void *pm_memcpy_persist(void *d, const void *s, size_t n) { return pmem_memcpy_persist(d, s, n); }
#endif

#ifndef NO_PMEM2
static pmem2_memcpy_fn p2_memcpy;
static void *p2_memcpy_persist(void *d, const void *s, size_t n) { return p2_memcpy(d, s, n, 0); }
#endif

static void mark(const char *name)
{
	void (*m)(const char *) = (void (*)(const char *))dlsym(RTLD_DEFAULT, "pmemkit_mark");
	if (m)
		m(name);
}

static void record(const char *k, const char *v)
{
	void (*rec)(const char *, const char *) =
		(void (*)(const char *, const char *))dlsym(RTLD_DEFAULT, "pmemkit_record");
	if (rec)
		rec(k, v);
}

static void open_pool(const char *backend, const char *path)
{
#ifndef NO_LIBPMEM
	if (strcmp(backend, "pmem") == 0) {
		size_t len;
		int is_pmem;
		base = pmem_map_file(path, POOL, PMEM_FILE_CREATE, 0644, &len, &is_pmem);
		if (!base) { perror("pmem_map_file"); exit(2); }
		persist = pmem_persist;
		flush = pmem_flush;
		drain = pmem_drain;
		memcpy_persist = pm_memcpy_persist;
		return;
	}
#endif
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, POOL) != 0) { perror(path); exit(2); }
	if (strcmp(backend, "msync") == 0) {
		base = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (base == MAP_FAILED) { perror("mmap"); exit(2); }
		msync_fd = fd;
		persist = ms_persist;
		flush = ms_persist;   /* msync flushes and waits */
		drain = ms_drain;
		memcpy_persist = ms_memcpy_persist;
		return;
	}
#ifndef NO_PMEM2
	if (strcmp(backend, "pmem2") == 0) {
		struct pmem2_config *cfg;
		struct pmem2_source *src;
		struct pmem2_map *map;
		if (pmem2_config_new(&cfg) || pmem2_source_from_fd(&src, fd) ||
		    pmem2_config_set_required_store_granularity(cfg, PMEM2_GRANULARITY_PAGE) ||
		    pmem2_map_new(&map, cfg, src)) {
			pmem2_perror("pmem2");
			exit(2);
		}
		base = pmem2_map_get_address(map);
		persist = pmem2_get_persist_fn(map);
		flush = pmem2_get_flush_fn(map);
		drain = pmem2_get_drain_fn(map);
		p2_memcpy = pmem2_get_memcpy_fn(map);
		memcpy_persist = p2_memcpy_persist;
		return;
	}
#endif
	fprintf(stderr, "unknown backend %s\n", backend);
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s BACKEND MODE FILE\n", argv[0]);
		return 2;
	}
	const char *mode = argv[2];
	open_pool(argv[1], argv[3]);
	char payload[PAYLOAD];
	for (int i = 0; i < PAYLOAD; i++)
		payload[i] = (char)(i * 7 + 1);
	volatile uint64_t *flag = (uint64_t *)(base + FLAG);

	if (strcmp(mode, "correct") == 0) {
		memcpy(base, payload, PAYLOAD);
		persist(base, PAYLOAD);
		*flag = 1;
		persist((void *)flag, 8);
	} else if (strcmp(mode, "correct-memcpy") == 0) {
		memcpy_persist(base, payload, PAYLOAD);
		*flag = 1;
		persist((void *)flag, 8);
	} else if (strcmp(mode, "flag-first") == 0) {
		mark("flag");
		*flag = 1;
		persist((void *)flag, 8);
		mark("payload");
		memcpy(base, payload, PAYLOAD);
		persist(base, PAYLOAD);
	} else if (strcmp(mode, "payload-unflushed") == 0) {
		memcpy(base, payload, PAYLOAD);
		*flag = 1;
		persist((void *)flag, 8);
	} else if (strcmp(mode, "flush-no-drain") == 0) {
		memcpy(base, payload, PAYLOAD);
		flush(base, PAYLOAD);
		*flag = 1;
		flush((void *)flag, 8);
		drain();
	} else if (strncmp(mode, "unpersisted-", 12) == 0) {
		memcpy_persist(base, payload, PAYLOAD);
		*flag = 1;   /* never persisted */
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	record("committed", "1");
	if (strcmp(mode, "unpersisted-unmap") == 0) {
#ifndef NO_LIBPMEM
		if (strcmp(argv[1], "pmem") == 0)
			pmem_unmap(base, POOL);
		else
#endif
			munmap(base, POOL);
	} else if (strcmp(mode, "unpersisted-exit") == 0) {
		_exit(0);
	}
	return 0;
}
