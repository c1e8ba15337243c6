"""The region interface: what every pmemkit mapping offers.

:class:`Region` is the contract shared by

* :class:`pmemkit.mapping.PmemMap` - a real file mapping with hardware flush/fence,
* :class:`BufferRegion` - any writable Python buffer (bytearray, numpy uint8 array),
  with no persistence domain of its own (flush/drain only validate their arguments),
* the crash simulator's traced region, which records stores, flushes and fences.

Higher layers (the crash simulator, the BTT) program against this interface
only, so the same code runs on a file, on real DAX and under crash exploration.

Subclasses provide :meth:`flush` and :meth:`drain` and may override any data
method for speed; the generic implementations here are correct, not fast.
"""

from __future__ import annotations

import operator
from contextlib import contextmanager

from .errors import ClosedMappingError, InvalidArgumentError, OutOfRangeError, ReadOnlyError


@contextmanager
def closed_on_failure(region, owned=True):
    """Close ``region`` (when ``owned``) if the block raises; the error goes on. For code that
    opens or takes over a region and must not leave it mapped when setting up on it fails."""
    try:
        yield region
    except BaseException:
        if owned:
            region.close()
        raise

#: Copies at least this long use non-temporal stores on pmem (libpmem's threshold).
NT_THRESHOLD = 256
CACHE_LINE = 64


#: numpy dtype kinds that are plain bytes (no object pointers, no variable-width strings).
PLAIN_DTYPE_KINDS = frozenset("biufcmMSUV")


def as_int(value, what):
    """``operator.index(value)``; ``bool`` and non-integers are :class:`InvalidArgumentError`.

    The one integer-argument check of the library: an offset, length, size or count
    that is ``True``, ``1.0`` or ``"1"`` is a mistake, never a number.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be an integer, not a bool ({value!r})")
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} must be an integer, got {type(value).__name__}") from None


def bytes_view(data):
    """A flat byte memoryview of ``data`` (any C-contiguous bytes-like object), no copy."""
    try:
        view = memoryview(data)
    except (TypeError, ValueError, BufferError):
        view = None
    if view is None or not view.c_contiguous:
        raise InvalidArgumentError(
            f"data must be a C-contiguous bytes-like object (bytes, bytearray, memoryview, "
            f"numpy array), got {type(data).__name__}; for a Fortran-ordered or strided numpy "
            f"array pass numpy.ascontiguousarray(a)")
    return view.cast("B")


def byte_value(value):
    """A memset fill value as an int 0-255; anything else is :class:`InvalidArgumentError`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"memset value must be a byte (0-255), got {type(value).__name__}") from None
    if not 0 <= value <= 255:
        raise InvalidArgumentError(f"memset value must be a byte (0-255), got {value}")
    return value


def check_range(offset, length, size, what="mapping"):
    """Validate ``[offset, offset+length)`` inside ``size`` bytes; return ints.

    Raises :class:`OutOfRangeError` (an ``IndexError`` and ``ValueError``) for
    negative values or a range past the end, and :class:`InvalidArgumentError`
    for values that are not integers (``bool`` included).
    """
    if (isinstance(offset, bool) or isinstance(length, bool)
            or not (hasattr(type(offset), "__index__") and hasattr(type(length), "__index__"))):
        raise InvalidArgumentError(
            f"offset and length must be integers, got {type(offset).__name__} "
            f"and {type(length).__name__}")
    offset = operator.index(offset)
    length = operator.index(length)
    if offset < 0 or length < 0:
        raise OutOfRangeError(
            f"negative offset or length (offset={offset}, length={length}); "
            f"both must be >= 0")
    if offset + length > size:
        raise OutOfRangeError(
            f"range [{offset}, {offset + length}) is outside the {size}-byte {what}; "
            f"the last valid byte is at offset {size - 1}")
    return offset, length


class Region:
    """Base class of pmemkit regions: byte-addressable memory with persistence calls.

    Attributes every region has: ``path`` (or ``None``), ``size``, ``is_pmem``,
    ``granularity`` (``"byte"``, ``"cache_line"`` or ``"page"``), ``flush_method``,
    ``writable`` (``False``: reads only; stores, flushes and persists raise
    :class:`~pmemkit.errors.ReadOnlyError`) and
    ``nt_copies`` (``memcpy_persist`` of :data:`NT_THRESHOLD` bytes or more copies with
    non-temporal stores, which bypass the cache: callers that copy many blocks then prefer
    one ``memcpy_persist`` per block to cached stores and one flush).
    """

    path = None
    is_pmem = False
    granularity = "page"
    flush_method = "none"
    nt_copies = False
    writable = True
    #: What messages call this kind of region (default: the class name).
    label = None

    def __init__(self, view, *, path=None, writable=True):
        view = memoryview(view).cast("B")
        if view.readonly and writable:
            raise InvalidArgumentError(
                "the region's buffer is read-only; pass a writable buffer (or writable=False)")
        self._view = view if writable else view.toreadonly()
        self.writable = bool(writable)
        self.size = view.nbytes
        self.path = path

    # --- life cycle -------------------------------------------------------------

    @property
    def closed(self):
        return self._view is None

    def _live_view(self):
        view = self._view
        if view is None:
            raise ClosedMappingError(
                f"{self.label or type(self).__name__} for {self.path or 'buffer'} is closed; "
                f"map it again to use it")
        return view

    def _writable_view(self):
        view = self._live_view()
        if not self.writable:
            raise ReadOnlyError(
                f"{self.label or type(self).__name__} for {self.path or 'buffer'} is read-only "
                f"(writable=False): it cannot be stored to, flushed or persisted; "
                f"open it writable to change it")
        return view

    def close(self):
        """Release the region. Idempotent; any later use raises ClosedMappingError."""
        view, self._view = self._view, None
        if view is not None:
            try:
                view.release()
            except BufferError:
                pass  # a numpy array still views it: the memory lives until that array goes

    def __enter__(self):
        self._live_view()
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self):
        self._live_view()
        return self.size

    def __repr__(self):
        state = "closed" if self.closed else f"size={self.size}"
        return (f"<{self.label or type(self).__name__} {self.path or 'buffer'} {state} "
                f"is_pmem={self.is_pmem} flush={self.flush_method}>")

    # --- data ---------------------------------------------------------------------

    def _export(self):
        """A new memoryview of the region's memory that keeps it valid while it lives.

        It shares the managed buffer of the region's own view, which holds the one
        buffer export of the underlying object (mmap, bytearray, page tracker): after
        :meth:`close` releases the region's view, that export (and so the mapping)
        stays until the last view, slice or numpy array built on it is gone.  The
        region's own view is never exported itself: CPython's garbage collector clears
        a memoryview even while it has exports, and an export chain through one (for
        instance a ``PickleBuffer`` of it) crashes the interpreter when it is caught
        in a reference cycle.
        """
        return self._live_view()[:]

    @property
    def buffer(self):
        """A memoryview of the whole region (no copy); read-only when the region is.

        Views, slices and ``numpy.frombuffer`` of it keep the memory valid after
        :meth:`close` until they are released.
        """
        return self._export()

    def read(self, offset, length):
        """Return ``length`` bytes at ``offset`` as ``bytes``."""
        view = self._live_view()
        offset, length = check_range(offset, length, self.size)
        return bytes(view[offset:offset + length])

    def write(self, offset, data):
        """Store ``data`` (any bytes-like object) at ``offset``. Not durable until persisted."""
        view = self._writable_view()
        data = bytes_view(data)
        offset, length = check_range(offset, data.nbytes, self.size)
        view[offset:offset + length] = data

    def array(self, dtype, shape=None, offset=0):
        """A numpy array viewing the region at ``offset`` (no copy; numpy is imported here).

        ``dtype`` must be plain data (numbers, bytes, fixed-width strings, records of
        them): dtypes holding Python objects are refused. The array (and every view
        of it) keeps the memory valid after :meth:`close` until it is released.
        """
        import numpy as np

        self._live_view()
        dtype = plain_dtype(dtype)
        offset = as_int(offset, "offset")
        if shape is None:
            if offset < 0 or offset > self.size:
                raise OutOfRangeError(f"offset {offset} is outside the {self.size}-byte mapping")
            shape = ((self.size - offset) // dtype.itemsize,)
        elif not isinstance(shape, (tuple, list)):
            shape = (shape,)
        shape = tuple(as_int(s, "shape") for s in shape)
        if any(s < 0 for s in shape):
            raise OutOfRangeError(f"negative dimension in shape {shape}")
        count = 1
        for s in shape:
            count *= s
        check_range(offset, count * dtype.itemsize, self.size)
        # numpy keeps a buffer export only through frombuffer (its own memoryview of the
        # export); ndarray(buffer=memoryview) keeps just the memoryview's underlying object
        raw = np.frombuffer(self._export(), np.uint8)
        return np.ndarray(shape, dtype=dtype, buffer=raw, offset=offset)

    # --- persistence ---------------------------------------------------------------

    def flush(self, offset, length):
        """Start write-back of ``[offset, offset+length)``; durable after :meth:`drain`."""
        raise NotImplementedError

    def drain(self):
        """Wait until every earlier flush is durable (SFENCE on pmem, msync otherwise)."""
        raise NotImplementedError

    def persist(self, offset, length):
        """Make ``[offset, offset+length)`` durable: flush, then drain."""
        self.flush(offset, length)
        self.drain()

    def deep_flush(self, offset, length):
        """Flush through the memory controller's write queues too (libpmem2's deep flush)."""
        self.persist(offset, length)

    def memcpy_persist(self, offset, data):
        """Copy ``data`` to ``offset`` and make it durable."""
        data = bytes_view(data)
        self.write(offset, data)
        self.persist(offset, data.nbytes)

    def memset_persist(self, offset, value, length):
        """Fill ``length`` bytes at ``offset`` with ``value`` (0-255) and make them durable."""
        view = self._writable_view()
        offset, length = check_range(offset, length, self.size)
        value = byte_value(value)
        view[offset:offset + length] = bytes([value]) * length
        self.persist(offset, length)

    def mark(self, name):
        """Label this point of the program (used by the crash simulator; a no-op elsewhere)."""

    def record(self, key, value=None):
        """Note that an operation has returned, for the crash simulator's checker.

        A no-op outside the crash simulator.
        """


def plain_dtype(dtype):
    """``numpy.dtype(dtype)`` if it is plain data, else :class:`InvalidArgumentError`.

    Refused: dtypes holding Python objects (``object``, records with object fields),
    variable-width strings, and zero-sized items: reading file bytes as object
    pointers would crash the interpreter.
    """
    import numpy as np

    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{dtype!r} is not a numpy dtype: {exc}") from None
    if dtype.hasobject or dtype.kind not in PLAIN_DTYPE_KINDS or dtype.itemsize == 0:
        raise InvalidArgumentError(
            f"dtype {dtype} is not plain data: an array over persistent memory can hold "
            f"numbers, bytes, fixed-width strings and records of them, not Python objects "
            f"or variable-size items")
    return dtype


class BufferRegion(Region):
    """A region over any writable buffer (bytearray, numpy uint8 array, mmap).

    It has no persistence domain: :meth:`flush` validates its range and
    :meth:`drain` does nothing. Used to run the BTT and tests on plain memory.
    """

    flush_method = "none"
    granularity = "byte"

    def flush(self, offset, length):
        self._writable_view()
        check_range(offset, length, self.size)

    def drain(self):
        self._live_view()


def as_region(target):
    """``target`` if it is a :class:`Region`, else a BufferRegion over the writable buffer."""
    if isinstance(target, Region):
        return target
    try:
        return BufferRegion(target)
    except TypeError:
        raise InvalidArgumentError(
            f"expected a pmemkit region or a writable buffer, "
            f"got {type(target).__name__}") from None
