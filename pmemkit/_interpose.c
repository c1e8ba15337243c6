/*
 * pmemkit's LD_PRELOAD interposer: records the stores, flushes and fences of an
 * unmodified program into a compact binary trace (read by pmemkit.crash.native).
 *
 * What it sees:
 *   - shared writable file mappings made with mmap/mremap (libpmem, libpmem2 and
 *     libpmemobj all map pools through libc's mmap), removed at munmap;
 *   - libpmem's pmem_* persistence functions (flush, drain, persist, msync,
 *     memcpy/memmove/memset with their _persist/_nodrain variants and flags),
 *     libpmem2's function-pointer getters (the returned pointers are wrapped),
 *     msync, exit/_exit/_Exit, libpmemobj's transaction calls (as markers);
 *   - pmemkit_mark(name) and pmemkit_record(key, value), which programs find with
 *     dlsym(RTLD_DEFAULT, ...) so they still run without pmemkit.
 *
 * How stores are found: every traced page is write-protected; the SIGSEGV handler
 * marks the page dirty and makes it writable again. A flush diffs its dirty lines
 * against a shadow copy of the file (stores precede their flush); a fence
 * re-protects and diffs every dirty page (never-flushed stores stay pending).
 * The order of the stores found by one diff is unknown (they are written in
 * address order), and a value overwritten before the next diff is never seen.
 *
 * The trace is written with write(2) before each interposed call returns, so it
 * survives kill and _exit. Real functions come from dlsym(RTLD_NEXT): no link
 * dependency on PMDK. The names below (environment variables, record types) are
 * pinned equal to pmemkit/defaults.py and pmemkit/crash/native.py by the tests.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define TRACE_ENV "PMEMKIT_TRACE"
#define OWNER_ENV "PMEMKIT_TRACE_PID"
/* as in PMDK: "1" makes libpmem's copy and set functions markers NAME.BEGIN/NAME.END */
#define EMIT_LOG_ENV "PMREORDER_EMIT_LOG"

#define LINE 64u
#define MAX_MAPS 256
#define MAX_FILES 64
#define PATH_LEN 1024
#define BUF_SIZE (1u << 20)
#define TRACE_VERSION 1
#define HOT_IDLE_FENCES 8

enum {
	T_HELLO = 1, T_FILE = 2, T_INIT = 3, T_STORE = 4, T_FLUSH = 5, T_FENCE = 6,
	T_MARK = 7, T_RECORD = 8, T_END = 9, T_ERROR = 10, T_WARN = 11,
};

/* how the process ended (T_END's offset field) */
enum { END_EXIT = 0, END__EXIT = 1 };

struct rec {
	uint16_t type;
	uint16_t fid;
	uint32_t tid;
	uint64_t off;
	uint64_t n;
};

struct file {
	dev_t dev;
	ino_t ino;
	uint64_t size;     /* bytes covered by the shadow (file size, page-rounded) */
	uint8_t *shadow;   /* the file as last diffed, indexed by file offset */
};

struct map {
	_Atomic int active;
	uintptr_t start, end;
	int prot;                  /* the program's protection of the mapping */
	int fid;
	uint64_t foff;             /* file offset of start */
	size_t npages;
	_Atomic unsigned char *dirty;   /* one byte per page */
	_Atomic uint32_t *list;         /* dirty page indices + 1, in fault order */
	size_t cap;
	_Atomic size_t nlist;
	_Atomic int overflow;           /* the list overflowed: scan dirty[] */
	uint32_t *hot;                  /* writable pages diffed at every sweep (under g_lock) */
	size_t nhot;
	unsigned char *hot_flag, *idle; /* per page: in hot[], fences since it last changed */
};

static struct map g_maps[MAX_MAPS];
static _Atomic int g_nmaps;
static struct file g_files[MAX_FILES];
static int g_nfiles;

static int g_fd = -1;              /* the trace */
static _Atomic int g_active;       /* this process records */
static _Atomic int g_child;        /* a fork child of the traced process */
static _Atomic int g_child_warned;
static int g_finished;
static int g_exit_status;
static size_t g_page = 4096;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_buf[BUF_SIZE];
static size_t g_buflen;
static int g_must_write;        /* write the buffer out before the interposed call returns */
static struct sigaction g_old_segv;
static int g_handler_installed;

static __thread int t_depth;       /* >0: inside an interposed call, pass through */
static __thread uint32_t t_tid;

/* --- real functions ------------------------------------------------------------ */

#define REAL(name) real_##name
#define DECLARE_REAL(ret, name, ...) \
	typedef ret (*name##_t)(__VA_ARGS__); \
	static name##_t real_##name
#define RESOLVE(name) \
	do { if (!real_##name) real_##name = (name##_t)dlsym(RTLD_NEXT, #name); } while (0)

DECLARE_REAL(void *, mmap, void *, size_t, int, int, int, off_t);
DECLARE_REAL(void *, mmap64, void *, size_t, int, int, int, off_t);
DECLARE_REAL(int, munmap, void *, size_t);
DECLARE_REAL(void *, mremap, void *, size_t, size_t, int, ...);
DECLARE_REAL(int, msync, void *, size_t, int);
DECLARE_REAL(int, mprotect, void *, size_t, int);
DECLARE_REAL(ssize_t, read, int, void *, size_t);
DECLARE_REAL(ssize_t, pread, int, void *, size_t, off_t);
DECLARE_REAL(ssize_t, pread64, int, void *, size_t, off_t);
DECLARE_REAL(ssize_t, readv, int, const struct iovec *, int);
DECLARE_REAL(ssize_t, preadv, int, const struct iovec *, int, off_t);
DECLARE_REAL(int, sigaction, int, const struct sigaction *, struct sigaction *);
DECLARE_REAL(sighandler_t, signal, int, sighandler_t);
DECLARE_REAL(void, exit, int);
DECLARE_REAL(void, _exit, int);
DECLARE_REAL(void, _Exit, int);
DECLARE_REAL(void, pmem_flush, const void *, size_t);
DECLARE_REAL(void, pmem_deep_flush, const void *, size_t);
DECLARE_REAL(void, pmem_drain, void);
DECLARE_REAL(int, pmem_deep_drain, const void *, size_t);
DECLARE_REAL(void, pmem_persist, const void *, size_t);
DECLARE_REAL(int, pmem_deep_persist, const void *, size_t);
DECLARE_REAL(int, pmem_msync, const void *, size_t);
DECLARE_REAL(void *, pmem_memmove_persist, void *, const void *, size_t);
DECLARE_REAL(void *, pmem_memcpy_persist, void *, const void *, size_t);
DECLARE_REAL(void *, pmem_memset_persist, void *, int, size_t);
DECLARE_REAL(void *, pmem_memmove_nodrain, void *, const void *, size_t);
DECLARE_REAL(void *, pmem_memcpy_nodrain, void *, const void *, size_t);
DECLARE_REAL(void *, pmem_memset_nodrain, void *, int, size_t);
DECLARE_REAL(void *, pmem_memmove, void *, const void *, size_t, unsigned);
DECLARE_REAL(void *, pmem_memcpy, void *, const void *, size_t, unsigned);
DECLARE_REAL(void *, pmem_memset, void *, int, size_t, unsigned);

typedef void (*p2_persist_t)(const void *, size_t);
typedef void (*p2_drain_t)(void);
typedef void *(*p2_memmove_t)(void *, const void *, size_t, unsigned);
typedef void *(*p2_memset_t)(void *, int, size_t, unsigned);
DECLARE_REAL(p2_persist_t, pmem2_get_persist_fn, void *);
DECLARE_REAL(p2_persist_t, pmem2_get_flush_fn, void *);
DECLARE_REAL(p2_drain_t, pmem2_get_drain_fn, void *);
DECLARE_REAL(p2_memmove_t, pmem2_get_memmove_fn, void *);
DECLARE_REAL(p2_memmove_t, pmem2_get_memcpy_fn, void *);
DECLARE_REAL(p2_memset_t, pmem2_get_memset_fn, void *);
static _Atomic(p2_persist_t) p2_persist, p2_flush;
static _Atomic(p2_drain_t) p2_drain;
static _Atomic(p2_memmove_t) p2_memmove, p2_memcpy;
static _Atomic(p2_memset_t) p2_memset;

DECLARE_REAL(int, pmemobj_tx_begin, void *, jmp_buf, ...);
DECLARE_REAL(void, pmemobj_tx_commit, void);
DECLARE_REAL(int, pmemobj_tx_end, void);
DECLARE_REAL(void, pmemobj_tx_abort, int);

/* pmem_mem* flags (libpmem.h and libpmem2.h agree) */
#define F_NODRAIN (1u << 0)
#define F_NOFLUSH (1u << 5)

static long raw_mprotect(uintptr_t addr, size_t len, int prot)
{
	return syscall(SYS_mprotect, (void *)addr, len, prot);
}

static uint32_t tid(void)
{
	if (!t_tid)
		t_tid = (uint32_t)syscall(SYS_gettid);
	return t_tid;
}

/* --- output ---------------------------------------------------------------------- */

static void write_all(const void *p, size_t n)
{
	const char *c = p;
	while (n > 0 && g_fd >= 0) {
		ssize_t w = write(g_fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			g_fd = -1;   /* the reader went away: stop tracing, keep running */
			atomic_store(&g_active, 0);
			return;
		}
		c += w;
		n -= (size_t)w;
	}
}

static void out_flush(void)
{
	write_all(g_buf, g_buflen);
	g_buflen = 0;
}

static size_t pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* append one record (caller holds g_lock) */
static void emit(uint16_t type, int fid, uint64_t off, uint64_t n, const void *payload, size_t plen)
{
	struct rec r = { type, (uint16_t)fid, tid(), off, n };
	size_t need = sizeof(r) + pad8(plen);
	if (g_buflen + need > BUF_SIZE)
		out_flush();
	if (need > BUF_SIZE) {
		static const char zeros[8];
		struct iovec iov[3] = { { &r, sizeof(r) }, { (void *)payload, plen },
					{ (void *)zeros, pad8(plen) - plen } };
		size_t total = need;
		while (total > 0 && g_fd >= 0) {
			ssize_t w = writev(g_fd, iov, 3);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0 || (size_t)w != total) {   /* partial: finish with write_all */
				if (w < 0) { g_fd = -1; atomic_store(&g_active, 0); return; }
				size_t done = (size_t)w;
				for (int i = 0; i < 3; i++) {
					if (done >= iov[i].iov_len) { done -= iov[i].iov_len; continue; }
					write_all((char *)iov[i].iov_base + done, iov[i].iov_len - done);
					done = 0;
				}
			}
			total = 0;
		}
		return;
	}
	memcpy(g_buf + g_buflen, &r, sizeof(r));
	g_buflen += sizeof(r);
	if (plen) {
		memcpy(g_buf + g_buflen, payload, plen);
		memset(g_buf + g_buflen + plen, 0, pad8(plen) - plen);
		g_buflen += pad8(plen);
	}
}

static void emit_str(uint16_t type, const char *s)
{
	size_t n = strlen(s);
	emit(type, 0, 0, n, s, n);
}

static void emit_now(uint16_t type, const char *s)
{
	emit_str(type, s);
	out_flush();
}

/* --- mappings ----------------------------------------------------------------- */

static struct map *find_map(uintptr_t a)
{
	int n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++) {
		struct map *m = &g_maps[i];
		if (atomic_load(&m->active) && a >= m->start && a < m->end)
			return m;
	}
	return NULL;
}

static void mark_dirty(struct map *m, size_t page)
{
	if (atomic_exchange(&m->dirty[page], 1))
		return;
	size_t i = atomic_fetch_add(&m->nlist, 1);
	if (i < m->cap)
		atomic_store(&m->list[i], (uint32_t)page + 1);
	else
		atomic_store(&m->overflow, 1);
}

static void segv_handler(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr;
	struct map *m = find_map(a);
	if (m && (m->prot & PROT_WRITE)) {
		size_t page = (a - m->start) / g_page;
		if (atomic_load(&g_child) && !atomic_exchange(&g_child_warned, 1) && g_fd >= 0) {
			static const char msg[] = "a forked child process wrote to the traced pool; "
				"pmemkit traces the launched process only";
			struct { struct rec r; char s[sizeof(msg) + 8]; } e;
			memset(&e, 0, sizeof(e));
			e.r.type = T_ERROR;
			e.r.tid = (uint32_t)syscall(SYS_gettid);
			e.r.n = sizeof(msg) - 1;
			memcpy(e.s, msg, sizeof(msg) - 1);
			ssize_t w = write(g_fd, &e, sizeof(e.r) + pad8(sizeof(msg) - 1));
			(void)w;
		}
		mark_dirty(m, page);
		raw_mprotect(m->start + page * g_page, g_page, m->prot);
		return;
	}
	/* not ours: hand it on */
	if (g_old_segv.sa_flags & SA_SIGINFO) {
		if (g_old_segv.sa_sigaction) {
			g_old_segv.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (g_old_segv.sa_handler != SIG_DFL && g_old_segv.sa_handler != SIG_IGN) {
		g_old_segv.sa_handler(sig);
		return;
	}
	RESOLVE(signal);
	REAL(signal)(SIGSEGV, SIG_DFL);   /* the faulting instruction runs again and kills us */
}

static void install_handler(void)
{
	if (g_handler_installed)
		return;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	RESOLVE(sigaction);
	REAL(sigaction)(SIGSEGV, &sa, &g_old_segv);
	g_handler_installed = 1;
}

/* diff [s, e) of mapping m against the shadow; emit the changed runs of 8-byte units */
static int diff_range(struct map *m, uintptr_t s, uintptr_t e)
{
	struct file *f = &g_files[m->fid];
	uint64_t fo = m->foff + (s - m->start);
	int changed = 0;
	if (fo >= f->size)
		return 0;
	if (fo + (e - s) > f->size)
		e = s + (f->size - fo);
	const uint64_t *cur = (const uint64_t *)s;
	uint64_t *sh = (uint64_t *)(f->shadow + fo);
	size_t n = (e - s) / 8, i = 0;
	while (i < n) {
		if ((i & 7) == 0 && i + 8 <= n && memcmp(cur + i, sh + i, LINE) == 0) {
			i += 8;
			continue;
		}
		if (cur[i] == sh[i]) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < n && cur[j] != sh[j])
			j++;
		memcpy(sh + i, cur + i, (j - i) * 8);
		emit(T_STORE, m->fid, fo + i * 8, (j - i) * 8, sh + i, (j - i) * 8);
		changed = 1;
		i = j;
	}
	return changed;
}

static int diff_page(struct map *m, size_t page)
{
	uintptr_t s = m->start + page * g_page;
	uintptr_t e = s + g_page < m->end ? s + g_page : m->end;
	return diff_range(m, s, e);
}

/* Sweeps. A page that faulted goes to the fault list (signal handler), then to the hot
 * set at the next sweep. Hot pages stay writable and are diffed at every flush, marker and
 * fence (a 4 KiB compare costs far less than a protection fault); a hot page left unchanged
 * for HOT_IDLE_FENCES fences is write-protected again (retired). */
enum { SWEEP_DIFF = 0, SWEEP_FENCE = 1, SWEEP_ALL = 2 };

static void add_hot(struct map *m, size_t p)
{
	if (m->hot_flag[p])
		return;
	m->hot_flag[p] = 1;
	m->idle[p] = 0;
	m->hot[m->nhot++] = (uint32_t)p;
}

static void take_faults(struct map *m)
{
	if (atomic_load(&m->overflow)) {   /* cannot happen (see mark_dirty); stay correct anyway */
		atomic_store(&m->overflow, 0);
		for (size_t p = 0; p < m->npages; p++)
			if (atomic_load(&m->dirty[p]))
				add_hot(m, p);
	}
	size_t i = 0;
	for (;;) {
		size_t n = atomic_load(&m->nlist);
		if (n > m->cap)
			n = m->cap;
		if (i >= n) {
			size_t want = i;
			if (atomic_compare_exchange_strong(&m->nlist, &want, 0))
				return;
			if (want > m->cap) {   /* overflowed meanwhile */
				atomic_store(&m->nlist, 0);
				atomic_store(&m->overflow, 1);
				take_faults(m);
				return;
			}
			continue;
		}
		uint32_t v;
		while (!(v = atomic_load(&m->list[i])))
			;   /* a handler took the slot and is about to fill it */
		atomic_store(&m->list[i], 0);
		add_hot(m, v - 1);
		i++;
	}
}

static void sweep(struct map *m, int mode)
{
	take_faults(m);
	size_t k = 0;
	for (size_t j = 0; j < m->nhot; j++) {
		size_t p = m->hot[j];
		int changed = diff_page(m, p);
		if (mode != SWEEP_DIFF) {
			m->idle[p] = changed ? 0 : (unsigned char)(m->idle[p] + 1);
			if (mode == SWEEP_ALL || m->idle[p] >= HOT_IDLE_FENCES) {
				m->hot_flag[p] = 0;
				atomic_store(&m->dirty[p], 0);
				raw_mprotect(m->start + p * g_page, g_page, m->prot & ~PROT_WRITE);
				diff_page(m, p);   /* stores between the diff and the protection */
				continue;
			}
		}
		m->hot[k++] = (uint32_t)p;
	}
	m->nhot = k;
}

static void sweep_all(int mode)
{
	int n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++)
		if (atomic_load(&g_maps[i].active))
			sweep(&g_maps[i], mode);
}

static int file_for(int fd, const struct stat *st)
{
	for (int i = 0; i < g_nfiles; i++)
		if (g_files[i].dev == st->st_dev && g_files[i].ino == st->st_ino)
			return i;
	if (g_nfiles == MAX_FILES)
		return -1;
	int fid = g_nfiles++;
	struct file *f = &g_files[fid];
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = 0;
	f->shadow = NULL;
	char link[64], path[PATH_LEN];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		n = 0;
	path[n] = 0;
	emit(T_FILE, fid, (uint64_t)st->st_size, (uint64_t)n, path, (size_t)n);
	return fid;
}

/* grow the file's shadow to cover [0, size) with the file's contents (T_INIT for non-zero pages) */
static int grow_shadow(int fid, int fd, uint64_t size)
{
	struct file *f = &g_files[fid];
	size = (size + g_page - 1) / g_page * g_page;
	if (size <= f->size)
		return 0;
	uint8_t *sh;
	RESOLVE(mremap);
	if (f->shadow)
		sh = REAL(mremap)(f->shadow, f->size, size, MREMAP_MAYMOVE);
	else
		sh = REAL(mmap)(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -1;
	uint64_t old = f->size;
	f->shadow = sh;
	f->size = size;
	for (uint64_t o = old; o < size;) {
		ssize_t r = REAL(pread)(fd, sh + o, size - o, (off_t)o);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;   /* beyond the end of file: zeros */
		o += (uint64_t)r;
	}
	static const uint8_t zero[4096];
	for (uint64_t o = old; o < size; o += g_page) {
		size_t chunk = g_page;
		int nz = 0;
		for (size_t k = 0; k < chunk; k += sizeof(zero))
			if (memcmp(sh + o + k, zero, sizeof(zero) < chunk - k ? sizeof(zero) : chunk - k)) {
				nz = 1;
				break;
			}
		if (nz)
			emit(T_INIT, fid, o, chunk, sh + o, chunk);
	}
	return 0;
}

static void free_tables(struct map *m)
{
	free((void *)m->dirty);
	free((void *)m->list);
	free(m->hot);
	free(m->hot_flag);
	free(m->idle);
	m->dirty = NULL;
	m->list = NULL;
	m->hot = NULL;
	m->hot_flag = m->idle = NULL;
}

/* trace [start, start+len) as file fid from offset foff: write-protect it, clean */
static struct map *add_map(uintptr_t start, size_t len, int prot, int fid, uint64_t foff)
{
	int slot = -1, n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++)
		if (!atomic_load(&g_maps[i].active) && !g_maps[i].dirty) {
			slot = i;
			break;
		}
	if (slot < 0) {
		if (n == MAX_MAPS) {
			raw_mprotect(start, len, prot);
			emit_now(T_ERROR, "more mappings than pmemkit traces; later ones are not traced");
			return NULL;
		}
		slot = n;
	}
	struct map *m = &g_maps[slot];
	size_t npages = (len + g_page - 1) / g_page;
	m->dirty = calloc(npages, 1);
	m->cap = npages + 1;   /* a page is listed at most once until a sweep takes it */
	m->list = calloc(m->cap, sizeof(uint32_t));
	m->hot = calloc(npages, sizeof(uint32_t));
	m->hot_flag = calloc(npages, 1);
	m->idle = calloc(npages, 1);
	if (!m->dirty || !m->list || !m->hot || !m->hot_flag || !m->idle) {
		free_tables(m);
		raw_mprotect(start, len, prot);
		emit_now(T_ERROR, "cannot allocate the dirty-page table of a traced mapping (out of memory)");
		return NULL;
	}
	m->start = start;
	m->end = start + npages * g_page;
	m->prot = prot;
	m->fid = fid;
	m->foff = foff;
	m->npages = npages;
	m->nhot = 0;
	atomic_store(&m->nlist, 0);
	atomic_store(&m->overflow, 0);
	raw_mprotect(m->start, m->end - m->start, prot & ~PROT_WRITE);
	atomic_store(&m->active, 1);
	if (slot == n)
		atomic_store(&g_nmaps, n + 1);
	return m;
}

static void register_map(void *addr, size_t len, int prot, int fd, off_t off)
{
	struct stat st;
	if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || S_ISCHR(st.st_mode)))
		return;
	int fid = file_for(fd, &st);
	if (fid < 0) {
		emit_now(T_ERROR, "more files mapped than pmemkit traces; later ones are not traced");
		return;
	}
	uint64_t fsize = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : (uint64_t)off + len;
	uint64_t want = (uint64_t)off + len < fsize ? (uint64_t)off + len : fsize;
	if (grow_shadow(fid, fd, want > g_files[fid].size ? fsize : want) != 0) {
		emit_now(T_ERROR, "cannot allocate the shadow copy of a traced file (out of memory)");
		return;
	}
	install_handler();
	/* stores made through another mapping of the file since its last diff */
	sweep_all(SWEEP_DIFF);
	add_map((uintptr_t)addr, len, prot, fid, (uint64_t)off);
}

static void release_map(struct map *m)
{
	atomic_store(&m->active, 0);
	free_tables(m);
}

/* [addr, addr+len) is going away (munmap, MAP_FIXED, mremap): diff it, drop it, keep the rest */
static void unregister_range(uintptr_t addr, size_t len)
{
	uintptr_t end = addr + len;
	int n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++) {
		struct map *m = &g_maps[i];
		if (!atomic_load(&m->active) || m->end <= addr || m->start >= end)
			continue;
		sweep(m, SWEEP_ALL);
		int fid = m->fid, prot = m->prot;
		uintptr_t ms = m->start, me = m->end;
		uint64_t foff = m->foff;
		release_map(m);
		/* what stays mapped keeps being traced (pages are already protected and clean) */
		uintptr_t pieces[2][2] = { { ms, addr > ms ? addr : ms }, { end < me ? end : me, me } };
		for (int k = 0; k < 2; k++) {
			uintptr_t s = pieces[k][0], e = pieces[k][1];
			if (e <= s)
				continue;
			add_map(s, e - s, prot, fid, foff + (s - ms));
		}
	}
}

/* a range the program made writable or that a system call is about to write */
static void open_pages(uintptr_t addr, size_t len)
{
	uintptr_t end = addr + len;
	int n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++) {
		struct map *m = &g_maps[i];
		if (!atomic_load(&m->active) || m->end <= addr || m->start >= end)
			continue;
		uintptr_t s = addr > m->start ? addr : m->start;
		uintptr_t e = end < m->end ? end : m->end;
		for (size_t p = (s - m->start) / g_page; m->start + p * g_page < e; p++) {
			mark_dirty(m, p);
			if (m->prot & PROT_WRITE)
				raw_mprotect(m->start + p * g_page, g_page, m->prot);
		}
	}
}

/* --- the recorded operations ---------------------------------------------------- */

static int enter(void)
{
	if (t_depth > 0 || !atomic_load(&g_active))
		return 0;
	t_depth++;
	pthread_mutex_lock(&g_lock);
	return 1;
}

/* records reach the file at every fence, marker, record and exit (and when the buffer
 * fills): what a kill loses is only what came after the last fence, which is lost to the
 * trace anyway (stores made after it are never diffed) */
static void leave(void)
{
	if (g_must_write) {
		out_flush();
		g_must_write = 0;
	}
	pthread_mutex_unlock(&g_lock);
	t_depth--;
}

static void do_flush(const void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(LINE - 1);
	uintptr_t b = ((uintptr_t)addr + len + LINE - 1) & ~(uintptr_t)(LINE - 1);
	if (len == 0)
		return;
	int n = atomic_load(&g_nmaps);
	for (int i = 0; i < n; i++) {
		struct map *m = &g_maps[i];
		if (!atomic_load(&m->active) || m->end <= a || m->start >= b)
			continue;
		uintptr_t s = a > m->start ? a : m->start;
		uintptr_t e = b < m->end ? b : m->end;
		for (uintptr_t p = s; p < e;) {
			size_t page = (p - m->start) / g_page;
			uintptr_t pe = m->start + (page + 1) * g_page;
			if (pe > e)
				pe = e;
			if (atomic_load(&m->dirty[page]))
				diff_range(m, p, pe);
			p = pe;
		}
		emit(T_FLUSH, m->fid, m->foff + (s - m->start), e - s, NULL, 0);
	}
}

static void do_fence(void)
{
	sweep_all(SWEEP_FENCE);
	emit(T_FENCE, 0, 0, 0, NULL, 0);
	g_must_write = 1;
}

static void do_mark(const char *name)
{
	sweep_all(SWEEP_DIFF);
	emit_str(T_MARK, name);
	g_must_write = 1;
}

static void finish(int how, int status)
{
	if (g_finished)
		return;
	g_finished = 1;
	sweep_all(SWEEP_ALL);
	emit(T_END, 0, (uint64_t)how, (uint64_t)(unsigned)status, NULL, 0);
	g_must_write = 1;
}

/* --- libpmem ---------------------------------------------------------------------- */

/* record, then run the real function with its internal pmem_* calls passing through */
#define RECORD_THEN(what, call) \
	do { \
		int rec_ = enter(); \
		if (rec_) { what; leave(); t_depth++; } \
		call; \
		if (rec_) t_depth--; \
	} while (0)

#define FLUSH_FN(name) \
	void name(const void *addr, size_t len) \
	{ \
		RESOLVE(name); \
		RECORD_THEN(do_flush(addr, len), if (REAL(name)) REAL(name)(addr, len)); \
	}
FLUSH_FN(pmem_flush)
FLUSH_FN(pmem_deep_flush)

void pmem_drain(void)
{
	RESOLVE(pmem_drain);
	RECORD_THEN(do_fence(), if (REAL(pmem_drain)) REAL(pmem_drain)());
}

int pmem_deep_drain(const void *addr, size_t len)
{
	RESOLVE(pmem_deep_drain);
	int r = 0;
	RECORD_THEN(do_fence(), if (REAL(pmem_deep_drain)) r = REAL(pmem_deep_drain)(addr, len));
	return r;
}

void pmem_persist(const void *addr, size_t len)
{
	RESOLVE(pmem_persist);
	RECORD_THEN((do_flush(addr, len), do_fence()),
		    if (REAL(pmem_persist)) REAL(pmem_persist)(addr, len));
}

#define PERSIST_INT_FN(name) \
	int name(const void *addr, size_t len) \
	{ \
		RESOLVE(name); \
		int r = 0; \
		RECORD_THEN((do_flush(addr, len), do_fence()), if (REAL(name)) r = REAL(name)(addr, len)); \
		return r; \
	}
PERSIST_INT_FN(pmem_deep_persist)
PERSIST_INT_FN(pmem_msync)

/* a copy into pmem: run the real one (its internal calls pass through), then record by flags */
static void after_copy(void *dest, size_t len, unsigned flags)
{
	pthread_mutex_lock(&g_lock);
	if (!(flags & F_NOFLUSH))
		do_flush(dest, len);
	if (!(flags & (F_NOFLUSH | F_NODRAIN)))
		do_fence();
	else
		sweep_all(SWEEP_DIFF);   /* the copied bytes are stores of this point in the program */
	if (g_must_write) {
		out_flush();
		g_must_write = 0;
	}
	pthread_mutex_unlock(&g_lock);
}

static int g_emit_log;    /* EMIT_LOG_ENV=1: library calls are markers, as pmemcheck logs them */

/* the marker NAME.BEGIN or NAME.END of a libpmem call, as PMDK's PMEM_API_START/END write it */
static void api_mark(const char *name, const char *suffix)
{
	char buf[64];
	if (!g_emit_log)
		return;
	snprintf(buf, sizeof(buf), "%s.%s", name, suffix);
	if (enter()) { do_mark(buf); leave(); }
}

/* NAME PARAMS (one of libpmem's copy or set functions): the real one, then its LEN bytes at
 * DEST are stores of this point, flushed and fenced as FLAGS say. */
#define COPY_WRAPPER(name, params, args, flags) \
	void *name params \
	{ \
		RESOLVE(name); \
		if (t_depth > 0 || !atomic_load(&g_active)) \
			return REAL(name) args; \
		api_mark(#name, "BEGIN"); \
		t_depth++; \
		void *r = REAL(name) args; \
		after_copy(dest, len, flags); \
		t_depth--; \
		api_mark(#name, "END"); \
		return r; \
	}
#define COPY_FN(name, flags) \
	COPY_WRAPPER(name, (void *dest, const void *src, size_t len), (dest, src, len), flags)
#define SET_FN(name, flags) \
	COPY_WRAPPER(name, (void *dest, int c, size_t len), (dest, c, len), flags)
#define COPY_FLAGS_FN(name) \
	COPY_WRAPPER(name, (void *dest, const void *src, size_t len, unsigned flags), \
		     (dest, src, len, flags), flags)
COPY_FN(pmem_memmove_persist, 0)
COPY_FN(pmem_memcpy_persist, 0)
COPY_FN(pmem_memmove_nodrain, F_NODRAIN)
COPY_FN(pmem_memcpy_nodrain, F_NODRAIN)
SET_FN(pmem_memset_persist, 0)
SET_FN(pmem_memset_nodrain, F_NODRAIN)
COPY_FLAGS_FN(pmem_memmove)
COPY_FLAGS_FN(pmem_memcpy)
COPY_WRAPPER(pmem_memset, (void *dest, int c, size_t len, unsigned flags), (dest, c, len, flags),
	     flags)

/* --- libpmem2: wrap the function pointers the getters return -------------------- */

static void w2_persist(const void *p, size_t n)
{
	if (enter()) { do_flush(p, n); do_fence(); leave(); }
	t_depth++;
	atomic_load(&p2_persist)(p, n);
	t_depth--;
}

static void w2_flush(const void *p, size_t n)
{
	if (enter()) { do_flush(p, n); leave(); }
	t_depth++;
	atomic_load(&p2_flush)(p, n);
	t_depth--;
}

static void w2_drain(void)
{
	if (enter()) { do_fence(); leave(); }
	t_depth++;
	atomic_load(&p2_drain)();
	t_depth--;
}

#define W2_COPY(wname, ptr) \
	static void *wname(void *d, const void *s, size_t n, unsigned flags) \
	{ \
		if (t_depth > 0 || !atomic_load(&g_active)) \
			return atomic_load(&ptr)(d, s, n, flags); \
		t_depth++; \
		void *r = atomic_load(&ptr)(d, s, n, flags); \
		after_copy(d, n, flags); \
		t_depth--; \
		return r; \
	}
W2_COPY(w2_memmove, p2_memmove)
W2_COPY(w2_memcpy, p2_memcpy)

static void *w2_memset(void *d, int c, size_t n, unsigned flags)
{
	if (t_depth > 0 || !atomic_load(&g_active))
		return atomic_load(&p2_memset)(d, c, n, flags);
	t_depth++;
	void *r = atomic_load(&p2_memset)(d, c, n, flags);
	after_copy(d, n, flags);
	t_depth--;
	return r;
}

#define GETTER(name, type, slot, wrapper) \
	type name(void *map) \
	{ \
		RESOLVE(name); \
		type fn = REAL(name) ? REAL(name)(map) : NULL; \
		if (!fn) \
			return fn; \
		atomic_store(&slot, fn); \
		return wrapper; \
	}
GETTER(pmem2_get_persist_fn, p2_persist_t, p2_persist, w2_persist)
GETTER(pmem2_get_flush_fn, p2_persist_t, p2_flush, w2_flush)
GETTER(pmem2_get_drain_fn, p2_drain_t, p2_drain, w2_drain)
GETTER(pmem2_get_memmove_fn, p2_memmove_t, p2_memmove, w2_memmove)
GETTER(pmem2_get_memcpy_fn, p2_memmove_t, p2_memcpy, w2_memcpy)
GETTER(pmem2_get_memset_fn, p2_memset_t, p2_memset, w2_memset)

/* --- libpmemobj transactions as markers ------------------------------------------- */

static void lib_mark(const char *name)
{
	if (enter()) { do_mark(name); leave(); }
}

#define TX_WORDS 16

int pmemobj_tx_begin(void *pop, jmp_buf env, ...)
{
	RESOLVE(pmemobj_tx_begin);
	/* the parameters are (type, value[, value]) ... TX_PARAM_NONE (0): forward them
	 * as words, zero-padded (extra variadic arguments are harmless) */
	uintptr_t w[TX_WORDS] = { 0 };
	va_list ap;
	va_start(ap, env);
	for (int i = 0; i < TX_WORDS - 1;) {
		int type = va_arg(ap, int);
		w[i++] = (uintptr_t)type;
		if (type == 0)
			break;
		int nvals = type == 3 ? 2 : 1;   /* TX_PARAM_CB: function and argument */
		for (int k = 0; k < nvals && i < TX_WORDS - 1; k++)
			w[i++] = va_arg(ap, uintptr_t);
	}
	va_end(ap);
	lib_mark("pmemobj_tx_begin");
	return REAL(pmemobj_tx_begin)(pop, env, w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
				      w[8], w[9], w[10], w[11], w[12], w[13], w[14], w[15]);
}

void pmemobj_tx_commit(void)
{
	RESOLVE(pmemobj_tx_commit);
	lib_mark("pmemobj_tx_commit");
	REAL(pmemobj_tx_commit)();
}

int pmemobj_tx_end(void)
{
	RESOLVE(pmemobj_tx_end);
	int r = REAL(pmemobj_tx_end)();
	lib_mark("pmemobj_tx_end");
	return r;
}

void pmemobj_tx_abort(int errnum)
{
	RESOLVE(pmemobj_tx_abort);
	lib_mark("pmemobj_tx_abort");
	REAL(pmemobj_tx_abort)(errnum);
}

/* --- markers and records from the program ------------------------------------------ */

void pmemkit_mark(const char *name)
{
	if (name && enter()) { do_mark(name); leave(); }
}

void pmemkit_record(const char *key, const char *value)
{
	if (!key || !enter())
		return;
	size_t k = strlen(key), v = value ? strlen(value) : 0;
	char stack[512];
	char *buf = k + v + 1 <= sizeof(stack) ? stack : malloc(k + v + 1);
	if (buf) {
		memcpy(buf, key, k);
		buf[k] = 0;
		if (v)
			memcpy(buf + k + 1, value, v);
		emit(T_RECORD, 0, k, k + 1 + v, buf, k + 1 + v);
		g_must_write = 1;
		if (buf != stack)
			free(buf);
	}
	leave();
}

/* --- libc ------------------------------------------------------------------------ */

static void *map_common(void *addr, size_t len, int prot, int flags, int fd, off_t off, int is64)
{
	RESOLVE(mmap);
	RESOLVE(mmap64);
	int track = fd >= 0 && (flags & MAP_SHARED) && (prot & PROT_WRITE) && len > 0;
	int rec = enter();
	if (rec && (flags & MAP_FIXED))
		unregister_range((uintptr_t)addr, len);
	void *r = is64 && REAL(mmap64) ? REAL(mmap64)(addr, len, prot, flags, fd, off)
				       : REAL(mmap)(addr, len, prot, flags, fd, off);
	if (rec) {
		if (r != MAP_FAILED && track) {
			int saved = errno;
			register_map(r, len, prot, fd, off);
			errno = saved;
		}
		leave();
	}
	return r;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return map_common(addr, len, prot, flags, fd, off, 0);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return map_common(addr, len, prot, flags, fd, off, 1);
}

int munmap(void *addr, size_t len)
{
	RESOLVE(munmap);
	if (enter()) {
		unregister_range((uintptr_t)addr, len);
		leave();
	}
	return REAL(munmap)(addr, len);
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	RESOLVE(mremap);
	void *new_addr = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	int rec = enter();
	struct map saved;
	int had = 0;
	if (rec) {
		struct map *m = find_map((uintptr_t)old);
		if (m && m->start == (uintptr_t)old) {
			saved = *m;
			had = 1;
		}
		unregister_range((uintptr_t)old, old_len);
	}
	void *r = REAL(mremap)(old, old_len, new_len, flags, new_addr);
	if (rec) {
		if (had && r != MAP_FAILED) {
			/* re-register through the file: reopen it by path is not possible here,
			 * so keep the file id and grow its shadow from the mapping itself */
			struct file *f = &g_files[saved.fid];
			uint64_t need = saved.foff + new_len;
			if (need > f->size) {
				size_t want = (need + g_page - 1) / g_page * g_page;
				uint8_t *sh = REAL(mremap)(f->shadow, f->size, want, MREMAP_MAYMOVE);
				if (sh != MAP_FAILED) {
					memcpy(sh + f->size, (uint8_t *)r + (f->size - saved.foff), want - f->size);
					for (uint64_t o = f->size; o < want; o += g_page)
						emit(T_INIT, saved.fid, o, g_page, sh + o, g_page);
					f->shadow = sh;
					f->size = want;
				}
			}
			add_map((uintptr_t)r, new_len, saved.prot, saved.fid, saved.foff);
		} else if (had) {   /* the old mapping stays: keep tracing it */
			add_map((uintptr_t)old, old_len, saved.prot, saved.fid, saved.foff);
		}
		leave();
	}
	return r;
}

int msync(void *addr, size_t len, int flags)
{
	RESOLVE(msync);
	int r;
	if (!(flags & MS_SYNC))   /* MS_ASYNC promises no durability (Linux does nothing) */
		return REAL(msync)(addr, len, flags);
	RECORD_THEN((do_flush(addr, len), do_fence()), r = REAL(msync)(addr, len, flags));
	return r;
}

int mprotect(void *addr, size_t len, int prot)
{
	RESOLVE(mprotect);
	int rec = enter();
	int r = REAL(mprotect)(addr, len, prot);
	if (rec) {
		if (r == 0) {
			int n = atomic_load(&g_nmaps);
			for (int i = 0; i < n; i++) {
				struct map *m = &g_maps[i];
				if (atomic_load(&m->active) && m->start < (uintptr_t)addr + len &&
				    m->end > (uintptr_t)addr)
					m->prot = prot;
			}
			/* pages made writable no longer fault: count them dirty */
			if (prot & PROT_WRITE)
				open_pages((uintptr_t)addr, len);
		}
		leave();
	}
	return r;
}

/* the kernel writes into a protected page with EFAULT instead of a fault: open the pages first */
ssize_t read(int fd, void *buf, size_t n)
{
	RESOLVE(read);
	if (atomic_load(&g_nmaps) && enter()) {
		open_pages((uintptr_t)buf, n);
		leave();
	}
	return REAL(read)(fd, buf, n);
}

#define PREAD_FN(name) \
	ssize_t name(int fd, void *buf, size_t n, off_t off) \
	{ \
		RESOLVE(name); \
		if (atomic_load(&g_nmaps) && enter()) { \
			open_pages((uintptr_t)buf, n); \
			leave(); \
		} \
		return REAL(name)(fd, buf, n, off); \
	}
PREAD_FN(pread)
PREAD_FN(pread64)

static void open_iov(const struct iovec *iov, int cnt)
{
	if (atomic_load(&g_nmaps) && iov && enter()) {
		for (int i = 0; i < cnt; i++)
			open_pages((uintptr_t)iov[i].iov_base, iov[i].iov_len);
		leave();
	}
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	RESOLVE(readv);
	open_iov(iov, cnt);
	return REAL(readv)(fd, iov, cnt);
}

ssize_t preadv(int fd, const struct iovec *iov, int cnt, off_t off)
{
	RESOLVE(preadv);
	open_iov(iov, cnt);
	return REAL(preadv)(fd, iov, cnt, off);
}

/* a program's own SIGSEGV handler: pmemkit's stays installed and hands on the faults that are
 * not on traced pages to the program's (otherwise every write to the pool would reach it) */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	RESOLVE(sigaction);
	if (sig != SIGSEGV || !g_handler_installed || atomic_load(&g_child))
		return REAL(sigaction)(sig, act, old);
	struct sigaction prev = g_old_segv;
	if (act)
		g_old_segv = *act;
	if (old)
		*old = prev;
	return 0;
}

sighandler_t signal(int sig, sighandler_t handler)
{
	RESOLVE(signal);
	if (sig != SIGSEGV || !g_handler_installed || atomic_load(&g_child))
		return REAL(signal)(sig, handler);
	sighandler_t prev = g_old_segv.sa_handler;
	if (g_old_segv.sa_flags & SA_SIGINFO)
		prev = (sighandler_t)(void *)g_old_segv.sa_sigaction;
	memset(&g_old_segv, 0, sizeof(g_old_segv));
	g_old_segv.sa_handler = handler;
	return prev;
}

void exit(int status)
{
	RESOLVE(exit);
	g_exit_status = status;
	REAL(exit)(status);
	__builtin_unreachable();
}

#define EXIT_FN(name) \
	void name(int status) \
	{ \
		RESOLVE(name); \
		if (enter()) { finish(END__EXIT, status); leave(); } \
		REAL(name)(status); \
		__builtin_unreachable(); \
	}
EXIT_FN(_exit)
EXIT_FN(_Exit)

/* --- start and end ---------------------------------------------------------------- */

static void atfork_prepare(void)
{
	/* every page write-protected at the fork, so a child's store faults and is reported */
	if (enter()) {
		sweep_all(SWEEP_ALL);
		g_must_write = 1;
		leave();
	}
}

static void atfork_child(void)
{
	/* the child shares the trace file and the pool: it must not record, and its
	 * stores to the pool are reported (the segv handler) instead of traced */
	atomic_store(&g_child, 1);
	atomic_store(&g_active, 0);
	g_buflen = 0;
	pthread_mutex_init(&g_lock, NULL);
}

static const char *static_defs[] = { "pmem_flush", "pmem_drain", "pmem_persist",
				     "pmem_memcpy_persist", NULL };

__attribute__((constructor)) static void pmemkit_init(void)
{
	RESOLVE(mmap);
	RESOLVE(pread);
	long ps = sysconf(_SC_PAGESIZE);
	if (ps > 0)
		g_page = (size_t)ps;
	const char *path = getenv(TRACE_ENV);
	if (!path || !*path)
		return;
	const char *owner = getenv(OWNER_ENV);
	char pid[32];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (owner && *owner && strcmp(owner, pid) != 0)
		return;   /* a process the traced one started: not traced */
	setenv(OWNER_ENV, pid, 1);
	const char *emit_log = getenv(EMIT_LOG_ENV);
	g_emit_log = emit_log && strcmp(emit_log, "1") == 0;
	g_fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (g_fd < 0)
		return;
	pthread_atfork(atfork_prepare, NULL, atfork_child);
	pthread_mutex_lock(&g_lock);
	emit(T_HELLO, 0, TRACE_VERSION, (uint64_t)getpid(), NULL, 0);
	/* a definition that comes before ours (statically linked libpmem exported by the
	 * executable) means calls never reach the interposer */
	for (int i = 0; static_defs[i]; i++) {
		void *p = dlsym(RTLD_DEFAULT, static_defs[i]);
		Dl_info self, other;
		if (!p || !dladdr((void *)pmemkit_init, &self) || !dladdr(p, &other))
			continue;
		if (other.dli_fbase != self.dli_fbase) {
			char msg[PATH_LEN + 128];
			snprintf(msg, sizeof(msg), "%s is defined in %s ahead of pmemkit's interposer "
				 "(libpmem linked statically?)", static_defs[i],
				 other.dli_fname ? other.dli_fname : "?");
			emit_str(T_WARN, msg);
			break;
		}
	}
	out_flush();
	pthread_mutex_unlock(&g_lock);
	atomic_store(&g_active, 1);
}

__attribute__((destructor)) static void pmemkit_fini(void)
{
	if (enter()) {
		finish(END_EXIT, g_exit_status);
		leave();
	}
}
