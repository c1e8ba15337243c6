/*
 * pmemkit._flush - native persistence primitives for pmemkit.mapping.
 *
 * A Flusher holds the address and size of one mapping (through a buffer export of
 * the mmap object, so the memory cannot be unmapped under it) and the persistence
 * path chosen ONCE when it is made (libpmem2 style: function pointers, no branch on
 * the method in the hot path):
 *
 *   method     flush                         drain      copies >= 256 B
 *   clwb       CLWB every line               SFENCE     non-temporal stores
 *   clflushopt CLFLUSHOPT every line         SFENCE     non-temporal stores
 *   clflush    CLFLUSH every line            SFENCE     non-temporal stores
 *   none       nothing (eADR)                SFENCE     non-temporal stores
 *   msync      remember page-aligned range   msync(MS_SYNC) of the remembered ranges
 *
 * The hot methods (flush, drain, persist, memcpy_persist, memset_persist, write,
 * read) are METH_FASTCALL and are bound as instance attributes of PmemMap, so a call
 * from Python costs one vectorcall. Argument errors are raised by calling back into
 * pmemkit.region.check_range so the messages are the same as everywhere else.
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
#define MAX_RANGES 16

enum { M_MSYNC = 0, M_NONE, M_CLFLUSH, M_CLFLUSHOPT, M_CLWB, M_COUNT };
static const char *const method_names[M_COUNT] = {"msync", "none", "clflush", "clflushopt", "clwb"};

/* Exception classes and the range checker, handed over by pmemkit.mapping. */
static PyObject *ClosedError = NULL;
static PyObject *ArgError = NULL;
static PyObject *ReadOnlyErr = NULL;
static PyObject *check_range_fn = NULL;

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

static void flush_nothing(char *p, size_t n) { (void)p; (void)n; }
#if !PMK_X86
static void fence_nothing(void) { __asm__ volatile("" ::: "memory"); }
#endif

typedef void (*flush_fn_t)(char *, size_t);
typedef void (*fence_fn_t)(void);
typedef void (*nt_copy_fn_t)(char *, const char *, size_t);
typedef void (*nt_fill_fn_t)(char *, int, size_t);

static nt_copy_fn_t nt_copy_best;
static nt_fill_fn_t nt_fill_best;

/* ---------------------------------------------------------------- Flusher ---- */

typedef struct {
    uintptr_t start, end; /* byte offsets into the mapping, page aligned */
} range_t;

typedef struct {
    PyObject_HEAD
    Py_buffer buf;
    char *base;
    Py_ssize_t size;
    int method;
    int closed;
    int readonly; /* mapped without PROT_WRITE: stores, flushes and persists raise */
    flush_fn_t flush_fn;
    fence_fn_t fence_fn;
    size_t page;
    int nranges;
    range_t ranges[MAX_RANGES];
    unsigned long long msync_calls;
    unsigned long long msync_bytes;
    PyObject *name; /* for error messages */
} Flusher;

static int raise_closed(Flusher *self)
{
    PyErr_Format(ClosedError ? ClosedError : PyExc_ValueError,
                 "PmemMap for %S is closed; map it again to use it", self->name);
    return -1;
}

#define CHECK_OPEN(self)                   \
    do {                                   \
        if ((self)->closed) {              \
            raise_closed(self);            \
            return NULL;                   \
        }                                  \
    } while (0)

static int raise_readonly(Flusher *self)
{
    PyErr_Format(ReadOnlyErr ? ReadOnlyErr : PyExc_TypeError,
                 "PmemMap for %S is read-only (writable=False): it cannot be stored to, "
                 "flushed or persisted; open it writable to change it", self->name);
    return -1;
}

/* Open and writable: what every store, flush and persist needs. */
#define CHECK_WRITABLE(self)               \
    do {                                   \
        CHECK_OPEN(self);                  \
        if ((self)->readonly) {            \
            raise_readonly(self);          \
            return NULL;                   \
        }                                  \
    } while (0)

/* Slow path: let pmemkit.region.check_range raise (or normalise index-like objects). */
static int range_slow(Flusher *self, PyObject *o, PyObject *l, Py_ssize_t *off, Py_ssize_t *len)
{
    if (check_range_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pmemkit._flush is not configured");
        return -1;
    }
    PyObject *size = PyLong_FromSsize_t(self->size);
    if (!size)
        return -1;
    PyObject *res = PyObject_CallFunctionObjArgs(check_range_fn, o, l, size, NULL);
    Py_DECREF(size);
    if (!res)
        return -1;
    Py_ssize_t a, b;
    int ok = PyArg_ParseTuple(res, "nn", &a, &b);
    Py_DECREF(res);
    if (!ok)
        return -1;
    if (a < 0 || b < 0 || a > self->size || b > self->size - a) {
        PyErr_SetString(ArgError ? ArgError : PyExc_ValueError, "range check disagreed");
        return -1;
    }
    *off = a;
    *len = b;
    return 0;
}

static inline int get_range(Flusher *self, PyObject *o, PyObject *l, Py_ssize_t *off, Py_ssize_t *len)
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

static int wrong_nargs(const char *fn, Py_ssize_t want, Py_ssize_t got)
{
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", fn, want, got);
    return -1;
}

/* --- msync method: flush records, drain syncs ------------------------------ */

static int msync_drain(Flusher *self)
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

static int msync_record(Flusher *self, Py_ssize_t off, Py_ssize_t len)
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

static inline int do_flush(Flusher *self, Py_ssize_t off, Py_ssize_t len)
{
    if (self->flush_fn) {
        self->flush_fn(self->base + off, (size_t)len);
        return 0;
    }
    return msync_record(self, off, len);
}

static inline int do_drain(Flusher *self)
{
    if (self->fence_fn) {
        self->fence_fn();
        return 0;
    }
    return msync_drain(self);
}

/* Copy into the mapping without draining. Uses non-temporal stores for >= 256 B on
 * the CPU paths (the unaligned head and tail lines are copied and flushed). */
static void copy_nodrain(Flusher *self, char *dst, const char *src, size_t n)
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

static void fill_nodrain(Flusher *self, char *dst, int c, size_t n)
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

static PyObject *F_flush(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_WRITABLE(self);
    Py_ssize_t off, len;
    if (nargs != 2)
        return wrong_nargs("flush", 2, nargs), NULL;
    if (get_range(self, args[0], args[1], &off, &len) < 0)
        return NULL;
    if (do_flush(self, off, len) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *F_drain(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)args;
    CHECK_OPEN(self);
    if (nargs != 0)
        return wrong_nargs("drain", 0, nargs), NULL;
    if (do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *F_persist(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_WRITABLE(self);
    Py_ssize_t off, len;
    if (nargs != 2)
        return wrong_nargs("persist", 2, nargs), NULL;
    if (get_range(self, args[0], args[1], &off, &len) < 0)
        return NULL;
    if (do_flush(self, off, len) < 0 || do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static int get_data(PyObject *data, Py_buffer *view)
{
    if (PyObject_GetBuffer(data, view, PyBUF_C_CONTIGUOUS) < 0) {
        if (PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_BufferError) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            PyErr_Format(ArgError ? ArgError : PyExc_TypeError,
                         "data must be a C-contiguous bytes-like object (bytes, bytearray, "
                         "memoryview, numpy array), got %.200s; for a Fortran-ordered or "
                         "strided numpy array pass numpy.ascontiguousarray(a)",
                         Py_TYPE(data)->tp_name);
        }
        return -1;
    }
    return 0;
}

static PyObject *F_write(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_WRITABLE(self);
    if (nargs != 2)
        return wrong_nargs("write", 2, nargs), NULL;
    Py_buffer v;
    if (get_data(args[1], &v) < 0)
        return NULL;
    Py_ssize_t off, len;
    PyObject *n = PyLong_FromSsize_t(v.len);
    int r = n ? get_range(self, args[0], n, &off, &len) : -1;
    Py_XDECREF(n);
    if (r == 0)
        memmove(self->base + off, v.buf, (size_t)len);
    PyBuffer_Release(&v);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *F_read(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_OPEN(self);
    Py_ssize_t off, len;
    if (nargs != 2)
        return wrong_nargs("read", 2, nargs), NULL;
    if (get_range(self, args[0], args[1], &off, &len) < 0)
        return NULL;
    return PyBytes_FromStringAndSize(self->base + off, len);
}

static PyObject *F_memcpy_persist(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_WRITABLE(self);
    if (nargs != 2)
        return wrong_nargs("memcpy_persist", 2, nargs), NULL;
    Py_buffer v;
    if (get_data(args[1], &v) < 0)
        return NULL;
    Py_ssize_t off, len;
    PyObject *n = PyLong_FromSsize_t(v.len);
    int r = n ? get_range(self, args[0], n, &off, &len) : -1;
    Py_XDECREF(n);
    if (r == 0) {
        char *dst = self->base + off;
        if (self->flush_fn) {
            copy_nodrain(self, dst, (const char *)v.buf, (size_t)len);
            /* lines not written with NT stores were flushed by copy_nodrain; the rest: */
            if ((size_t)len < NT_THRESHOLD || !nt_copy_best)
                self->flush_fn(dst, (size_t)len);
            else if (((const char *)v.buf + len > dst && dst + len > (const char *)v.buf))
                self->flush_fn(dst, (size_t)len); /* overlapping: plain memmove was used */
        } else {
            memmove(dst, v.buf, (size_t)len);
            r = msync_record(self, off, len);
        }
    }
    PyBuffer_Release(&v);
    if (r < 0 || do_drain(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *F_memset_persist(Flusher *self, PyObject *const *args, Py_ssize_t nargs)
{
    CHECK_WRITABLE(self);
    if (nargs != 3)
        return wrong_nargs("memset_persist", 3, nargs), NULL;
    Py_ssize_t off, len;
    if (get_range(self, args[0], args[2], &off, &len) < 0)
        return NULL;
    PyObject *idx = PyBool_Check(args[1]) ? NULL : PyNumber_Index(args[1]);
    if (!idx && !PyErr_Occurred())
        PyErr_SetNone(PyExc_TypeError);
    if (!idx) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(ArgError, "memset value must be a byte (0-255), got %.200s",
                         Py_TYPE(args[1])->tp_name);
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

static PyObject *F_pending(Flusher *self, PyObject *unused)
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

static PyObject *F_close(Flusher *self, PyObject *unused)
{
    (void)unused;
    if (!self->closed) {
        self->closed = 1;
        self->nranges = 0;
        PyBuffer_Release(&self->buf);
        self->base = NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Flusher_methods[] = {
    {"flush", (PyCFunction)(void (*)(void))F_flush, METH_FASTCALL, "flush(offset, length)"},
    {"drain", (PyCFunction)(void (*)(void))F_drain, METH_FASTCALL, "drain()"},
    {"persist", (PyCFunction)(void (*)(void))F_persist, METH_FASTCALL, "persist(offset, length)"},
    {"write", (PyCFunction)(void (*)(void))F_write, METH_FASTCALL, "write(offset, data)"},
    {"read", (PyCFunction)(void (*)(void))F_read, METH_FASTCALL, "read(offset, length) -> bytes"},
    {"memcpy_persist", (PyCFunction)(void (*)(void))F_memcpy_persist, METH_FASTCALL,
     "memcpy_persist(offset, data)"},
    {"memset_persist", (PyCFunction)(void (*)(void))F_memset_persist, METH_FASTCALL,
     "memset_persist(offset, value, length)"},
    {"pending", (PyCFunction)F_pending, METH_NOARGS,
     "msync method: the (offset, length) page ranges the next drain will sync"},
    {"close", (PyCFunction)F_close, METH_NOARGS, "release the mapping's buffer"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Flusher_get_method(Flusher *self, void *c)
{
    (void)c;
    return PyUnicode_FromString(method_names[self->method]);
}
static PyObject *Flusher_get_closed(Flusher *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->closed);
}
static PyObject *Flusher_get_msync_calls(Flusher *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->msync_calls);
}
static PyObject *Flusher_get_msync_bytes(Flusher *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->msync_bytes);
}
static PyObject *Flusher_get_address(Flusher *self, void *c)
{
    (void)c;
    return PyLong_FromVoidPtr(self->base);
}

static PyGetSetDef Flusher_getset[] = {
    {"method", (getter)Flusher_get_method, NULL, "the flush method chosen at creation", NULL},
    {"closed", (getter)Flusher_get_closed, NULL, "whether close() was called", NULL},
    {"msync_calls", (getter)Flusher_get_msync_calls, NULL, "msync(2) calls made by drain", NULL},
    {"msync_bytes", (getter)Flusher_get_msync_bytes, NULL, "bytes msync(2)ed by drain", NULL},
    {"address", (getter)Flusher_get_address, NULL, "base address of the mapping (0 once closed)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

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

static int Flusher_init(Flusher *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"buffer", "method", "name", NULL};
    PyObject *obj, *name = Py_None;
    const char *method;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os|O", kwlist, &obj, &method, &name))
        return -1;
    if (self->base || self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Flusher is already initialised");
        return -1;
    }
    int m;
    for (m = 0; m < M_COUNT; m++)
        if (strcmp(method, method_names[m]) == 0)
            break;
    if (m == M_COUNT) {
        PyErr_Format(ArgError ? ArgError : PyExc_ValueError,
                     "unknown flush method %s; use clwb, clflushopt, clflush, none or msync", method);
        return -1;
    }
    if (!method_available(m)) {
        PyErr_Format(PyExc_RuntimeError, "this CPU cannot %s", method);
        return -1;
    }
    if (PyObject_GetBuffer(obj, &self->buf, PyBUF_C_CONTIGUOUS) < 0)
        return -1;
    self->readonly = self->buf.readonly;
    self->base = (char *)self->buf.buf;
    self->size = self->buf.len;
    self->method = m;
    self->page = (size_t)sysconf(_SC_PAGESIZE);
    self->nranges = 0;
    self->flush_fn = NULL;
    self->fence_fn = NULL;
    switch (m) {
#if PMK_X86
    case M_CLWB: self->flush_fn = flush_clwb; self->fence_fn = fence_sfence; break;
    case M_CLFLUSHOPT: self->flush_fn = flush_clflushopt; self->fence_fn = fence_sfence; break;
    case M_CLFLUSH: self->flush_fn = flush_clflush; self->fence_fn = fence_sfence; break;
    case M_NONE: self->flush_fn = flush_nothing; self->fence_fn = fence_sfence; break;
#else
    case M_NONE: self->flush_fn = flush_nothing; self->fence_fn = fence_nothing; break;
#endif
    default: break; /* msync: NULL pointers select the msync path */
    }
    Py_INCREF(name);
    Py_XSETREF(self->name, name);
    return 0;
}

static void Flusher_dealloc(Flusher *self)
{
    if (!self->closed && self->base)
        PyBuffer_Release(&self->buf);
    Py_XDECREF(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject FlusherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pmemkit._flush.Flusher",
    .tp_basicsize = sizeof(Flusher),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Flusher(buffer, method, name=None): persistence primitives over a buffer "
              "(read-only buffers allow reads only), with the flush path fixed at creation",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Flusher_init,
    .tp_dealloc = (destructor)Flusher_dealloc,
    .tp_methods = Flusher_methods,
    .tp_getset = Flusher_getset,
};

/* ----------------------------------------------------------------- module ---- */

static PyObject *mod_configure(PyObject *m, PyObject *args)
{
    (void)m;
    PyObject *closed, *arg, *readonly, *check;
    if (!PyArg_ParseTuple(args, "OOOO", &closed, &arg, &readonly, &check))
        return NULL;
    Py_INCREF(closed);
    Py_INCREF(arg);
    Py_INCREF(readonly);
    Py_INCREF(check);
    Py_XSETREF(ClosedError, closed);
    Py_XSETREF(ArgError, arg);
    Py_XSETREF(ReadOnlyErr, readonly);
    Py_XSETREF(check_range_fn, check);
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
     "configure(ClosedMappingError, InvalidArgumentError, ReadOnlyError, check_range): "
     "set by pmemkit.mapping"},
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
    const char *e = getenv("PMEMKIT_AVX512F");
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
    if (PyType_Ready(&FlusherType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m)
        return NULL;
    Py_INCREF(&FlusherType);
    if (PyModule_AddObject(m, "Flusher", (PyObject *)&FlusherType) < 0) {
        Py_DECREF(&FlusherType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "NT_THRESHOLD", NT_THRESHOLD);
    PyModule_AddIntConstant(m, "CACHE_LINE", CACHE_LINE);
    return m;
}
