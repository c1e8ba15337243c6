/*
 * pmemkit._flush - native persistence primitives for pmemkit.mapping.
 *
 * The type Mapping is the base class of pmemkit.mapping.PmemMap: its methods ARE the
 * mapping's flush, drain, persist, write, read, memcpy_persist and memset_persist. It
 * holds the address and size of one mapping (through a buffer export of the mmap object,
 * so the memory cannot be unmapped under it) and the persistence path chosen ONCE when
 * it is attached (libpmem2 style: function pointers, no branch on the method in the hot
 * path):
 *
 *   method     flush                         drain      copies >= 256 B
 *   clwb       CLWB every line               SFENCE     non-temporal stores
 *   clflushopt CLFLUSHOPT every line         SFENCE     non-temporal stores
 *   clflush    CLFLUSH every line            SFENCE     non-temporal stores
 *   none       nothing (eADR)                SFENCE     non-temporal stores
 *   msync      remember page-aligned range   msync(MS_SYNC) of the remembered ranges
 *
 * The methods are METH_FASTCALL, so a call from Python costs one vectorcall. Argument
 * errors are raised here, with the classes pmemkit.mapping hands over (configure) and
 * the messages of pmemkit.region.check_range (the region conformance tests compare them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define PMK_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define PMK_X86 0
#endif

#define CACHE_LINE 64
#define NT_THRESHOLD 256
#define AVX512F_ENV "PMEMKIT_AVX512F" /* = pmemkit.defaults.AVX512F_ENV (a test pins them) */
#define MAX_RANGES 16

enum { M_MSYNC = 0, M_NONE, M_CLFLUSH, M_CLFLUSHOPT, M_CLWB, M_COUNT };
static const char *const method_names[M_COUNT] = {"msync", "none", "clflush", "clflushopt", "clwb"};

/* Exception classes, handed over by pmemkit.mapping (configure). */
static PyObject *ClosedError = NULL;
static PyObject *ArgError = NULL;
static PyObject *RangeErr = NULL;
static PyObject *ReadOnlyErr = NULL;

/* ------------------------------------------------------------------ CPU ---- */

static int has_clflush, has_clflushopt, has_clwb, has_sse2, has_avx, has_avx2, has_avx512f;

static void detect_cpu(void)
{
#if PMK_X86
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        has_clflush = (d >> 19) & 1;
        has_sse2 = (d >> 26) & 1;
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        unsigned xcr0 = 0;
        if (osxsave) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = lo;
        }
        has_avx = avx && (xcr0 & 6) == 6;
        if (__get_cpuid_max(0, NULL) >= 7) {
            __cpuid_count(7, 0, a, b, c, d);
            has_clflushopt = (b >> 23) & 1;
            has_clwb = (b >> 24) & 1;
            has_avx2 = has_avx && ((b >> 5) & 1);
            has_avx512f = has_avx && ((b >> 16) & 1) && (xcr0 & 0xe6) == 0xe6;
        }
    }
#endif
}

/* ------------------------------------------------------------ primitives ---- */

#if PMK_X86
/* Byte encodings as PMDK writes them, so no special assembler support is needed. */
static inline void i_clwb(const char *p) { __asm__ volatile(".byte 0x66; xsaveopt %0" : "+m"(*(volatile char *)p)); }
static inline void i_clflushopt(const char *p) { __asm__ volatile(".byte 0x66; clflush %0" : "+m"(*(volatile char *)p)); }
static inline void i_clflush(const char *p) { __asm__ volatile("clflush %0" : "+m"(*(volatile char *)p)); }
static inline void i_sfence(void) { __asm__ volatile("sfence" ::: "memory"); }

#define FLUSH_LOOP(name, insn)                                                  \
    static void name(char *p, size_t n)                                         \
    {                                                                           \
        uintptr_t a = (uintptr_t)p & ~(uintptr_t)(CACHE_LINE - 1);              \
        uintptr_t end = (uintptr_t)p + n;                                       \
        for (; a < end; a += CACHE_LINE)                                        \
            insn((const char *)a);                                              \
    }
FLUSH_LOOP(flush_clwb, i_clwb)
FLUSH_LOOP(flush_clflushopt, i_clflushopt)
FLUSH_LOOP(flush_clflush, i_clflush)
static void fence_sfence(void) { i_sfence(); }
static void flush_nothing(char *p, size_t n) { (void)p; (void)n; } /* eADR: the fence suffices */

/* Non-temporal copy of n bytes, dst 64-byte aligned, n a multiple of 64. */
__attribute__((target("avx512f"))) static void nt_lines_avx512(char *d, const char *s, size_t n)
{
    for (; n >= 256; n -= 256, d += 256, s += 256) {
        __m512i a = _mm512_loadu_si512((const void *)s);
        __m512i b = _mm512_loadu_si512((const void *)(s + 64));
        __m512i c = _mm512_loadu_si512((const void *)(s + 128));
        __m512i e = _mm512_loadu_si512((const void *)(s + 192));
        _mm512_stream_si512((void *)d, a);
        _mm512_stream_si512((void *)(d + 64), b);
        _mm512_stream_si512((void *)(d + 128), c);
        _mm512_stream_si512((void *)(d + 192), e);
    }
    for (; n; n -= 64, d += 64, s += 64)
        _mm512_stream_si512((void *)d, _mm512_loadu_si512((const void *)s));
    _mm256_zeroupper();
}

__attribute__((target("avx"))) static void nt_lines_avx(char *d, const char *s, size_t n)
{
    for (; n >= 256; n -= 256, d += 256, s += 256) {
        _mm_prefetch(s + 1024, _MM_HINT_NTA);
        _mm_prefetch(s + 1024 + 64, _MM_HINT_NTA);
        _mm_prefetch(s + 1024 + 128, _MM_HINT_NTA);
        _mm_prefetch(s + 1024 + 192, _MM_HINT_NTA);
        __m256i r0 = _mm256_loadu_si256((const __m256i *)s);
        __m256i r1 = _mm256_loadu_si256((const __m256i *)(s + 32));
        __m256i r2 = _mm256_loadu_si256((const __m256i *)(s + 64));
        __m256i r3 = _mm256_loadu_si256((const __m256i *)(s + 96));
        __m256i r4 = _mm256_loadu_si256((const __m256i *)(s + 128));
        __m256i r5 = _mm256_loadu_si256((const __m256i *)(s + 160));
        __m256i r6 = _mm256_loadu_si256((const __m256i *)(s + 192));
        __m256i r7 = _mm256_loadu_si256((const __m256i *)(s + 224));
        _mm256_stream_si256((__m256i *)d, r0);
        _mm256_stream_si256((__m256i *)(d + 32), r1);
        _mm256_stream_si256((__m256i *)(d + 64), r2);
        _mm256_stream_si256((__m256i *)(d + 96), r3);
        _mm256_stream_si256((__m256i *)(d + 128), r4);
        _mm256_stream_si256((__m256i *)(d + 160), r5);
        _mm256_stream_si256((__m256i *)(d + 192), r6);
        _mm256_stream_si256((__m256i *)(d + 224), r7);
    }
    for (; n; n -= 64, d += 64, s += 64) {
        __m256i r0 = _mm256_loadu_si256((const __m256i *)s);
        __m256i r1 = _mm256_loadu_si256((const __m256i *)(s + 32));
        _mm256_stream_si256((__m256i *)d, r0);
        _mm256_stream_si256((__m256i *)(d + 32), r1);
    }
    _mm256_zeroupper();
}

static void nt_lines_sse2(char *d, const char *s, size_t n)
{
    for (; n; n -= 64, d += 64, s += 64) {
        __m128i r0 = _mm_loadu_si128((const __m128i *)s);
        __m128i r1 = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i r2 = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i r3 = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, r0);
        _mm_stream_si128((__m128i *)(d + 16), r1);
        _mm_stream_si128((__m128i *)(d + 32), r2);
        _mm_stream_si128((__m128i *)(d + 48), r3);
    }
}

__attribute__((target("avx"))) static void nt_fill_avx(char *d, int c, size_t n)
{
    __m256i v = _mm256_set1_epi8((char)c);
    for (; n; n -= 64, d += 64) {
        _mm256_stream_si256((__m256i *)d, v);
        _mm256_stream_si256((__m256i *)(d + 32), v);
    }
    _mm256_zeroupper();
}

static void nt_fill_sse2(char *d, int c, size_t n)
{
    __m128i v = _mm_set1_epi8((char)c);
    for (; n; n -= 64, d += 64) {
        _mm_stream_si128((__m128i *)d, v);
        _mm_stream_si128((__m128i *)(d + 16), v);
        _mm_stream_si128((__m128i *)(d + 32), v);
        _mm_stream_si128((__m128i *)(d + 48), v);
    }
}
#endif /* PMK_X86 */


typedef void (*flush_fn_t)(char *, size_t);
typedef void (*fence_fn_t)(void);
typedef void (*nt_copy_fn_t)(char *, const char *, size_t);
typedef void (*nt_fill_fn_t)(char *, int, size_t);

static nt_copy_fn_t nt_copy_best;
static nt_fill_fn_t nt_fill_best;

/* ---------------------------------------------------------------- Mapping ---- */

typedef struct {
    uintptr_t start, end; /* byte offsets into the mapping, page aligned */
} range_t;

typedef struct {
    PyObject_HEAD
    Py_buffer buf;
    char *base;
    Py_ssize_t size;
    int method;
    int closed;   /* not attached yet, or detached by close() */
    int readonly; /* mapped without PROT_WRITE: stores, flushes and persists raise */
    flush_fn_t flush_fn;
    fence_fn_t fence_fn;
    size_t page;
    int nranges;
    range_t ranges[MAX_RANGES];
    unsigned long long msync_calls;
    unsigned long long msync_bytes;
    PyObject *name; /* for error messages */
} Mapping;

static int raise_closed(Mapping *self)
{
    PyErr_Format(ClosedError ? ClosedError : PyExc_ValueError,
                 "PmemMap for %S is closed; map it again to use it", self->name);
    return -1;
}

static int raise_readonly(Mapping *self)
{
    PyErr_Format(ReadOnlyErr ? ReadOnlyErr : PyExc_TypeError,
                 "PmemMap for %S is read-only (writable=False): it cannot be stored to, "
                 "flushed or persisted; open it writable to change it", self->name);
    return -1;
}

static int wrong_nargs(const char *fn, Py_ssize_t want, Py_ssize_t got)
{
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", fn, want, got);
    return -1;
}

/* The preamble of every method: the mapping is open (and writable, for a method that
 * stores or flushes) and got exactly `want` arguments. */
static inline int enter(Mapping *self, const char *fn, Py_ssize_t nargs, Py_ssize_t want, int stores)
{
    if (self->closed)
        return raise_closed(self);
    if (stores && self->readonly)
        return raise_readonly(self);
    if (nargs != want)
        return wrong_nargs(fn, want, nargs);
    return 0;
}

/* Slow path of get_range: index-like objects, and every error. Raises what
 * pmemkit.region.check_range raises, with the same messages. */
static int range_slow(Mapping *self, PyObject *o, PyObject *l, Py_ssize_t *poff, Py_ssize_t *plen)
{
    if (PyBool_Check(o) || PyBool_Check(l) || !PyIndex_Check(o) || !PyIndex_Check(l)) {
        PyErr_Format(ArgError ? ArgError : PyExc_TypeError,
                     "offset and length must be integers, got %s and %s",
                     _PyType_Name(Py_TYPE(o)), _PyType_Name(Py_TYPE(l)));
        return -1;
    }
    int rc = -1, ov1, ov2;
    PyObject *off = PyNumber_Index(o), *len = off ? PyNumber_Index(l) : NULL, *end = NULL;
    if (!len)
        goto done;
    long long a = PyLong_AsLongLongAndOverflow(off, &ov1);
    long long b = PyLong_AsLongLongAndOverflow(len, &ov2);
    if (PyErr_Occurred())
        goto done;
    if (!ov1 && !ov2 && a >= 0 && b >= 0 && a <= self->size && b <= self->size - a) {
        *poff = (Py_ssize_t)a;
        *plen = (Py_ssize_t)b;
        rc = 0;
    } else if (ov1 < 0 || ov2 < 0 || (!ov1 && a < 0) || (!ov2 && b < 0)) {
        PyErr_Format(RangeErr ? RangeErr : PyExc_IndexError,
                     "negative offset or length (offset=%S, length=%S); both must be >= 0", off, len);
    } else if ((end = PyNumber_Add(off, len)) != NULL) {
        PyErr_Format(RangeErr ? RangeErr : PyExc_IndexError,
                     "range [%S, %S) is outside the %zd-byte mapping; the last valid byte is at "
                     "offset %zd", off, end, self->size, self->size - 1);
    }
done:
    Py_XDECREF(off);
    Py_XDECREF(len);
    Py_XDECREF(end);
    return rc;
}

/* [offset, offset + length) inside the mapping, as C sizes; -1 with an exception if not. */
static inline int get_range(Mapping *self, PyObject *o, PyObject *l, Py_ssize_t *off, Py_ssize_t *len)
{
    if (PyLong_CheckExact(o) && PyLong_CheckExact(l)) {
        int ov1, ov2;
        long long a = PyLong_AsLongLongAndOverflow(o, &ov1);
        long long b = PyLong_AsLongLongAndOverflow(l, &ov2);
        if (!ov1 && !ov2 && a >= 0 && b >= 0 && a <= self->size && b <= self->size - a) {
            *off = (Py_ssize_t)a;
            *len = (Py_ssize_t)b;
            return 0;
        }
        if (PyErr_Occurred())
            return -1;
    }
    return range_slow(self, o, l, off, len);
}

/* --- msync method: flush records, drain syncs ------------------------------ */

static int msync_drain(Mapping *self)
{
    int n = self->nranges, err = 0;
    if (n == 0)
        return 0;
    range_t r[MAX_RANGES];
    memcpy(r, self->ranges, sizeof(range_t) * n);
    self->nranges = 0;
    char *base = self->base;
    unsigned long long bytes = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < n; i++) {
        if (msync(base + r[i].start, r[i].end - r[i].start, MS_SYNC) != 0 && !err)
            err = errno;
        bytes += r[i].end - r[i].start;
    }
    Py_END_ALLOW_THREADS
    self->msync_calls += n;
    self->msync_bytes += bytes;
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static int msync_record(Mapping *self, Py_ssize_t off, Py_ssize_t len)
{
    if (len == 0)
        return 0;
    uintptr_t mask = self->page - 1;
    uintptr_t s = (uintptr_t)off & ~mask;
    uintptr_t e = ((uintptr_t)off + (uintptr_t)len + mask) & ~mask;
    /* Coalesce with every range it overlaps or touches. */
    for (int i = 0; i < self->nranges;) {
        range_t *r = &self->ranges[i];
        if (s <= r->end && r->start <= e) {
            if (r->start < s)
                s = r->start;
            if (r->end > e)
                e = r->end;
            self->ranges[i] = self->ranges[--self->nranges];
        } else {
            i++;
        }
    }
    if (self->nranges == MAX_RANGES && msync_drain(self) < 0)
        return -1;
    self->ranges[self->nranges].start = s;
    self->ranges[self->nranges].end = e;
    self->nranges++;
    return 0;
}

/* --- generic flush/drain through the chosen path ------------------------- */

static inline int do_flush(Mapping *self, Py_ssize_t off, Py_ssize_t len)
{
    if (self->flush_fn) {
        self->flush_fn(self->base + off, (size_t)len);
        return 0;
    }
    return msync_record(self, off, len);
}

static inline int do_drain(Mapping *self)
{
    if (self->fence_fn) {
        self->fence_fn();
        return 0;
    }
    return msync_drain(self);
}

/* Copy into the mapping without draining. Uses non-temporal stores for >= 256 B on
 * the CPU paths (the unaligned head and tail lines are copied and flushed). */
static void copy_nodrain(Mapping *self, char *dst, const char *src, size_t n)
{
#if PMK_X86
    if (self->flush_fn && n >= NT_THRESHOLD && nt_copy_best &&
        (src + n <= dst || dst + n <= src)) {
        size_t head = (CACHE_LINE - ((uintptr_t)dst & (CACHE_LINE - 1))) & (CACHE_LINE - 1);
        if (head) {
            memcpy(dst, src, head);
            self->flush_fn(dst, head);
            dst += head, src += head, n -= head;
        }
        size_t body = n & ~(size_t)(CACHE_LINE - 1);
        nt_copy_best(dst, src, body);
        dst += body, src += body, n -= body;
        if (n) {
            memcpy(dst, src, n);
            self->flush_fn(dst, n);
        }
        return;
    }
#endif
    memmove(dst, src, n);
}

static void fill_nodrain(Mapping *self, char *dst, int c, size_t n)
{
#if PMK_X86
    if (self->flush_fn && n >= NT_THRESHOLD && nt_fill_best) {
        size_t head = (CACHE_LINE - ((uintptr_t)dst & (CACHE_LINE - 1))) & (CACHE_LINE - 1);
        if (head) {
            memset(dst, c, head);
            self->flush_fn(dst, head);
            dst += head, n -= head;
        }
        size_t body = n & ~(size_t)(CACHE_LINE - 1);
        nt_fill_best(dst, c, body);
        dst += body, n -= body;
        if (n) {
            memset(dst, c, n);
            self->flush_fn(dst, n);
        }
        return;
    }
#endif
    memset(dst, c, n);
}

/* --- Python methods -------------------------------------------------------- */

static PyObject *M_flush(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off, len;
    if (enter(self, "flush", nargs, 2, 1) < 0 || get_range(self, args[0], args[1], &off, &len) < 0 ||
        do_flush(self, off, len) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *M_drain(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    if (enter(self, "drain", nargs, 0, 0) < 0 || do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *M_persist(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off, len;
    if (enter(self, "persist", nargs, 2, 1) < 0 || get_range(self, args[0], args[1], &off, &len) < 0 ||
        do_flush(self, off, len) < 0 || do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *M_read(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off, len;
    if (enter(self, "read", nargs, 2, 0) < 0 || get_range(self, args[0], args[1], &off, &len) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(self->base + off, len);
}

/* The (offset, data) methods: data as a C-contiguous buffer, its range in the mapping. The
 * caller releases `view` when this returns 0. */
static int data_args(Mapping *self, const char *fn, PyObject *const *args, Py_ssize_t nargs,
                     Py_buffer *view, Py_ssize_t *off, Py_ssize_t *len)
{
    if (enter(self, fn, nargs, 2, 1) < 0)
        return -1;
    if (PyObject_GetBuffer(args[1], view, PyBUF_C_CONTIGUOUS) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(ArgError ? ArgError : PyExc_TypeError,
                         "data must be a C-contiguous bytes-like object (bytes, bytearray, "
                         "memoryview, numpy array), got %s; for a Fortran-ordered or "
                         "strided numpy array pass numpy.ascontiguousarray(a)",
                         _PyType_Name(Py_TYPE(args[1])));
        }
        return -1;
    }
    PyObject *n = PyLong_FromSsize_t(view->len);
    int r = n ? get_range(self, args[0], n, off, len) : -1;
    Py_XDECREF(n);
    if (r < 0)
        PyBuffer_Release(view);
    return r;
}

static PyObject *M_write(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer v;
    Py_ssize_t off, len;
    if (data_args(self, "write", args, nargs, &v, &off, &len) < 0)
        return NULL;
    memmove(self->base + off, v.buf, (size_t)len);
    PyBuffer_Release(&v);
    Py_RETURN_NONE;
}

static PyObject *M_memcpy_persist(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer v;
    Py_ssize_t off, len;
    if (data_args(self, "memcpy_persist", args, nargs, &v, &off, &len) < 0)
        return NULL;
    int r = 0;
    char *dst = self->base + off;
    const char *src = (const char *)v.buf;
    if (self->flush_fn) {
        copy_nodrain(self, dst, src, (size_t)len);
        /* lines not written with NT stores were flushed by copy_nodrain; the rest: */
        if ((size_t)len < NT_THRESHOLD || !nt_copy_best || (src + len > dst && dst + len > src))
            self->flush_fn(dst, (size_t)len); /* short, no NT copy, or overlapping (memmove) */
    } else {
        memmove(dst, src, (size_t)len);
        r = msync_record(self, off, len);
    }
    PyBuffer_Release(&v);
    if (r < 0 || do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *M_memset_persist(Mapping *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t off, len;
    if (enter(self, "memset_persist", nargs, 3, 1) < 0 ||
        get_range(self, args[0], args[2], &off, &len) < 0)
        return NULL;
    PyObject *idx = PyBool_Check(args[1]) ? NULL : PyNumber_Index(args[1]);
    if (!idx && !PyErr_Occurred())
        PyErr_SetNone(PyExc_TypeError);
    if (!idx) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(ArgError, "memset value must be a byte (0-255), got %s",
                         _PyType_Name(Py_TYPE(args[1])));
        }
        return NULL;
    }
    int ov;
    long c = PyLong_AsLongAndOverflow(idx, &ov);
    if (ov || c < 0 || c > 255) {
        PyErr_Format(ArgError, "memset value must be a byte (0-255), got %S", idx);
        Py_DECREF(idx);
        return NULL;
    }
    Py_DECREF(idx);
    char *dst = self->base + off;
    if (self->flush_fn) {
        fill_nodrain(self, dst, (int)c, (size_t)len);
        if ((size_t)len < NT_THRESHOLD || !nt_fill_best)
            self->flush_fn(dst, (size_t)len);
    } else {
        memset(dst, (int)c, (size_t)len);
        if (msync_record(self, off, len) < 0)
            return NULL;
    }
    if (do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *M_pending(Mapping *self, PyObject *unused)
{
    (void)unused;
    PyObject *list = PyList_New(self->nranges);
    if (!list)
        return NULL;
    for (int i = 0; i < self->nranges; i++) {
        PyObject *t = Py_BuildValue("(nn)", (Py_ssize_t)self->ranges[i].start,
                                    (Py_ssize_t)(self->ranges[i].end - self->ranges[i].start));
        if (!t) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    if (PyList_Sort(list) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    return list;
}

static int method_available(int m)
{
    switch (m) {
    case M_MSYNC: return 1;
#if PMK_X86
    case M_NONE: return 1;
    case M_CLFLUSH: return has_clflush;
    case M_CLFLUSHOPT: return has_clflushopt;
    case M_CLWB: return has_clwb;
#endif
    default: return 0;
    }
}

static PyObject *M_attach(Mapping *self, PyObject *args)
{
    PyObject *obj, *name;
    const char *method;
    if (!PyArg_ParseTuple(args, "OsO:_attach", &obj, &method, &name))
        return NULL;
    if (self->base) {
        PyErr_SetString(PyExc_RuntimeError, "this mapping is already attached to its memory");
        return NULL;
    }
    int m;
    for (m = 0; m < M_COUNT; m++)
        if (strcmp(method, method_names[m]) == 0)
            break;
    if (m == M_COUNT) {
        PyErr_Format(ArgError ? ArgError : PyExc_ValueError,
                     "unknown flush method %s; use clwb, clflushopt, clflush, none or msync", method);
        return NULL;
    }
    if (!method_available(m)) {
        PyErr_Format(PyExc_RuntimeError, "this CPU cannot %s", method);
        return NULL;
    }
    if (PyObject_GetBuffer(obj, &self->buf, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    self->closed = 0;
    self->readonly = self->buf.readonly;
    self->base = (char *)self->buf.buf;
    self->size = self->buf.len;
    self->method = m;
    self->page = (size_t)sysconf(_SC_PAGESIZE);
    self->nranges = 0;
    self->flush_fn = NULL; /* msync: NULL pointers select the msync path */
    self->fence_fn = NULL;
#if PMK_X86
    static const flush_fn_t flushes[M_COUNT] = {
        [M_NONE] = flush_nothing, [M_CLFLUSH] = flush_clflush,
        [M_CLFLUSHOPT] = flush_clflushopt, [M_CLWB] = flush_clwb};
    if (m != M_MSYNC) {
        self->flush_fn = flushes[m];
        self->fence_fn = fence_sfence;
    }
#endif
    Py_INCREF(name);
    Py_XSETREF(self->name, name);
    Py_RETURN_NONE;
}

static PyObject *M_detach(Mapping *self, PyObject *unused)
{
    (void)unused;
    if (!self->closed) {
        self->closed = 1;
        self->nranges = 0;
        if (self->base)
            PyBuffer_Release(&self->buf);
        self->base = NULL;
    }
    Py_RETURN_NONE;
}

#define FASTCALL(fn) (PyCFunction)(void (*)(void))(fn), METH_FASTCALL

static PyMethodDef Mapping_methods[] = {
    {"flush", FASTCALL(M_flush),
     "flush(offset, length): start write-back of the range (CPU path: CLWB/CLFLUSHOPT/CLFLUSH "
     "every line; eADR: nothing; msync path: remember the page-aligned range)"},
    {"drain", FASTCALL(M_drain),
     "drain(): wait until every earlier flush is durable (SFENCE; msync path: msync(MS_SYNC) "
     "every remembered range, coalesced)"},
    {"persist", FASTCALL(M_persist), "persist(offset, length): flush, then drain"},
    {"write", FASTCALL(M_write),
     "write(offset, data): store C-contiguous bytes at offset (not durable until persisted)"},
    {"read", FASTCALL(M_read), "read(offset, length) -> bytes"},
    {"memcpy_persist", FASTCALL(M_memcpy_persist),
     "memcpy_persist(offset, data): copy (non-temporal stores from 256 bytes on the CPU path), "
     "then drain"},
    {"memset_persist", FASTCALL(M_memset_persist),
     "memset_persist(offset, value, length): fill with a byte (non-temporal from 256 bytes), "
     "then drain"},
    {"_pending", (PyCFunction)M_pending, METH_NOARGS,
     "msync path: the (offset, length) page ranges the next drain will sync"},
    {"_attach", (PyCFunction)M_attach, METH_VARARGS,
     "_attach(buffer, method, name): bind to the memory (a buffer export held until _detach) "
     "and fix the flush path"},
    {"_detach", (PyCFunction)M_detach, METH_NOARGS, "release the memory; later calls raise"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Mapping_get_msync_calls(Mapping *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->msync_calls);
}
static PyObject *Mapping_get_msync_bytes(Mapping *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->msync_bytes);
}

static PyGetSetDef Mapping_getset[] = {
    {"msync_calls", (getter)Mapping_get_msync_calls, NULL, "msync(2) calls made by drain", NULL},
    {"msync_bytes", (getter)Mapping_get_msync_bytes, NULL, "bytes msync(2)ed by drain", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Mapping_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    (void)args;
    (void)kw;
    Mapping *self = (Mapping *)type->tp_alloc(type, 0);
    if (self) {
        self->closed = 1; /* until _attach */
        Py_INCREF(Py_None);
        self->name = Py_None;
    }
    return (PyObject *)self;
}

static void Mapping_dealloc(Mapping *self)
{
    if (!self->closed && self->base)
        PyBuffer_Release(&self->buf);
    Py_XDECREF(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject MappingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pmemkit._flush.Mapping",
    .tp_basicsize = sizeof(Mapping),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The persistence and data methods of pmemkit.mapping.PmemMap, in C: flush, drain, "
              "persist, write, read, memcpy_persist, memset_persist over one mapping, with the "
              "flush path fixed when it is attached (_attach). PmemMap derives from it.",
    .tp_new = Mapping_new,
    .tp_dealloc = (destructor)Mapping_dealloc,
    .tp_methods = Mapping_methods,
    .tp_getset = Mapping_getset,
};

/* ----------------------------------------------------------------- module ---- */

static PyObject *mod_configure(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *closed, *arg, *range, *readonly;
    if (!PyArg_ParseTuple(args, "OOOO", &closed, &arg, &range, &readonly))
        return NULL;
    Py_INCREF(closed);
    Py_INCREF(arg);
    Py_INCREF(range);
    Py_INCREF(readonly);
    Py_XSETREF(ClosedError, closed);
    Py_XSETREF(ArgError, arg);
    Py_XSETREF(RangeErr, range);
    Py_XSETREF(ReadOnlyErr, readonly);
    Py_RETURN_NONE;
}

static PyObject *mod_cpu_features(PyObject *m, PyObject *unused)
{
    (void)m;
    (void)unused;
    return Py_BuildValue("{s:O,s:O,s:O,s:O,s:O,s:O,s:O}",
                         "clflush", has_clflush ? Py_True : Py_False,
                         "clflushopt", has_clflushopt ? Py_True : Py_False,
                         "clwb", has_clwb ? Py_True : Py_False,
                         "sse2", has_sse2 ? Py_True : Py_False,
                         "avx", has_avx ? Py_True : Py_False,
                         "avx2", has_avx2 ? Py_True : Py_False,
                         "avx512f", has_avx512f ? Py_True : Py_False);
}

static PyObject *mod_methods(PyObject *m, PyObject *unused)
{
    (void)m;
    (void)unused;
    PyObject *list = PyList_New(0);
    if (!list)
        return NULL;
    for (int i = 0; i < M_COUNT; i++) {
        if (!method_available(i))
            continue;
        PyObject *s = PyUnicode_FromString(method_names[i]);
        if (!s || PyList_Append(list, s) < 0) {
            Py_XDECREF(s);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(s);
    }
    return list;
}

static PyObject *mod_nt_copy_kind(PyObject *m, PyObject *unused)
{
    (void)m;
    (void)unused;
#if PMK_X86
    if (nt_copy_best == nt_lines_avx512)
        return PyUnicode_FromString("avx512f");
    if (nt_copy_best == nt_lines_avx)
        return PyUnicode_FromString("avx");
    if (nt_copy_best == nt_lines_sse2)
        return PyUnicode_FromString("sse2");
#endif
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", mod_configure, METH_VARARGS,
     "configure(ClosedMappingError, InvalidArgumentError, OutOfRangeError, ReadOnlyError): "
     "the exceptions the methods raise, set by pmemkit.mapping"},
    {"cpu_features", mod_cpu_features, METH_NOARGS, "CPU features from cpuid, as a dict of bools"},
    {"methods", mod_methods, METH_NOARGS, "flush methods this build and CPU can perform"},
    {"nt_copy_kind", mod_nt_copy_kind, METH_NOARGS, "instruction set of the non-temporal copy"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "pmemkit._flush",
    "Native persistence primitives (cache-line flush, fence, non-temporal copy, msync).",
    -1, module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__flush(void)
{
    detect_cpu();
#if PMK_X86
    /* Like libpmem 1.x: 256-bit AVX stores by default; AVX-512 with PMEMKIT_AVX512F=1. */
    const char *e = getenv(AVX512F_ENV);
    if (e && strcmp(e, "1") == 0 && has_avx512f) {
        nt_copy_best = nt_lines_avx512;
        nt_fill_best = nt_fill_avx;
    } else if (has_avx) {
        nt_copy_best = nt_lines_avx;
        nt_fill_best = nt_fill_avx;
    } else if (has_sse2) {
        nt_copy_best = nt_lines_sse2;
        nt_fill_best = nt_fill_sse2;
    }
#endif
    if (PyType_Ready(&MappingType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&MappingType);
    if (PyModule_AddObject(m, "Mapping", (PyObject *)&MappingType) < 0) {
        Py_DECREF(&MappingType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "NT_THRESHOLD", NT_THRESHOLD);
    PyModule_AddIntConstant(m, "CACHE_LINE", CACHE_LINE);
    PyModule_AddStringConstant(m, "AVX512F_ENV", AVX512F_ENV);
    return m;
}
