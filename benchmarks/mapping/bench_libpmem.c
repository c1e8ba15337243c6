/*
 * The anchor for benchmarks/mapping/bench_mapping.py: the same operations through
 * libpmem (Debian libpmem1), called from C. Run with PMEM_IS_PMEM_FORCE=1 to take
 * libpmem's CPU flush path on an ordinary file.
 *
 * usage: bench_libpmem FILE MIN_SECONDS REPEATS
 * prints one line per measurement: "<op> <bytes> <ops_per_second>"
 * (the best of REPEATS runs, each at least MIN_SECONDS long).
 */
#include <libpmem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

enum op { PERSIST, FLUSH_DRAIN, MEMCPY_PERSIST, MSYNC_DIRTY };
static const char *names[] = {"persist", "flush+drain", "memcpy_persist", "msync_dirty"};

static char *base;
static char *src;

static void run(enum op op, size_t n, long iters)
{
    switch (op) {
    case PERSIST:
        for (long i = 0; i < iters; i++)
            pmem_persist(base, n);
        break;
    case FLUSH_DRAIN:
        for (long i = 0; i < iters; i++) {
            pmem_flush(base, n);
            pmem_drain();
        }
        break;
    case MEMCPY_PERSIST:
        for (long i = 0; i < iters; i++)
            pmem_memcpy_persist(base, src, n);
        break;
    case MSYNC_DIRTY:
        for (long i = 0; i < iters; i++) {
            base[0] = (char)i;
            if (pmem_msync(base, n) != 0) {
                perror("pmem_msync");
                exit(1);
            }
        }
        break;
    }
}

static double measure(enum op op, size_t n, double min_s, int repeats)
{
    long iters = 1;
    for (;;) { /* calibrate */
        double t = now();
        run(op, n, iters);
        double dt = now() - t;
        if (dt >= min_s / 4)
            break;
        iters *= 2;
    }
    double best = 0;
    for (int r = 0; r < repeats; r++) {
        long done = 0;
        double t0 = now(), t;
        do {
            run(op, n, iters);
            done += iters;
            t = now();
        } while (t - t0 < min_s);
        double rate = done / (t - t0);
        if (rate > best)
            best = rate;
    }
    return best;
}

static int op_by_name(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    fprintf(stderr, "unknown operation %s\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 6 || (argc - 4) % 2) {
        fprintf(stderr, "usage: %s FILE MIN_SECONDS REPEATS OP SIZE [OP SIZE...]\n"
                        "  OP: persist, flush+drain, memcpy_persist, msync_dirty\n", argv[0]);
        return 2;
    }
    double min_s = atof(argv[2]);
    int repeats = atoi(argv[3]);
    size_t maplen, size = 4u << 20;
    int is_pmem;
    base = pmem_map_file(argv[1], size, PMEM_FILE_CREATE, 0644, &maplen, &is_pmem);
    if (!base) {
        perror("pmem_map_file");
        return 1;
    }
    memset(base, 1, size); /* fault every page in */
    pmem_persist(base, size);
    src = malloc(1 << 20);
    memset(src, 7, 1 << 20);
    printf("is_pmem %d %d\n", is_pmem, 0);
    for (int i = 4; i + 1 < argc; i += 2) {
        int op = op_by_name(argv[i]);
        size_t n = strtoull(argv[i + 1], NULL, 0);
        if (n == 0 || n > size || (op == MEMCPY_PERSIST && n > (1u << 20))) {
            fprintf(stderr, "bad size %s\n", argv[i + 1]);
            return 2;
        }
        printf("%s %zu %.1f\n", names[op], n, measure((enum op)op, n, min_s, repeats));
        fflush(stdout);
    }
    pmem_unmap(base, maplen);
    return 0;
}
