"""Map a file with libpmem's flush/drain/persist semantics: :func:`map_file` and :class:`PmemMap`.

The persistence path is chosen once, when the file is mapped (as libpmem2 does):

* on pmem (a ``MAP_SYNC`` mapping or device DAX) ``flush`` is the best cache-line
  write-back the CPU has (CLWB > CLFLUSHOPT > CLFLUSH), ``drain`` is SFENCE; under
  eADR the flush is skipped and the fence kept; copies of 256 bytes or more use
  non-temporal stores;
* elsewhere ``flush`` remembers the page-aligned ranges and ``drain`` msyncs
  exactly those, so "flush, then drain" is durable on any file.

:class:`PmemMap` derives from the C type ``pmemkit._flush.Mapping``, whose methods are
the mapping's flush, drain, persist, write, read, memcpy_persist and memset_persist (a
call from Python costs one C call). Without the extension the same semantics are
provided in Python over ``mmap.flush`` (msync only).

Environment overrides (documented in docs/mapping.md):
``PMEMKIT_FORCE_PMEM=1|0`` treats every mapping as pmem / as not pmem;
``PMEMKIT_FLUSH=clwb|clflushopt|clflush|none|msync`` forces the flush method.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from typing import NamedTuple

from . import cpu, defaults
from ._linux import mounts, sysfs
from .errors import (
    ClosedMappingError,
    InvalidArgumentError,
    MappingError,
    NotPmemError,
    OutOfRangeError,
    ReadOnlyError,
    UnsupportedFlushError,
)
from .region import Region, as_int, check_range
from .units import parse_size

__all__ = ["map_file", "PmemMap", "MAP_SHARED_VALIDATE", "MAP_SYNC", "SYNC_MODES"]

#: Linux mmap flags: MAP_SHARED_VALIDATE makes the kernel refuse flags it does not
#: honour (instead of ignoring them), MAP_SYNC asks for synchronous page faults (DAX).
MAP_SHARED_VALIDATE = 0x03
MAP_SYNC = 0x80000
#: errno values meaning "MAP_SYNC is not supported here" (the file is not on DAX).
NOT_DAX_ERRNOS = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})

SYNC_MODES = ("auto", "require", "never")
#: The largest mapping length (and file size) the kernel can address: off_t is 64-bit signed.
MAX_MAP_SIZE = (1 << 63) - 1
PAGE_SIZE = mmap.PAGESIZE

_native = cpu.native()
if _native is not None:
    _native.configure(ClosedMappingError, InvalidArgumentError, OutOfRangeError, ReadOnlyError)


# --- environment overrides --------------------------------------------------------

def _force_pmem_from_env():
    """``True``/``False`` from PMEMKIT_FORCE_PMEM, ``None`` when unset."""
    value = os.environ.get(defaults.FORCE_PMEM_ENV, "").strip()
    if value == "":
        return None
    if value in ("1", "0"):
        return value == "1"
    raise InvalidArgumentError(
        f"{defaults.FORCE_PMEM_ENV}={value!r} is not understood: set it to 1 (treat every "
        f"mapping as pmem), 0 (never) or unset it")


def _flush_from_env():
    """The flush method forced by PMEMKIT_FLUSH (validated), or ``None``."""
    value = os.environ.get(defaults.FLUSH_ENV, "").strip().lower()
    if value == "":
        return None
    if value not in cpu.FLUSH_METHODS:
        raise InvalidArgumentError(
            f"{defaults.FLUSH_ENV}={value!r} is not a flush method: use one of "
            f"{', '.join(cpu.FLUSH_METHODS)} or unset it")
    _check_method_available(value, f"{defaults.FLUSH_ENV}={value}")
    return value


def _check_method_available(method, why):
    if method == "msync":
        return
    if cpu.native() is None:
        raise UnsupportedFlushError(
            f"{why} needs pmemkit's native extension (pmemkit._flush), which was not built: "
            f"only msync is possible. Install a C compiler (apt-get install gcc python3-dev) "
            f"and reinstall pmemkit, or use {defaults.FLUSH_ENV}=msync")
    if method not in cpu.available_methods():
        have = ", ".join(cpu.flush_instructions()) or f"none of {'/'.join(cpu.FLUSH_INSTRUCTIONS)}"
        raise UnsupportedFlushError(
            f"{why}: this CPU has no {method.upper()} instruction (it has {have}); "
            f"choose one it has, or unset {defaults.FLUSH_ENV}")


def _not_dax_message(path, err):
    try:
        entry = mounts.mount_of(path)
    except Exception:  # noqa: BLE001 - the message must not fail
        entry = None
    mountpoint, fstype, opts = entry[1:] if entry else ("?", "unknown", "")
    code = errno.errorcode.get(err.errno, str(err.errno))
    return (
        f"{path} is not on persistent memory: the kernel refused MAP_SYNC ({code}: "
        f"{err.strerror}). It lives on {fstype} mounted at {mountpoint} with options "
        f"'{opts or '(none)'}', which is not a DAX mount. Put the file on a filesystem on a pmem "
        f"device mounted with -o dax (e.g. mkfs.ext4 /dev/pmem0 && mount -o dax /dev/pmem0 "
        f"{defaults.MOUNT_POINTS['ext4']}), or run inside `pmemkit vm run`; use sync='auto' to "
        f"accept a plain mapping")


def _devdax_size(path, st):
    try:
        return sysfs.devdax_size(st)
    except (OSError, ValueError):
        raise MappingError(
            errno.ENODEV,
            f"{path} is a character device but not a device-DAX device (no size in "
            f"{sysfs.char_device_dir(st)}); map a regular file or a /dev/daxX.Y device",
            path=path) from None


# --- the mapping ------------------------------------------------------------------------

class PmemMap(Region):
    """A file (or device-DAX) mapping with libpmem's persistence semantics.

    Made by :func:`map_file`. Besides the :class:`~pmemkit.region.Region` interface it has
    ``map_sync`` (the kernel accepted MAP_SYNC), ``device_dax``, ``eadr`` and ``native``
    (the C primitives are in use).

    ``flush``, ``drain``, ``persist``, ``write``, ``read``, ``memcpy_persist`` and
    ``memset_persist`` come from the class a mapping is made of: the C type
    ``pmemkit._flush.Mapping`` (every flush method; see ``_flush.c``), or, where the
    extension was not built, :class:`_PyMsync` (the msync path in Python). Both are
    attached to the memory and the flush path once, when the mapping is made.
    """

    label = "PmemMap"

    def __init__(self, mm, *, path, is_pmem, granularity, flush_method, map_sync=False,
                 device_dax=False, eadr=False, deep_flush_file=None):
        super().__init__(mm, path=path, writable=not memoryview(mm).readonly)
        self._mmap = mm
        self.is_pmem = is_pmem
        self.granularity = granularity
        self.flush_method = flush_method
        self.map_sync = map_sync
        self.device_dax = device_dax
        self.eadr = eadr
        self._deep_flush_file = deep_flush_file
        self.nt_copies = self.native and flush_method != "msync"
        self._attach(mm, flush_method, path)

    def pending_msync(self):
        """msync method: the ``(offset, length)`` page ranges the next :meth:`drain` will sync."""
        self._live_view()
        return list(self._pending()) if self.flush_method == "msync" else []

    @property
    def msync_stats(self):
        """``(calls, bytes)``: msync(2) calls made by drain so far and the bytes they covered."""
        return (self.msync_calls, self.msync_bytes)

    def deep_flush(self, offset, length):
        """Persist the range, then push it through the memory controller's queues.

        libpmem2 semantics: for a file (fsdax or not) msync the page-aligned range;
        for device DAX write ``1`` to the region's ``deep_flush`` sysfs file.
        """
        self._writable_view()
        offset, length = check_range(offset, length, self.size)
        self.persist(offset, length)
        if self.device_dax:
            if self._deep_flush_file:
                try:
                    with open(self._deep_flush_file, "w") as f:
                        f.write("1")
                except OSError as exc:
                    raise MappingError(exc.errno, f"deep flush via {self._deep_flush_file} failed: "
                                                  f"{exc.strerror}") from None
            return
        if length:
            start = offset - offset % PAGE_SIZE
            self._mmap.flush(start, min(offset + length, self.size) - start)

    def close(self):
        """Unmap. Idempotent; any later use raises :class:`ClosedMappingError`.

        numpy arrays or memoryviews taken from :attr:`buffer` / :meth:`array` keep the
        memory mapped until they are released (so they never dangle).
        """
        self._detach()
        super().close()
        # The mmap is not closed explicitly: dropping the region's reference unmaps it now,
        # or when the last object still holding it goes (a view of :attr:`buffer`, or the
        # mmap itself, which numpy keeps as the base of ``ndarray(buffer=pm.buffer)``).
        self._mmap = None


class _PyMsync:
    """The methods of ``pmemkit._flush.Mapping`` in Python, for the msync path only.

    Used where the extension was not built: ``flush`` remembers page-aligned ranges,
    ``drain`` msyncs them (``mmap.flush``), the same semantics and errors as the C type.
    """

    native = False

    def _attach(self, mm, method, name):
        if method != "msync":
            raise UnsupportedFlushError(
                f"flush method {method!r} needs the native extension pmemkit._flush")
        self._ranges = []
        self.msync_calls = 0
        self.msync_bytes = 0

    def _detach(self):
        self._ranges = []

    def _pending(self):
        merged = []
        for start, end in sorted(self._ranges):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return [(s, e - s) for s, e in merged]

    def flush(self, offset, length):
        self._writable_view()
        offset, length = check_range(offset, length, self.size)
        if length:
            start = offset - offset % PAGE_SIZE
            end = -(-(offset + length) // PAGE_SIZE) * PAGE_SIZE
            self._ranges.append((start, end))

    def drain(self):
        self._live_view()
        ranges, self._ranges = self._pending(), []
        for start, length in ranges:
            length = min(length, self.size - start)  # mmap.flush refuses past the end
            self._mmap.flush(start, length)
            self.msync_calls += 1
            self.msync_bytes += length

    def persist(self, offset, length):
        self.flush(offset, length)
        self.drain()


class _PyPmemMap(_PyMsync, PmemMap):
    """A PmemMap without the C extension: msync only."""


if _native is not None:
    class _NativePmemMap(_native.Mapping, PmemMap):
        """A PmemMap whose persistence and data methods are the C type's (every flush method)."""

        native = True


def _mapping_class():
    return _PyPmemMap if _native is None else _NativePmemMap


# --- map_file ----------------------------------------------------------------------------

def _parse_map_size(size):
    if size is None:
        return None
    if not isinstance(size, str):
        size = as_int(size, "size (a number of bytes or a string like '64M')")
    size = parse_size(size, "mapping size")
    if size == 0:
        raise InvalidArgumentError("cannot map 0 bytes: give a size > 0 (e.g. size='64M')")
    if size > MAX_MAP_SIZE:
        raise InvalidArgumentError(
            f"cannot map {size} bytes: a mapping is at most {MAX_MAP_SIZE} bytes "
            f"(the largest file offset); give a smaller size")
    return size


class _Request(NamedTuple):
    """The validated arguments of :func:`map_file` (libpmem2's "config")."""

    path: str
    size: int | None
    create: bool
    sync: str
    mode: int
    writable: bool
    force_pmem: bool | None
    forced_method: str | None


class _Source(NamedTuple):
    """What is at the path (libpmem2's "source"): its stat (``None``: to be created),
    the size to map and whether it is a device-DAX device."""

    st: os.stat_result | None
    size: int
    device_dax: bool


def map_file(path, size=None, *, create=False, sync="auto", mode=0o644, writable=True):
    """Map ``path`` and return a :class:`PmemMap`.

    ``size=None`` maps the whole existing file; ``create=True`` creates the file or
    extends it to ``size`` (never shrinks it). ``sync``: ``"auto"`` asks for
    MAP_SYNC and accepts a plain shared mapping when the kernel refuses it,
    ``"require"`` raises :class:`NotPmemError` instead, ``"never"`` does not ask.
    ``writable=False`` opens the file read-only (``O_RDONLY``, ``PROT_READ``): reads,
    arrays and views work (arrays are read-only), stores, flushes and persists raise
    :class:`ReadOnlyError`; a file without write permission can be mapped this way.
    On any error the file is left as it was (a file created here is removed again).

    Three steps, as libpmem2 splits config, source and map: validate the arguments,
    examine the file, open (or create) and map it; then choose the flush method.
    """
    req = _validate(path, size, create, sync, mode, writable)
    source = _examine(req)
    mm, map_sync = _open_and_map(req, source)
    is_pmem = map_sync or source.device_dax
    if req.force_pmem is not None:
        is_pmem = req.force_pmem
    eadr = bool(is_pmem and sysfs.has_eadr())
    granularity = ("byte" if eadr else "cache_line") if is_pmem else "page"
    deep_flush_file = sysfs.devdax_deep_flush_file(source.st) if source.device_dax else None
    return _mapping_class()(
        mm, path=req.path, is_pmem=is_pmem, granularity=granularity,
        flush_method=_choose_method(req, is_pmem, eadr), map_sync=map_sync,
        device_dax=source.device_dax, eadr=eadr, deep_flush_file=deep_flush_file)


def _validate(path, size, create, sync, mode, writable):
    """Check every argument and the environment overrides; nothing on disk is touched."""
    if not isinstance(sync, str) or sync not in SYNC_MODES:
        raise InvalidArgumentError(f"sync={sync!r} is not valid: use 'auto', 'require' or 'never'")
    if not isinstance(writable, bool):
        raise InvalidArgumentError(f"writable must be True or False, got {writable!r}")
    if create and not writable:
        raise InvalidArgumentError(
            "create=True needs a writable mapping: a read-only mapping (writable=False) "
            "cannot create or extend the file")
    mode = as_int(mode, "mode (permission bits like 0o644)")
    if not 0 <= mode <= 0o777:
        raise InvalidArgumentError(
            f"mode {mode:#o} is not permission bits: give a value from 0o000 to 0o777 "
            f"(setuid, setgid and sticky bits are not accepted)")
    size = _parse_map_size(size)
    try:
        path = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(
            f"path must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise InvalidArgumentError("path is empty")
    if "\0" in path:
        raise InvalidArgumentError(
            f"path {path!r} contains a NUL character; no file can have that name")
    return _Request(path, size, bool(create), sync, mode, writable,
                    _force_pmem_from_env(), _flush_from_env())


def _examine(req):
    """stat the path and decide the size to map; raise for anything that cannot be mapped."""
    path, size = req.path, req.size
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise MappingError(exc.errno, f"cannot stat {path}: {exc.strerror}", path=path) from None

    if st is None:
        if not req.create:
            raise MappingError(
                errno.ENOENT, f"{path} does not exist; pass create=True and a size to create it",
                path=path)
        if size is None:
            raise InvalidArgumentError(
                f"{path} does not exist: give a size to create it (e.g. size='64M')")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise MappingError(
                errno.ENOENT, f"cannot create {path}: directory {parent} does not exist", path=path)
        return _Source(None, size, False)
    if stat.S_ISDIR(st.st_mode):
        raise MappingError(errno.EISDIR, f"{path} is a directory; map a file inside it "
                                         f"(e.g. {os.path.join(path, 'pool')})", path=path)
    if stat.S_ISCHR(st.st_mode):
        dev_size = _devdax_size(path, st)
        if size is not None and size > dev_size:
            raise MappingError(errno.EINVAL, f"{path} has {dev_size} bytes; cannot map {size}",
                               path=path)
        return _Source(st, dev_size if size is None else size, True)
    if not stat.S_ISREG(st.st_mode):
        raise MappingError(errno.EINVAL, f"{path} is not a regular file or a device-DAX device",
                           path=path)
    if req.writable and not st.st_mode & 0o222:
        raise MappingError(
            errno.EACCES,
            f"{path} is read-only (mode {stat.filemode(st.st_mode)}); map it with "
            f"writable=False to read it, or make it writable: chmod u+w {path}", path=path)
    if size is None:
        if st.st_size == 0:
            raise MappingError(
                errno.EINVAL, f"{path} is empty; pass size= and create=True to extend it",
                path=path)
        size = st.st_size
    elif size > st.st_size and not req.create:
        raise MappingError(
            errno.EINVAL,
            f"{path} has {st.st_size} bytes, fewer than the {size} asked for; "
            f"pass create=True to extend it, or a smaller size", path=path)
    return _Source(st, size, False)


def _open_and_map(req, source):
    """Open (or create) the file, extend it if asked, map it: ``(mmap, map_sync_accepted)``.

    On any failure the file is put back as it was: a file created here is removed, a file
    extended here is truncated back and its timestamps restored.
    """
    path, st = req.path, source.st
    try:
        if st is None:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, req.mode)
        else:
            fd = os.open(path, (os.O_RDWR if req.writable else os.O_RDONLY) | os.O_CLOEXEC)
    except OSError as exc:
        how = "writing" if req.writable else "reading"
        raise MappingError(exc.errno, f"cannot open {path} for {how}: {exc.strerror}",
                           path=path) from None
    extend = not source.device_dax and (0 if st is None else st.st_size) < source.size
    try:
        if extend:
            _extend(fd, source.size, path)
        return _mmap(fd, source.size, req.sync, path, req.writable)
    except BaseException:
        _undo(fd, path, st, extended=extend)
        raise
    finally:
        os.close(fd)


def _undo(fd, path, st, *, extended):
    """Put the file back as :func:`_open_and_map` found it (``st is None``: it created it)."""
    try:
        if st is None:
            os.unlink(path)
        elif extended:
            os.ftruncate(fd, st.st_size)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        pass


def _choose_method(req, is_pmem, eadr):
    """The flush method, in the documented order of preference."""
    if req.forced_method is not None:
        return req.forced_method
    if not is_pmem:
        return "msync"
    if eadr and _native is not None:
        return "none"
    return cpu.best_flush_method()


def _extend(fd, size, path):
    """Make the file ``size`` bytes long, with its blocks allocated where the filesystem can."""
    try:
        os.posix_fallocate(fd, 0, size)  # allocate blocks: no SIGBUS on a full fs later
        return
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG):
            raise MappingError(exc.errno, f"cannot extend {path} to {size} bytes: {exc.strerror} "
                                          f"(give a smaller size or free space)",
                                          path=path) from None
    try:
        os.ftruncate(fd, size)  # filesystems without fallocate (tmpfs before 2.6, 9p)
    except OSError as exc:
        raise MappingError(exc.errno, f"cannot extend {path} to {size} bytes: "
                                      f"{exc.strerror}", path=path) from None


def _mmap(fd, size, sync, path, writable):
    """Map ``size`` bytes of ``fd``; returns ``(mmap, map_sync_accepted)``."""
    prot = mmap.PROT_READ | mmap.PROT_WRITE if writable else mmap.PROT_READ
    if sync != "never":
        try:
            return mmap.mmap(fd, size, flags=MAP_SHARED_VALIDATE | MAP_SYNC, prot=prot), True
        except OSError as exc:
            if exc.errno not in NOT_DAX_ERRNOS:
                raise MappingError(exc.errno, f"cannot map {path}: {exc.strerror}",
                                   path=path) from None
            if sync == "require":
                raise NotPmemError(exc.errno, _not_dax_message(path, exc), path=path) from None
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot), False
    except (OSError, ValueError) as exc:
        code = getattr(exc, "errno", None) or errno.EINVAL
        raise MappingError(code, f"cannot map {path}: {exc}", path=path) from None
