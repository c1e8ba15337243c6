/*
 * Processes and threads under the interposer. A 16 KiB file, mapped shared.
 *
 *   procs fork-child-writes FILE   a forked child stores to the pool (must be refused)
 *   procs killed FILE              persists, stores more, then is killed by SIGKILL
 *   procs threads FILE             two threads, each persisting its own counter 100 times
 *   procs cross-thread-fence FILE  a thread stores and flushes, the main thread fences
 *   procs read-into-pool FILE      read(2) and readv(2) from a file straight into the pool
 *   procs msync-async FILE         a store "persisted" with msync(MS_ASYNC) only
 *   procs stress FILE              four threads store to pseudo-random places of the pool's
 *                                  pages, flush some, fence some, go quiet now and then
 *   procs own-segv-handler FILE    installs a SIGSEGV handler after mapping, persists, then
 *                                  dereferences NULL and recovers in its handler (siglongjmp)
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libpmem.h>

#define POOL 16384

static char *base;
static sigjmp_buf env;

static void *flusher(void *arg)
{
	strcpy(base + 4096, "flushed by a thread");
	pmem_flush(base + 4096, 64);
	return NULL;
}

static void *stress(void *arg)
{
	uint64_t x = 0x9E3779B97F4A7C15ull * ((uintptr_t)arg + 1);
	for (int i = 0; i < 3000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* thread t owns the 8-byte slots t, t+4, t+8... so threads never share a unit */
		size_t slot = (x % (POOL / 32)) * 4 + (uintptr_t)arg;
		uint64_t *p = (uint64_t *)base + slot;
		*p = x;
		switch ((x >> 32) % 8) {
		case 0: pmem_flush(p, 8); break;
		case 1: pmem_persist(p, 8); break;
		case 2: pmem_drain(); break;
		case 3: if (i % 500 < 50) usleep(10); break;   /* quiet spells retire hot pages */
		default: break;
		}
	}
	return NULL;
}

static void on_segv(int sig)
{
	siglongjmp(env, 1);
}

static void *worker(void *arg)
{
	uint64_t *c = (uint64_t *)(base + 4096 * (uintptr_t)arg);
	for (int i = 0; i < 100; i++) {
		*c += 1;
		pmem_persist(c, 8);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	int fd = open(argv[2], O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, POOL) != 0)
		return 2;
	base = mmap(NULL, POOL, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED)
		return 2;
	strcpy(base, "parent");
	pmem_persist(base, 64);
	if (strcmp(argv[1], "fork-child-writes") == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			strcpy(base + 64, "child");
			msync(base, 4096, MS_SYNC);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
	} else if (strcmp(argv[1], "killed") == 0) {
		strcpy(base + 128, "never seen");
		kill(getpid(), SIGKILL);
	} else if (strcmp(argv[1], "read-into-pool") == 0) {
		int src = open("/proc/self/exe", O_RDONLY);
		struct iovec iov = { base + 8192, 8 };
		if (read(src, base + 4096, 8) != 8 || readv(src, &iov, 1) != 8)
			return 3;   /* EFAULT: the kernel hit a write-protected page */
		pmem_persist(base + 4096, 4196);
	} else if (strcmp(argv[1], "msync-async") == 0) {
		strcpy(base + 4096, "async");
		msync(base + 4096, 4096, MS_ASYNC);
	} else if (strcmp(argv[1], "stress") == 0) {
		pthread_t t[4];
		for (uintptr_t i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, stress, (void *)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
	} else if (strcmp(argv[1], "cross-thread-fence") == 0) {
		pthread_t t;
		pthread_create(&t, NULL, flusher, NULL);
		pthread_join(t, NULL);
		pmem_drain();
	} else if (strcmp(argv[1], "own-segv-handler") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_segv;
		sigaction(SIGSEGV, &sa, NULL);
		strcpy(base + 4096, "after the handler");
		pmem_persist(base + 4096, 64);
		if (sigsetjmp(env, 1) == 0)
			*(volatile int *)NULL = 1;
		strcpy(base + 8192, "recovered");
		pmem_persist(base + 8192, 64);
	} else if (strcmp(argv[1], "threads") == 0) {
		pthread_t t[2];
		for (uintptr_t i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, worker, (void *)(i + 1));
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
	}
	return 0;
}
