/*
 * blkdriver.c - the libpmemblk side of benchmarks/btt/bench_btt.py.
 *
 * usage: blkdriver POOL BSIZE NOPS SEED SLICES BATCH
 * Opens an existing pool, writes every LBA in [0, n) once (n = min(nblock, 4096)),
 * then times NOPS rewrites and NOPS reads of random LBAs from that set in SLICES
 * equal slices and prints the best slice's "write_per_s read_per_s batch_read_per_s"
 * on one line (the best slice is the one least disturbed by other load on a shared
 * machine). The reads go into one reused block buffer; the batch reads are the
 * counterpart of pmemkit's read_many: batches of BATCH distinct LBAs (random
 * permutations of the working set), each block read into its own slot of a reused
 * BATCH-block buffer. Times are the thread's CPU time, as on the Python side.
 */
#include <libpmemblk.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s POOL BSIZE NOPS SEED SLICES BATCH\n", argv[0]);
		return 2;
	}
	size_t bsize = strtoull(argv[2], NULL, 10);
	long nops = strtol(argv[3], NULL, 10);
	srand((unsigned)strtoul(argv[4], NULL, 10));
	long slices = strtol(argv[5], NULL, 10);
	if (slices < 1 || slices > nops)
		slices = 1;
	long per = nops / slices;
	long k = strtol(argv[6], NULL, 10);
	if (k < 1)
		k = 1;
	PMEMblkpool *pbp = pmemblk_open(argv[1], bsize);
	if (!pbp) {
		fprintf(stderr, "pmemblk_open: %s\n", pmemblk_errormsg());
		return 1;
	}
	long n = (long)pmemblk_nblock(pbp);
	if (n > 4096)
		n = 4096;
	char *buf = malloc(bsize);
	memset(buf, 0x5a, bsize);
	long *lbas = malloc(sizeof(long) * nops);
	for (long i = 0; i < nops; i++)
		lbas[i] = rand() % n;
	for (long i = 0; i < n; i++)
		if (pmemblk_write(pbp, buf, i)) {
			perror("pmemblk_write");
			return 1;
		}
	double best_w = 0, best_r = 0;
	for (long s = 0; s < slices; s++) {
		double t0 = now();
		for (long i = s * per; i < (s + 1) * per; i++) {
			buf[0] = (char)i;
			if (pmemblk_write(pbp, buf, lbas[i])) {
				perror("pmemblk_write");
				return 1;
			}
		}
		double rate = per / (now() - t0);
		if (rate > best_w)
			best_w = rate;
	}
	for (long s = 0; s < slices; s++) {
		double t0 = now();
		for (long i = s * per; i < (s + 1) * per; i++)
			if (pmemblk_read(pbp, buf, lbas[i])) {
				perror("pmemblk_read");
				return 1;
			}
		double rate = per / (now() - t0);
		if (rate > best_r)
			best_r = rate;
	}
	/* batches of k distinct LBAs: permutations of [0, n - n % k), as many as NOPS needs */
	if (k > n)
		k = n;
	long usable = n - n % k, m = per / k * k;
	if (m < k)
		m = k;
	long nperm = (slices * m) / usable + 2;
	long *perm = malloc(sizeof(long) * nperm * usable);
	long *p = malloc(sizeof(long) * n);
	for (long r = 0; r < nperm; r++) {
		for (long i = 0; i < n; i++)
			p[i] = i;
		for (long i = n - 1; i > 0; i--) {
			long j = rand() % (i + 1), t = p[i];
			p[i] = p[j];
			p[j] = t;
		}
		memcpy(perm + r * usable, p, sizeof(long) * usable);
	}
	char *bbuf = malloc(bsize * k);
	memset(bbuf, 0, bsize * k);
	double best_b = 0;
	for (long s = 0; s < slices; s++) {
		long *part = perm + s * m;
		double t0 = now();
		for (long j = 0; j < m; j += k)
			for (long i = 0; i < k; i++)
				if (pmemblk_read(pbp, bbuf + i * bsize, part[j + i])) {
					perror("pmemblk_read");
					return 1;
				}
		double rate = m / (now() - t0);
		if (rate > best_b)
			best_b = rate;
	}
	printf("%.1f %.1f %.1f\n", best_w, best_r, best_b);
	pmemblk_close(pbp);
	return 0;
}
