/*
 * The anchor for benchmarks/mapping/bench_mapping.py: the same operations through
 * libpmem (Debian libpmem1), called from C. bench_mapping.py compiles this file into
 * a shared library and calls it through ctypes, one timed batch at a time, so that
 * pmemkit and libpmem are measured alternately in the same process. Set
 * PMEM_IS_PMEM_FORCE=1 before loading it (libpmem's CPU flush path on an ordinary file).
 *
 *   int    bl_open(const char *path, size_t size);       map (and create) the file
 *   double bl_run(int op, size_t n, long iterations, int cpu_clock);
 *                                                        seconds taken by `iterations` ops, on
 *                                                        the thread's CPU-time clock if cpu_clock
 *   void   bl_close(void);
 *
 * op: 0 persist, 1 flush+drain, 2 memcpy_persist, 3 store one byte then pmem_msync.
 */
#include <libpmem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *base, *src;
static size_t mapped, src_len = 1u << 20;

static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(clock_id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int bl_open(const char *path, size_t size)
{
    int is_pmem;
    base = pmem_map_file(path, size, PMEM_FILE_CREATE, 0644, &mapped, &is_pmem);
    if (!base)
        return -1;
    memset(base, 1, mapped); /* fault every page in */
    pmem_persist(base, mapped);
    src = malloc(src_len);
    if (!src)
        return -1;
    memset(src, 7, src_len);
    return is_pmem;
}

double bl_run(int op, size_t n, long iters, int cpu_clock)
{
    clock_id = cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    if (!base || n > mapped || (op == 2 && n > src_len))
        return -1.0;
    double t = now();
    switch (op) {
    case 0:
        for (long i = 0; i < iters; i++)
            pmem_persist(base, n);
        break;
    case 1:
        for (long i = 0; i < iters; i++) {
            pmem_flush(base, n);
            pmem_drain();
        }
        break;
    case 2:
        for (long i = 0; i < iters; i++)
            pmem_memcpy_persist(base, src, n);
        break;
    case 3:
        for (long i = 0; i < iters; i++) {
            base[100] = (char)i;
            if (pmem_msync(base + 100, 1) != 0)
                return -1.0;
        }
        break;
    default:
        return -1.0;
    }
    return now() - t;
}

void bl_close(void)
{
    if (base)
        pmem_unmap(base, mapped);
    free(src);
    base = src = NULL;
}
