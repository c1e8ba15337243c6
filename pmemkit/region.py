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

from .errors import ClosedMappingError, InvalidArgumentError, OutOfRangeError, ReadOnlyError

#: Copies at least this long use non-temporal stores on pmem (libpmem's threshold).
NT_THRESHOLD = 256
CACHE_LINE = 64


def check_range(offset, length, size, what="mapping"):
    """Validate ``[offset, offset+length)`` inside ``size`` bytes; return ints.

    Raises :class:`OutOfRangeError` (an ``IndexError`` and ``ValueError``) for
    negative values or a range past the end, and :class:`InvalidArgumentError`
    for values that are not integers.
    """
    try:
        offset = operator.index(offset)
        length = operator.index(length)
    except TypeError:
        raise InvalidArgumentError(
            f"offset and length must be integers, got {type(offset).__name__} "
            f"and {type(length).__name__}") from None
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
                f"{type(self).__name__} for {self.path or 'buffer'} is closed; "
                f"map it again to use it")
        return view

    def _writable_view(self):
        view = self._live_view()
        if not self.writable:
            raise ReadOnlyError(
                f"{type(self).__name__} for {self.path or 'buffer'} is read-only "
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
        return (f"<{type(self).__name__} {self.path or 'buffer'} {state} "
                f"is_pmem={self.is_pmem} flush={self.flush_method}>")

    # --- data ---------------------------------------------------------------------

    @property
    def buffer(self):
        """A memoryview of the whole region (no copy); read-only when the region is."""
        return self._live_view()

    def read(self, offset, length):
        """Return ``length`` bytes at ``offset`` as ``bytes``."""
        view = self._live_view()
        offset, length = check_range(offset, length, self.size)
        return bytes(view[offset:offset + length])

    def write(self, offset, data):
        """Store ``data`` (any bytes-like object) at ``offset``. Not durable until persisted."""
        view = self._writable_view()
        data = memoryview(data).cast("B")
        offset, length = check_range(offset, data.nbytes, self.size)
        view[offset:offset + length] = data

    def array(self, dtype, shape=None, offset=0):
        """A numpy array viewing the region at ``offset`` (no copy; numpy is imported here)."""
        import numpy as np

        view = self._live_view()
        dtype = np.dtype(dtype)
        try:
            offset = operator.index(offset)
        except TypeError:
            raise InvalidArgumentError(f"offset must be an integer, got {offset!r}") from None
        if shape is None:
            if offset < 0 or offset > self.size:
                raise OutOfRangeError(f"offset {offset} is outside the {self.size}-byte mapping")
            shape = ((self.size - offset) // dtype.itemsize,)
        elif isinstance(shape, int):
            shape = (shape,)
        shape = tuple(operator.index(s) for s in shape)
        if any(s < 0 for s in shape):
            raise OutOfRangeError(f"negative dimension in shape {shape}")
        count = 1
        for s in shape:
            count *= s
        check_range(offset, count * dtype.itemsize, self.size)
        # A view of its own keeps the memory alive (and mapped) as long as the array lives.
        return np.ndarray(shape, dtype=dtype, buffer=memoryview(view), offset=offset)

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
        data = memoryview(data).cast("B")
        self.write(offset, data)
        self.persist(offset, data.nbytes)

    def memset_persist(self, offset, value, length):
        """Fill ``length`` bytes at ``offset`` with ``value`` (0-255) and make them durable."""
        view = self._writable_view()
        offset, length = check_range(offset, length, self.size)
        value = operator.index(value)
        if not 0 <= value <= 255:
            raise InvalidArgumentError(f"memset value must be a byte (0-255), got {value}")
        view[offset:offset + length] = bytes([value]) * length
        self.persist(offset, length)

    def mark(self, name):
        """Label this point of the program (used by the crash simulator; a no-op elsewhere)."""

    def record(self, key, value=None):
        """Note that an operation has returned, for the crash simulator's checker (a no-op elsewhere)."""


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
    """Return ``target`` if it is a :class:`Region`, else wrap a writable buffer in a BufferRegion."""
    if isinstance(target, Region):
        return target
    try:
        return BufferRegion(target)
    except TypeError:
        raise InvalidArgumentError(
            f"expected a pmemkit region or a writable buffer, got {type(target).__name__}") from None
