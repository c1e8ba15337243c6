/*
 * pmemkit.crash._dirty - which pages of a memory range were written, found with mprotect.
 *
 * A Tracker owns a page-aligned anonymous mapping (it exports it through the buffer
 * protocol, so memoryviews and numpy arrays alias it). While tracking, its pages are
 * read-only; the first write to a page faults, the SIGSEGV handler saves the page's
 * old contents in a snapshot area (reserved, not committed: only written pages take
 * memory), records the page and makes it writable. collect() re-protects the written
 * pages and returns the runs of 8-byte units that differ from their snapshots: the
 * cost follows the pages written, not the size of the range.
 *
 * Faults outside every tracked range (or not writes) go to the handler that was
 * installed before ours, so Python's faulthandler and other libraries still see them.
 * The kernel cannot write into a protected page on the process's behalf (read(2)
 * into a tracked buffer fails with EFAULT): write through the region or a view.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define MAX_TRACKED 256
#define UNIT 8

typedef struct {
    PyObject_HEAD
    char *base;              /* the tracked memory (page aligned) */
    char *snap;              /* snapshot area, same size, reserved with MAP_NORESERVE */
    Py_ssize_t size;         /* bytes exported */
    Py_ssize_t mapped;       /* bytes mapped (whole pages) */
    Py_ssize_t npages;
    volatile unsigned char *state;   /* per page: 0 clean/protected, 1 saving, 2 dirty/writable */
    Py_ssize_t *dirty;       /* dirty page numbers, in fault order */
    volatile Py_ssize_t ndirty;
    int tracking;
    int slot;                /* index in the registry, -1 if not registered */
    Py_ssize_t exports;
} Tracker;

/* The registry the signal handler reads: a fixed array, written with the GIL held. */
static Tracker *volatile registry[MAX_TRACKED];
static struct sigaction previous;
static int installed = 0;
static volatile sig_atomic_t chained_fault = 0;
static long page_size = 4096;

static void chain(int sig, siginfo_t *info, void *ctx)
{
    if (info->si_code <= 0 && chained_fault) {
        /* the previous handler re-raised after reporting: let the signal kill us */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (info->si_code > 0)
        chained_fault = 1;
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, ctx);
    } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
        /* a real fault: restore the default action; the instruction faults again and kills */
        signal(sig, SIG_DFL);
        if (info->si_code <= 0)
            raise(sig);
    } else {
        previous.sa_handler(sig);
    }
}

static int is_write_fault(void *ctx)
{
#if defined(__x86_64__) && defined(REG_ERR)
    ucontext_t *uc = (ucontext_t *)ctx;
    return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#else
    (void)ctx;
    return 1;
#endif
}

static void on_segv(int sig, siginfo_t *info, void *ctx)
{
    if (info->si_code > 0 && is_write_fault(ctx)) {
        char *addr = (char *)info->si_addr;
        for (int i = 0; i < MAX_TRACKED; i++) {
            Tracker *t = registry[i];
            if (t == NULL || addr < t->base || addr >= t->base + t->mapped)
                continue;
            if (!t->tracking)
                break;
            int saved = errno;
            Py_ssize_t page = (addr - t->base) / page_size;
            char *p = t->base + page * page_size;
            if (__sync_bool_compare_and_swap(&t->state[page], 0, 1)) {
                memcpy(t->snap + page * page_size, p, (size_t)page_size);
                Py_ssize_t n = __sync_fetch_and_add(&t->ndirty, 1);
                t->dirty[n] = page;
                mprotect(p, (size_t)page_size, PROT_READ | PROT_WRITE);
                __sync_synchronize();
                t->state[page] = 2;
            } else {
                while (t->state[page] == 1)
                    ;   /* another thread is saving this page: wait, then retry the store */
                mprotect(p, (size_t)page_size, PROT_READ | PROT_WRITE);
            }
            errno = saved;
            return;
        }
    }
    chain(sig, info, ctx);
}

static int install_handler(void)
{
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) != 0)
        return -1;
    if (installed && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_segv)
        return 0;
    /* first time, or someone installed a handler over ours: go on top, chain to it */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous) != 0)
        return -1;
    installed = 1;
    return 0;
}

static int unprotect_all(Tracker *self)
{
    if (self->tracking && mprotect(self->base, (size_t)self->mapped, PROT_READ | PROT_WRITE) != 0)
        return -1;
    self->tracking = 0;
    return 0;
}

static void unregister(Tracker *self)
{
    if (self->slot >= 0) {
        registry[self->slot] = NULL;
        __sync_synchronize();
        self->slot = -1;
    }
}

static PyObject *Tracker_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "n", kwlist, &size))
        return NULL;
    if (size <= 0) {
        PyErr_Format(PyExc_ValueError, "tracked size must be positive, got %zd", size);
        return NULL;
    }
    Tracker *self = (Tracker *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->slot = -1;
    self->size = size;
    self->npages = (size + page_size - 1) / page_size;
    self->mapped = self->npages * page_size;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
    void *base = mmap(NULL, (size_t)self->mapped, PROT_READ | PROT_WRITE, flags, -1, 0);
    void *snap = base == MAP_FAILED ? MAP_FAILED
        : mmap(NULL, (size_t)self->mapped, PROT_READ | PROT_WRITE, flags, -1, 0);
    self->state = PyMem_Calloc((size_t)self->npages, 1);
    self->dirty = PyMem_Malloc((size_t)self->npages * sizeof(Py_ssize_t));
    if (base == MAP_FAILED || snap == MAP_FAILED || !self->state || !self->dirty) {
        if (base != MAP_FAILED)
            munmap(base, (size_t)self->mapped);
        if (snap != MAP_FAILED)
            munmap(snap, (size_t)self->mapped);
        self->base = self->snap = NULL;
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->base = base;
    self->snap = snap;
    return (PyObject *)self;
}

static void Tracker_dealloc(Tracker *self)
{
    unregister(self);
    if (self->base)
        munmap(self->base, (size_t)self->mapped);
    if (self->snap)
        munmap(self->snap, (size_t)self->mapped);
    PyMem_Free((void *)self->state);
    PyMem_Free(self->dirty);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Tracker_getbuffer(Tracker *self, Py_buffer *view, int flags)
{
    if (self->base == NULL) {
        PyErr_SetString(PyExc_ValueError, "tracker has no memory");
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->size, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void Tracker_releasebuffer(Tracker *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyBufferProcs Tracker_as_buffer = {
    (getbufferproc)Tracker_getbuffer,
    (releasebufferproc)Tracker_releasebuffer,
};

/* start(): from now on, record every page written. */
static PyObject *Tracker_start(Tracker *self, PyObject *unused)
{
    (void)unused;
    if (self->tracking)
        Py_RETURN_NONE;
    if (install_handler() != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (self->slot < 0) {
        for (int i = 0; i < MAX_TRACKED; i++) {
            if (registry[i] == NULL) {
                self->slot = i;
                break;
            }
        }
        if (self->slot < 0) {
            PyErr_Format(PyExc_RuntimeError, "more than %d regions are tracked at once", MAX_TRACKED);
            return NULL;
        }
    }
    memset((void *)self->state, 0, (size_t)self->npages);
    self->ndirty = 0;
    self->tracking = 1;
    registry[self->slot] = self;
    __sync_synchronize();
    if (mprotect(self->base, (size_t)self->mapped, PROT_READ) != 0) {
        self->tracking = 0;
        unregister(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static int cmp_pages(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return (x > y) - (x < y);
}

static int append_run(PyObject *out, Py_ssize_t s, Py_ssize_t e)
{
    PyObject *t = Py_BuildValue("(nn)", s, e);
    if (t == NULL)
        return -1;
    int r = PyList_Append(out, t);
    Py_DECREF(t);
    return r;
}

/* collect(): runs [start, end) of changed 8-byte units (bytes, address order) since the
 * last collect; the written pages are protected again. */
static PyObject *Tracker_collect(Tracker *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyList_New(0);
    if (out == NULL || !self->tracking)
        return out;
    Py_ssize_t n = self->ndirty;
    qsort(self->dirty, (size_t)n, sizeof(Py_ssize_t), cmp_pages);
    Py_ssize_t run_s = -1, run_e = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t page = self->dirty[i];
        char *p = self->base + page * page_size;
        if (mprotect(p, (size_t)page_size, PROT_READ) != 0) {
            Py_DECREF(out);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        self->state[page] = 0;
        const char *q = self->snap + page * page_size;
        if (memcmp(p, q, (size_t)page_size) == 0)
            continue;
        for (Py_ssize_t u = 0; u < page_size; u += UNIT) {
            if (memcmp(p + u, q + u, UNIT) == 0)
                continue;
            Py_ssize_t at = page * page_size + u;
            if (at == run_e) {
                run_e = at + UNIT;
                continue;
            }
            if (run_s >= 0 && append_run(out, run_s, run_e) < 0) {
                Py_DECREF(out);
                return NULL;
            }
            run_s = at;
            run_e = at + UNIT;
        }
    }
    self->ndirty = 0;
    if (run_s >= 0 && append_run(out, run_s, run_e) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* resync(offset, length): the range was recorded by other means; forget its changes. */
static PyObject *Tracker_resync(Tracker *self, PyObject *args)
{
    Py_ssize_t off, len;
    if (!PyArg_ParseTuple(args, "nn", &off, &len))
        return NULL;
    if (off < 0 || len < 0 || off + len > self->size) {
        PyErr_SetString(PyExc_ValueError, "range outside the tracked memory");
        return NULL;
    }
    if (!self->tracking || len == 0)
        Py_RETURN_NONE;
    for (Py_ssize_t page = off / page_size; page <= (off + len - 1) / page_size; page++) {
        if (self->state[page] != 2)
            continue;
        Py_ssize_t s = page * page_size, e = s + page_size;
        if (s < off)
            s = off;
        if (e > off + len)
            e = off + len;
        memcpy(self->snap + s, self->base + s, (size_t)(e - s));
    }
    Py_RETURN_NONE;
}

static PyObject *Tracker_close(Tracker *self, PyObject *unused)
{
    (void)unused;
    if (self->base && unprotect_all(self) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    unregister(self);
    Py_RETURN_NONE;
}

static PyObject *Tracker_get_dirty(Tracker *self, void *c)
{
    (void)c;
    return PyLong_FromSsize_t(self->tracking ? self->ndirty : 0);
}

static PyObject *Tracker_get_tracking(Tracker *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->tracking);
}

static PyMethodDef Tracker_methods[] = {
    {"start", (PyCFunction)Tracker_start, METH_NOARGS, "Protect every page; record writes from now on."},
    {"collect", (PyCFunction)Tracker_collect, METH_NOARGS,
     "Runs (start, end) of changed 8-byte units since the last collect; protect the pages again."},
    {"resync", (PyCFunction)Tracker_resync, METH_VARARGS,
     "resync(offset, length): take the range's current contents as already seen."},
    {"close", (PyCFunction)Tracker_close, METH_NOARGS,
     "Stop tracking; the memory stays valid while any view of it lives."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tracker_getset[] = {
    {"dirty_pages", (getter)Tracker_get_dirty, NULL, "pages written since the last collect", NULL},
    {"tracking", (getter)Tracker_get_tracking, NULL, "whether writes are being recorded", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TrackerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pmemkit.crash._dirty.Tracker",
    .tp_basicsize = sizeof(Tracker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Tracker(size): page-aligned memory whose written pages are recorded with mprotect.",
    .tp_new = Tracker_new,
    .tp_dealloc = (destructor)Tracker_dealloc,
    .tp_methods = Tracker_methods,
    .tp_getset = Tracker_getset,
    .tp_as_buffer = &Tracker_as_buffer,
};

static int all_zero(const char *p, Py_ssize_t n)
{
    static const char zeros[65536];
    while (n > 0) {
        Py_ssize_t k = n < (Py_ssize_t)sizeof zeros ? n : (Py_ssize_t)sizeof zeros;
        if (memcmp(p, zeros, (size_t)k) != 0)
            return 0;
        p += k;
        n -= k;
    }
    return 1;
}

/* Mark in `alloc` the pages of fd's first `len` bytes that hold data (SEEK_DATA / SEEK_HOLE);
 * every page when the file system does not report holes. */
static void allocated_pages(int fd, Py_ssize_t len, unsigned char *alloc, Py_ssize_t npages)
{
    off_t off = 0;
    while (off < len) {
        off_t d = lseek(fd, off, SEEK_DATA);
        if (d < 0) {
            if (errno != ENXIO)
                memset(alloc, 1, (size_t)npages);   /* unknown: every page may hold data */
            return;
        }
        if (d >= len)
            return;
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0 || h > len)
            h = len;
        for (Py_ssize_t p = d / page_size; p <= (h - 1) / page_size; p++)
            alloc[p] = 1;
        off = h > d ? h : d + page_size;
    }
}

/* sync_sparse(fd, file_map, image, nonzero, pages, holes) -> pages copied.
 *
 * Make the file (descriptor fd, mapped shared as file_map) equal to image, where the file
 * differs only in: the pages listed in `pages` (None: any page), the pages holding data
 * (SEEK_DATA: whatever another process wrote through its own mapping, even zeros, allocates
 * them) and the pages marked in `nonzero` (1 where the file held data after the last sync;
 * a page someone punched out is among them). Zero pages are never written into holes; a data
 * page that must become zero is zeroed in place. Without `holes` no hole is looked for: every
 * page counts as data (for small files, where reading a hole through the map costs nothing). */
static PyObject *mod_sync_sparse(PyObject *m, PyObject *args)
{
    (void)m;
    int fd;
    Py_buffer map, img, nz;
    PyObject *pages;
    int holes;
    if (!PyArg_ParseTuple(args, "iw*y*w*Op", &fd, &map, &img, &nz, &pages, &holes))
        return NULL;
    PyObject *out = NULL;
    unsigned char *cand = NULL, *alloc = NULL;
    Py_ssize_t len = img.len, npages = (len + page_size - 1) / page_size, copied = 0;
    if (map.len != len || nz.len != npages) {
        PyErr_SetString(PyExc_ValueError,
                        "the file's map must be as long as the image, nonzero one byte a page");
        goto done;
    }
    cand = PyMem_Calloc((size_t)npages + 1, 1);
    alloc = PyMem_Calloc((size_t)npages + 1, 1);
    if (cand == NULL || alloc == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (pages == Py_None) {
        memset(cand, 1, (size_t)npages);
    } else {
        PyObject *it = PyObject_GetIter(pages), *item;
        if (it == NULL)
            goto done;
        while ((item = PyIter_Next(it)) != NULL) {
            Py_ssize_t p = PyLong_AsSsize_t(item);
            Py_DECREF(item);
            if (p == -1 && PyErr_Occurred())
                break;
            if (p >= 0 && p < npages)
                cand[p] = 1;
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto done;
    }
    if (holes)
        allocated_pages(fd, len, alloc, npages);
    else
        memset(alloc, 1, (size_t)npages);
    char *f = map.buf;
    const char *g = img.buf;
    unsigned char *state = nz.buf;
    for (Py_ssize_t p = 0; p < npages; p++) {
        if (!(cand[p] | alloc[p] | state[p]))
            continue;
        Py_ssize_t s = p * page_size, n = len - s < page_size ? len - s : page_size;
        if (all_zero(g + s, n)) {
            state[p] = 0;
            if (!alloc[p] || all_zero(f + s, n))
                continue;   /* a hole, or an allocated zero page: already equal */
            memset(f + s, 0, (size_t)n);    /* kept allocated: a page that held data often will
                                               again, and punching it out costs more than this */
            copied++;
            continue;
        }
        state[p] = 1;
        if (alloc[p] && memcmp(f + s, g + s, (size_t)n) == 0)
            continue;
        memcpy(f + s, g + s, (size_t)n);
        copied++;
    }
    out = PyLong_FromSsize_t(copied);
done:
    PyMem_Free(cand);
    PyMem_Free(alloc);
    PyBuffer_Release(&map);
    PyBuffer_Release(&img);
    PyBuffer_Release(&nz);
    return out;
}

static PyMethodDef module_methods[] = {
    {"sync_sparse", mod_sync_sparse, METH_VARARGS,
     "sync_sparse(fd, file_map, image, nonzero, pages, holes): make a sparse file equal to "
     "image."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "pmemkit.crash._dirty",
    "Page-granular write tracking with mprotect for the crash simulator.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__dirty(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0)
        page_size = ps;
    if (PyType_Ready(&TrackerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TrackerType);
    if (PyModule_AddObject(m, "Tracker", (PyObject *)&TrackerType) < 0
            || PyModule_AddIntConstant(m, "PAGE_SIZE", page_size) < 0) {
        Py_DECREF(&TrackerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
