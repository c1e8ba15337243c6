"""The BTT device: atomic sector writes over any pmemkit region.

The code touches the media only through the :class:`~pmemkit.region.Region`
interface (``read``/``write``/``buffer``/``array``/``flush``/``drain``/
``persist``/``memcpy_persist``), so the same object works on a file mapping,
on real DAX, on a plain buffer and under the crash simulator.

Write protocol (one sector, lane L; each numbered step ends with a drain)::

    1. copy the data into L's free block                      -> persist
    2. flog[L][next] = {lba, old_map}      (8-byte store)     -> persist
    3. flog[L][next] = {new_map, seq}      (8-byte store)     -> persist   <- commit point
    4. map[lba] = new_map                  (4-byte store)     -> persist
    L's free block is now the old block.

Recovery (at open): for every lane take the flog entry with the newer seq;
if the map still holds its old_map (and new_map differs), roll the map forward.
"""

from __future__ import annotations

import operator
import os
from array import array
import struct
import uuid as _uuid
import warnings

import numpy as np

from ..errors import (BttCorruptError, BttIOError, BttReadOnlyError, ClosedMappingError,
                      InvalidArgumentError, OutOfRangeError)
from ..region import CACHE_LINE, as_region
from . import layout as L

_PAIR = struct.Struct("<II")
_U32 = struct.Struct("<I")
_NSEQ = L.NSEQ
_M = L.MAP_LBA_MASK
_NORMAL = L.MAP_NORMAL
_NSEQ_NP = np.array(L.NSEQ, dtype=np.uint64)
# read_many fast path: dtypes and ufunc methods looked up once
_I64, _U64, _U8 = np.dtype(np.int64), np.dtype(np.uint64), np.dtype(np.uint8)
_UMAX, _SUB = np.maximum.reduce, np.subtract
_NORMAL_U32 = np.uint32(L.MAP_NORMAL)
# index of the uint64 holding {lba, old_map} of flog slot 0..3 inside a 64-byte pair
_SLOTS_NP = {(0, 1): np.array([0, 2], dtype=np.intp), (0, 2): np.array([0, 4], dtype=np.intp)}


class BttWarning(UserWarning):
    """Something was wrong with the image but pmemkit could carry on (e.g. it used the backup info block)."""


def _open_target(target, *, size=None, create=False):
    """Return ``(region, owned)`` for a path, a Region or a writable buffer."""
    if isinstance(target, (str, os.PathLike)):
        from ..mapping import map_file

        if create and size is not None:
            exists = os.path.exists(target)
            cur = os.path.getsize(target) if exists else 0
            return map_file(target, max(size, cur), create=True), True
        return map_file(target), True
    return as_region(target), False


class _Arena:
    """Run-time state of one arena (offsets absolute within the region)."""

    def __init__(self, index, start, info, lba_start):
        self.index = index
        self.start = start
        self.info = info
        self.lba_start = lba_start
        self.nlba = info.external_nlba
        self.ilbasize = info.internal_lbasize
        self.dataoff = start + info.dataoff
        self.mapoff = start + info.mapoff
        self.flogoff = start + info.flogoff
        self.infooff = start + info.infooff
        self.nfree = info.nfree
        self.inl = info.internal_nlba
        self.ro_reason = None
        self.overlay = {}           # pre-map lba -> entry (read-only recovery)
        self.slots = (0, 1)
        # per lane, as array.array (fast int access from Python) with numpy views of the
        # same memory (batched updates): raw old_map of the current flog entry (the lane's
        # free block), its seq, and which slot of the pair is written next
        self.free = self.seq = self.next = None
        self.free_np = self.seq_np = self.next_np = None
        self.flog_entries = None    # numpy (nfree, 4) current entries, for check()
        self.flog_bad = None
        # views, set by Btt._attach_views
        self.map_mv = None
        self.map_np = None
        self.data_np = None
        self.flog64 = None


class Btt:
    """A Block Translation Table on a region: atomic ``lbasize``-byte sector writes.

    Use :meth:`create` to lay out a new BTT, :meth:`open` to attach an existing
    one (running recovery), :meth:`create_pmemblk` / :meth:`open_pmemblk` for
    libpmemblk pool files.
    """

    def __init__(self, region, offset, arenas, *, owned=False, readonly=False, messages=(),
                 pool=None):
        self._region = region
        self._owned = owned
        self.offset = offset
        self.arenas = arenas
        self.readonly = readonly
        self.messages = list(messages)
        self.pool = pool
        self.lbasize = arenas[0].info.external_lbasize
        self.nlba = sum(a.nlba for a in arenas)
        self.nlane = min(a.nfree for a in arenas)
        self.version = arenas[0].info.version
        self._starts = np.array([a.lba_start for a in arenas], dtype=np.int64)
        self._next_lane = 0
        self._mv = memoryview(region.buffer)   # our own view: released by close()
        self._zero = bytes(self.lbasize)
        self._arena1 = arenas[0] if len(arenas) == 1 else None
        self._nt_copies = bool(region.nt_copies)
        for a in arenas:
            self._attach_views(a)
        if self._arena1 is not None and not readonly and type(self).read is Btt.read \
                and type(self).write is Btt.write:
            self._bind_fast_paths(self._arena1)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def create(cls, target, lbasize=4096, nfree=L.DEFAULT_NFREE, version="1.1", offset=0,
               size=None, *, arena_size=L.MAX_ARENA_SIZE, layout="linux", uuid=None,
               parent_uuid=None):
        """Lay out a new, empty BTT on ``target`` and open it.

        ``target``: a path (created or extended when ``size`` is given), a
        region (``PmemMap``, traced region) or a writable buffer. The BTT
        occupies ``size`` bytes (default: the rest of the target) from
        ``offset``. ``arena_size`` caps each arena (default 512 GiB; smaller
        values make multi-arena BTTs for tests). ``layout="linux"`` sizes
        arenas like the kernel (64-byte internal block alignment),
        ``"pmemblk"`` like libpmemblk (256-byte, at least 512).
        """
        lbasize = _int(lbasize, "lbasize")
        nfree = _int(nfree, "nfree")
        offset = _int(offset, "offset")
        if version not in L.VERSIONS:
            raise InvalidArgumentError(
                f"unknown BTT version {version!r}; use one of {', '.join(L.VERSIONS)}")
        if layout not in ("linux", "pmemblk"):
            raise InvalidArgumentError(f"layout must be 'linux' or 'pmemblk', got {layout!r}")
        if layout == "linux" and lbasize not in L.LINUX_LBASIZES:
            raise InvalidArgumentError(
                f"lbasize {lbasize} is not one the Linux BTT supports "
                f"({', '.join(map(str, L.LINUX_LBASIZES))}); pick one, or pass layout='pmemblk'")
        if not 1 <= lbasize <= 1 << 20:
            raise InvalidArgumentError(f"lbasize must be between 1 and 1 MiB, got {lbasize}")
        if not 1 <= nfree <= 1 << 16:
            raise InvalidArgumentError(f"nfree must be between 1 and 65536, got {nfree}")
        if offset < 0 or offset % 8:
            raise InvalidArgumentError(f"offset must be a non-negative multiple of 8, got {offset}")
        arena_size = _int(arena_size, "arena_size")
        if arena_size % L.BTT_ALIGNMENT or arena_size <= 0 or arena_size > L.MAX_ARENA_SIZE:
            raise InvalidArgumentError(
                f"arena_size must be a positive multiple of 4096 up to 512 GiB, got {arena_size}")
        region, owned = _open_target(
            target, size=None if size is None else offset + _int(size, "size"), create=True)
        try:
            if size is None:
                size = region.size - offset
            size = _int(size, "size")
            if size <= 0 or offset + size > region.size:
                raise OutOfRangeError(
                    f"the BTT [{offset}, {offset + size}) does not fit the {region.size}-byte target")
            major, minor = L.VERSIONS[version]
            plan = L.plan_arenas(size, lbasize, nfree, max_arena=arena_size, style=layout,
                                 min_arena=min(L.MIN_ARENA_SIZE, arena_size, size))
            uid = _uuid_bytes(uuid) if uuid is not None else _uuid.uuid4().bytes_le
            puid = _uuid_bytes(parent_uuid) if parent_uuid is not None else bytes(16)
            flog_flags = L.MAP_ZERO if layout == "pmemblk" else 0
            for aoff, info in plan:
                info.uuid, info.parent_uuid = uid, puid
                info.major, info.minor = major, minor
                write_arena_layout(region, offset + aoff, info, flog_flags)
            return cls._open_region(region, offset, owned=owned)
        except BaseException:
            if owned:
                region.close()
            raise

    @classmethod
    def open(cls, target, offset=0, *, readonly=False, arena_size=None):
        """Attach the BTT at ``offset`` of ``target`` and run recovery (flog replay).

        A bad primary info block falls back to the backup (a :class:`BttWarning`
        says so, and a writable open restores the primary). An arena whose flog
        or flags are inconsistent is opened read-only (:class:`BttReadOnlyError`
        on write, with the reason). ``arena_size`` helps find a backup info block
        of BTTs made with a non-default arena size.
        """
        offset = _int(offset, "offset")
        region, owned = _open_target(target)
        try:
            return cls._open_region(region, offset, owned=owned, readonly=readonly,
                                    arena_size=arena_size)
        except BaseException:
            if owned:
                region.close()
            raise

    @classmethod
    def _open_region(cls, region, offset, *, owned=False, readonly=False, arena_size=None,
                     pool=None, parent_uuid=None):
        if offset < 0 or offset + L.INFO_SIZE > region.size:
            raise OutOfRangeError(
                f"offset {offset} leaves no room for a BTT info block in the "
                f"{region.size}-byte target")
        arenas, messages = _read_arenas(region, offset, readonly=readonly,
                                        arena_size=arena_size, parent_uuid=parent_uuid)
        for m in messages:
            warnings.warn(m, BttWarning, stacklevel=3)
        lba = 0
        for a in arenas:
            a.lba_start = lba
            lba += a.nlba
            _load_flog(region, a)
            _recover(region, a, readonly)
        return cls(region, offset, arenas, owned=owned, readonly=readonly, messages=messages,
                   pool=pool)

    @classmethod
    def create_pmemblk(cls, path, bsize, size, **kwargs):
        """Create a libpmemblk pool file (``pmempool create blk BSIZE``) with its BTT laid out."""
        from .pmemblk import create_pool
        return create_pool(cls, path, bsize, size, **kwargs)

    @classmethod
    def open_pmemblk(cls, path, *, readonly=False):
        """Open a libpmemblk pool file (header ``PMEMBLK``, BTT at 8 KiB)."""
        from .pmemblk import open_pool
        return open_pool(cls, path, readonly=readonly)

    def _attach_views(self, a):
        r = self._region
        a.map_mv = self._mv[a.mapoff:a.mapoff + 4 * a.nlba].cast("I")
        a.map_np = r.array("<u4", a.nlba, a.mapoff)
        a.data_np = r.array(np.uint8, (a.info.internal_nlba, a.ilbasize), a.dataoff)
        a.flog64 = r.array("<u8", (a.nfree, L.FLOG_PAIR_SIZE // 8), a.flogoff)

    # --- life cycle ----------------------------------------------------------------------

    @property
    def region(self):
        return self._region

    @property
    def closed(self):
        return self._region is None

    def close(self):
        """Release the views (and the mapping, when the BTT opened it). Idempotent."""
        region, self._region = self._region, None
        if region is None:
            return
        self._arena1 = None
        self.__dict__.pop("read", None)        # drop the bound fast paths
        self.__dict__.pop("write", None)
        for a in self.arenas:                 # and divert closures callers still hold
            a.overlay[-1] = 0
        for a in self.arenas:
            if a.map_mv is not None:
                a.map_mv.release()
            a.map_mv = a.map_np = a.data_np = a.flog64 = None
        self._mv.release()
        self._mv = None
        if self._owned:
            region.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed:
            return "<Btt closed>"
        return (f"<Btt v{self.version} lbasize={self.lbasize} nlba={self.nlba} "
                f"arenas={len(self.arenas)} nlane={self.nlane}>")

    def _live(self):
        r = self._region
        if r is None:
            raise ClosedMappingError("this Btt is closed; open it again to use it")
        return r

    # --- addressing --------------------------------------------------------------------

    def _locate(self, lba):
        try:
            lba = operator.index(lba)
        except TypeError:
            raise InvalidArgumentError(f"lba must be an integer, got {type(lba).__name__}") from None
        if not 0 <= lba < self.nlba:
            raise OutOfRangeError(
                f"lba {lba} is out of range: this BTT has {self.nlba} blocks (0..{self.nlba - 1})")
        arenas = self.arenas
        if len(arenas) == 1:
            return arenas[0], lba
        i = int(np.searchsorted(self._starts, lba, side="right")) - 1
        a = arenas[i]
        return a, lba - a.lba_start

    def _check_data(self, data):
        try:
            mv = memoryview(data)
        except TypeError:
            raise InvalidArgumentError(
                f"data must be a bytes-like object, got {type(data).__name__}") from None
        if mv.nbytes != self.lbasize:
            raise InvalidArgumentError(
                f"data is {mv.nbytes} bytes; a block of this BTT is exactly {self.lbasize} bytes")
        if not mv.c_contiguous:
            mv = memoryview(bytes(mv))
        return mv.cast("B")

    def _writable(self, a):
        if self.readonly:
            raise BttReadOnlyError("this BTT was opened read-only; open it with readonly=False to write")
        if a.ro_reason:
            raise BttReadOnlyError(f"arena {a.index} is read-only: {a.ro_reason}")

    def _entry(self, a, pre):
        if a.overlay:
            e = a.overlay.get(pre)
            if e is not None:
                return e
        return a.map_mv[pre]

    def _block_off(self, a, entry, pre):
        blk = pre if entry & 0xC0000000 == 0 else entry & _M
        if blk >= a.info.internal_nlba:
            raise BttCorruptError(
                f"map entry 0x{entry:08x} of lba {a.lba_start + pre} (arena {a.index}) points "
                f"past the {a.info.internal_nlba} blocks of the arena; run check()")
        return a.dataoff + blk * a.ilbasize

    # --- single-block I/O ----------------------------------------------------------------------

    def read(self, lba):
        """Return block ``lba`` (``lbasize`` bytes). Raises BttIOError on an error-flagged block."""
        a = self._arena1
        if a is not None and type(lba) is int and 0 <= lba < self.nlba and not a.overlay:
            try:
                e = a.map_mv[lba]
            except TypeError:       # closed: map_mv is None
                e = 0
            if e >= 0xC0000000:
                blk = e & 0x3FFFFFFF
                if blk < a.inl:
                    off = a.dataoff + blk * a.ilbasize
                    return self._mv[off:off + self.lbasize].tobytes()
        return self._read_slow(lba)

    def _bind_fast_paths(self, a):
        """Bind closures over a single arena's state as ``self.read``/``self.write``.

        They handle the common case (an int lba, a normal map entry, bytes data) with
        local variables only and defer everything else to the methods.
        """
        map_mv, mv, overlay = a.map_mv, self._mv, a.overlay
        dataoff, ilbasize, lbasize, nlba, inl = a.dataoff, a.ilbasize, self.lbasize, self.nlba, a.inl
        slow_read, slow_write = self._read_slow, Btt.write.__get__(self)
        mcp = self._region.memcpy_persist
        free, seqs, nexts, slots = a.free, a.seq, a.next, a.slots
        flogoff, mapoff, nlane = a.flogoff, a.mapoff, self.nlane
        pack2, pack1, nseq = _PAIR.pack, _U32.pack, _NSEQ

        # The read fast path leans on the map view for its checks: map_mv has exactly nlba
        # entries, so indexing it rejects lba >= nlba (IndexError) and non-integers
        # (TypeError), and once close() has released it, any use (ValueError); all of these
        # go to _read_slow, which raises the proper typed error. Only lba < 0 (which a
        # memoryview would wrap) needs its own test. A normal entry minus the NORMAL flags
        # is the block number; zero, error and initial entries wrap negative or past inl.
        # An arena with a recovery overlay (read-only) keeps the general method.
        if overlay:
            read = None
        elif getattr(self._region, "native", False):
            rd = self._region.read          # one C call returning bytes

            def read(lba):
                try:
                    if lba >= 0:
                        e = map_mv[lba] - 0xC0000000
                        if 0 <= e < inl:
                            return rd(dataoff + e * ilbasize, lbasize)
                except Exception:
                    pass
                return slow_read(lba)
        else:
            def read(lba):
                try:
                    if lba >= 0:
                        e = map_mv[lba] - 0xC0000000
                        if 0 <= e < inl:
                            off = dataoff + e * ilbasize
                            return mv[off:off + lbasize].tobytes()
                except Exception:
                    pass
                return slow_read(lba)

        def write(lba, data):
            if type(lba) is not int or not 0 <= lba < nlba or overlay or a.ro_reason \
                    or type(data) not in (bytes, bytearray) or len(data) != lbasize:
                return slow_write(lba, data)
            lane = self._next_lane
            self._next_lane = (lane + 1) % nlane
            blk = free[lane] & 0x3FFFFFFF
            if blk >= inl:
                return slow_write(lba, data)
            mcp(dataoff + blk * ilbasize, data)                       # 1. data
            old = map_mv[lba]
            if old < 0x40000000:
                old = lba | 0xC0000000
            new = blk | 0xC0000000
            seq = nseq[seqs[lane] & 3]
            foff = flogoff + lane * 64 + slots[nexts[lane]] * 16
            mcp(foff, pack2(lba, old))                                 # 2. {lba, old_map}
            mcp(foff + 8, pack2(new, seq))                             # 3. {new_map, seq}: commit
            mcp(mapoff + 4 * lba, pack1(new))                          # 4. map
            seqs[lane] = seq
            nexts[lane] ^= 1
            free[lane] = old

        if read is not None:
            self.read = read
        self.write = write

    def _read_slow(self, lba):
        self._live()
        a, pre = self._locate(lba)
        e = self._entry(a, pre)
        flags = e & 0xC0000000
        if flags == _NORMAL:
            off = self._block_off(a, e, pre)
            return bytes(self._mv[off:off + self.lbasize])
        if flags == L.MAP_ERROR:
            raise BttIOError(
                f"lba {lba} is flagged as an error block (EIO); write it to clear the error")
        return self._zero

    def write(self, lba, data):
        """Write block ``lba`` atomically (exactly four persistence points)."""
        r = self._region
        a = self._arena1
        if a is not None and type(lba) is int and 0 <= lba < self.nlba and r is not None:
            pre = lba
        else:
            r = self._live()
            a, pre = self._locate(lba)
        if len(data) != self.lbasize or not isinstance(data, (bytes, bytearray)):
            data = self._check_data(data)
        if a.ro_reason or self.readonly:
            self._writable(a)
        lane = self._next_lane
        self._next_lane = (lane + 1) % self.nlane
        free = a.free[lane] & _M
        if free >= a.inl:
            raise BttCorruptError(f"lane {lane} of arena {a.index} owns block {free}, past the arena")
        mcp = r.memcpy_persist
        # 1. data into the lane's free block
        mcp(a.dataoff + free * a.ilbasize, data)
        old = a.overlay.get(pre) if a.overlay else None
        if old is None:
            old = a.map_mv[pre]
        if old < 0x40000000:
            old = pre | _NORMAL
        new = free | _NORMAL
        seq = _NSEQ[a.seq[lane] & 3]
        foff = a.flogoff + lane * 64 + a.slots[a.next[lane]] * 16
        # 2. flog first half {lba, old_map} (one 8-byte store), durable
        mcp(foff, _PAIR.pack(pre, old))
        # 3. flog second half {new_map, seq}: the commit point
        mcp(foff + 8, _PAIR.pack(new, seq))
        # 4. the map entry
        mcp(a.mapoff + 4 * pre, _U32.pack(new))
        if a.overlay:
            a.overlay.pop(pre, None)
        a.seq[lane] = seq
        a.next[lane] ^= 1
        a.free[lane] = old

    def _set_flag(self, lba, flag):
        r = self._live()
        a, pre = self._locate(lba)
        self._writable(a)
        old = self._entry(a, pre)
        if old & 0xC0000000 == 0:
            old = pre | _NORMAL
        if flag == L.MAP_ZERO and old & 0xC0000000 == L.MAP_ZERO:
            return
        new = (old & _M) | flag
        moff = a.mapoff + 4 * pre
        r.write(moff, _U32.pack(new))
        r.persist(moff, 4)
        a.overlay.pop(pre, None)

    def set_zero(self, lba):
        """Mark ``lba`` as reading zeros (one atomic map update, like libpmemblk's set_zero)."""
        self._set_flag(lba, L.MAP_ZERO)

    def set_error(self, lba):
        """Flag ``lba`` as an error block: reads raise BttIOError until it is written again."""
        self._set_flag(lba, L.MAP_ERROR)

    # --- batched I/O -------------------------------------------------------------------------

    def _lbas(self, lbas):
        arr = np.asarray(lbas)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise InvalidArgumentError(f"lbas must be a 1-D sequence of integers, got shape {arr.shape}")
        if arr.size and arr.dtype.kind not in "iu":
            raise InvalidArgumentError(f"lbas must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
        if arr.size:
            bad = (arr < 0) | (arr >= self.nlba)
            if bad.any():
                first = int(arr[np.argmax(bad)])
                raise OutOfRangeError(
                    f"lba {first} is out of range: this BTT has {self.nlba} blocks "
                    f"(0..{self.nlba - 1})")
        return arr

    def _split(self, lbas):
        """Yield (arena, positions, pre-map lbas) groups."""
        if len(self.arenas) == 1:
            yield self.arenas[0], None, lbas
            return
        which = np.searchsorted(self._starts, lbas, side="right") - 1
        for i, a in enumerate(self.arenas):
            pos = np.nonzero(which == i)[0]
            if pos.size:
                yield a, pos, lbas[pos] - a.lba_start

    def read_many(self, lbas, out=None):
        """Read many blocks at once; returns a numpy uint8 array of shape (n, lbasize).

        ``out`` (optional) is a C-contiguous uint8 array of that shape to fill and return.
        """
        a = self._arena1
        if a is not None and type(lbas) is np.ndarray and lbas.dtype == _I64 and lbas.ndim == 1 \
                and not a.overlay and a.ilbasize == self.lbasize:
            # fast path: one arena, every entry normal. One reduction checks the range (a
            # negative lba is huge as uint64); the entries minus the NORMAL flags (uint32)
            # are the block numbers, and zero/error/initial entries wrap to >= 2**30, so a
            # second reduction checks flags and bounds together.
            k = lbas.size
            if k and _UMAX(lbas.view(_U64)) < self.nlba:
                blocks = _SUB(a.map_np.take(lbas), _NORMAL_U32)
                if _UMAX(blocks) < a.inl:
                    blocks = blocks.astype(np.intp)     # take() would convert it anyway
                    if out is None:
                        out = np.empty((k, self.lbasize), dtype=np.uint8)
                    elif type(out) is not np.ndarray or out.dtype != _U8 or \
                            out.shape != (k, self.lbasize) or not out.flags.c_contiguous:
                        return self._read_many(lbas, out)
                    a.data_np.take(blocks, axis=0, out=out, mode="clip")  # bounds checked
                    return out
        return self._read_many(lbas, out)

    def _read_many(self, lbas, out):
        self._live()
        lbas = self._lbas(lbas)
        shape = (lbas.size, self.lbasize)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape \
                or not out.flags.c_contiguous:
            raise InvalidArgumentError(f"out must be a C-contiguous uint8 array of shape {shape}")
        for a, pos, pre in self._split(lbas):
            ent = a.map_np[pre]
            if a.overlay:
                for key, v in a.overlay.items():
                    ent[pre == key] = v
            if int(ent.min(initial=0xFFFFFFFF)) >= _NORMAL:
                normal = None          # the common case: every entry is a normal one
                blocks = (ent & np.uint32(_M)).astype(np.intp)
            else:
                flags = ent & np.uint32(0xC0000000)
                err = flags == np.uint32(L.MAP_ERROR)
                if err.any():
                    i = int(np.argmax(err))
                    raise BttIOError(f"lba {a.lba_start + int(pre[i])} is flagged as an error "
                                     f"block (EIO); write it to clear the error")
                normal = flags == np.uint32(_NORMAL)
                blocks = np.where(normal, ent & np.uint32(_M), 0).astype(np.intp)
            if blocks.size and int(blocks.max()) >= a.info.internal_nlba:
                i = int(np.argmax(blocks >= a.info.internal_nlba))
                raise BttCorruptError(
                    f"map entry 0x{int(ent[i]):08x} of lba {a.lba_start + int(pre[i])} points "
                    f"past the {a.info.internal_nlba} blocks of arena {a.index}; run check()")
            if pos is None and a.ilbasize == self.lbasize:
                np.take(a.data_np, blocks, axis=0, out=out, mode="clip")  # bounds checked above
                if normal is not None:
                    out[~normal] = 0
                continue
            rows = a.data_np[blocks, :self.lbasize]
            if normal is not None:
                rows[~normal] = 0
            if pos is None:
                out[:] = rows
            else:
                out[pos] = rows
        return out

    def write_many(self, lbas, data):
        """Write many blocks; each block is atomic, and batches of up to ``nlane``
        distinct blocks share the four persistence points (all lanes at once). On a pmem
        mapping the data copies are non-temporal with a fence each, like libpmemblk's.

        When an lba appears more than once, its last data wins, as if the blocks
        were written one by one (the earlier copies are not written at all).
        """
        r = self._live()
        lbas = self._lbas(lbas)
        n = lbas.size
        arr = np.asarray(data) if not isinstance(data, (bytes, bytearray, memoryview)) \
            else np.frombuffer(data, dtype=np.uint8)
        if arr.dtype != np.uint8:
            raise InvalidArgumentError(f"data must be uint8 (or bytes), got dtype {arr.dtype}")
        if arr.size != n * self.lbasize:
            raise InvalidArgumentError(
                f"data holds {arr.size} bytes; {n} blocks of {self.lbasize} bytes need "
                f"{n * self.lbasize}")
        arr = arr.reshape(n, self.lbasize)
        if self.readonly:
            self._writable(self.arenas[0])
        for a, pos, pre in self._split(lbas):
            self._writable(a)
        if n == 0:
            return
        nlane = self.nlane
        srt = np.sort(lbas)
        if n > 1 and not (srt[1:] != srt[:-1]).all():
            uniq, first_rev = np.unique(lbas[::-1], return_index=True)
            # a later write of the same lba supersedes an earlier one in the same call:
            # keep the last, in call order (the result is as if written one by one)
            keep = np.sort(n - 1 - first_rev)
            lbas, arr = lbas[keep], arr[keep]
        for a, pos, pre in self._split(lbas):
            rows = arr if pos is None else arr[pos]
            for s in range(0, pre.size, nlane):
                self._write_batch(r, a, pre[s:s + nlane], rows[s:s + nlane])

    def _write_batch(self, r, a, pre, rows):
        """Write k <= nlane distinct blocks of one arena through lanes lo..lo+k-1."""
        k = pre.size
        lo = self._next_lane if self._next_lane + k <= self.nlane else 0
        hi = lo + k
        self._next_lane = hi % self.nlane
        blocks = (a.free_np[lo:hi] & np.uint32(_M)).astype(np.intp)
        if int(blocks.max()) >= a.info.internal_nlba:
            raise BttCorruptError(f"a lane of arena {a.index} owns a block past the arena")
        lbasize = self.lbasize
        # 1. data into the lanes' free blocks
        if self._nt_copies:
            # on pmem: non-temporal copies, one fence each, as libpmemblk does (cheaper than
            # cached stores + CLWB when the free blocks are cold)
            mcp = r.memcpy_persist
            flat = memoryview(np.ascontiguousarray(rows)).cast("B")
            pos = 0
            for off in (a.dataoff + blocks * a.ilbasize).tolist():
                mcp(off, flat[pos:pos + lbasize])
                pos += lbasize
        else:
            if a.ilbasize == lbasize:
                a.data_np[blocks] = rows
            else:
                a.data_np[blocks, :lbasize] = rows
            _flush_blocks(r, a.dataoff, blocks, a.ilbasize, lbasize)
            r.drain()
        old = a.map_np[pre]
        if a.overlay:
            for key, v in a.overlay.items():
                old[pre == key] = v
        initial = old < np.uint32(0x40000000)
        if initial.any():
            old = np.where(initial, pre.astype(np.uint32) | np.uint32(_NORMAL), old)
        old = old.astype(np.uint64)
        new = blocks.astype(np.uint64) | np.uint64(_NORMAL)
        seqs = _NSEQ_NP[a.seq_np[lo:hi] & np.uint32(3)]
        slot_of = _SLOTS_NP[a.slots]
        nxt = a.next_np[lo:hi]
        idx = np.arange(0, 8 * k, 8, dtype=np.intp) + slot_of[nxt]
        flog = a.flog64[lo:hi].reshape(-1)
        fstart, flen = a.flogoff + lo * L.FLOG_PAIR_SIZE, k * L.FLOG_PAIR_SIZE
        # 2. flog first halves {lba, old_map}
        flog[idx] = pre.astype(np.uint64) | (old << np.uint64(32))
        r.flush(fstart, flen)
        r.drain()
        # 3. flog second halves {new_map, seq}: the commit points
        flog[idx + 1] = new | (seqs << np.uint64(32))
        r.flush(fstart, flen)
        r.drain()
        # 4. the map
        a.map_np[pre] = new.astype(np.uint32)
        _flush_lines(r, a.mapoff, pre * 4)
        r.drain()
        if a.overlay:
            for p in pre.tolist():
                a.overlay.pop(p, None)
        a.free_np[lo:hi] = old
        a.seq_np[lo:hi] = seqs
        nxt ^= np.uint8(1)

    # --- checking ----------------------------------------------------------------------------

    def check(self):
        """Consistency check (like ``pmempool check``): a list of problems, empty when consistent."""
        r = self._live()
        problems = list(self.messages)
        for a in self.arenas:
            problems.extend(_check_arena(r, a))
        return problems

    def info(self):
        """A dict describing the layout (what ``pmemkit btt info`` prints)."""
        self._live()
        out = {"offset": self.offset, "version": self.version, "lbasize": self.lbasize,
               "nlba": self.nlba, "nlane": self.nlane, "arenas": []}
        for a in self.arenas:
            i = a.info
            states = np.bincount((a.map_np >> np.uint32(30)).astype(np.int64), minlength=4)
            out["arenas"].append({
                "index": a.index, "offset": a.start, "uuid": i.uuid_str,
                "parent_uuid": i.parent_uuid_str, "flags": i.flags, "version": i.version,
                "external_lbasize": i.external_lbasize, "external_nlba": i.external_nlba,
                "internal_lbasize": i.internal_lbasize, "internal_nlba": i.internal_nlba,
                "nfree": i.nfree, "nextoff": i.nextoff, "dataoff": i.dataoff, "mapoff": i.mapoff,
                "flogoff": i.flogoff, "infooff": i.infooff, "checksum": i.checksum,
                "flog_slots": a.slots, "read_only": a.ro_reason,
                "map": {"initial": int(states[0]), "error": int(states[1]),
                        "zero": int(states[2]), "normal": int(states[3])},
            })
        return out


# --- helpers used by create/open ---------------------------------------------------------


def _int(value, what):
    try:
        return operator.index(value)
    except TypeError:
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}") from None


def _uuid_bytes(value):
    if isinstance(value, _uuid.UUID):
        return value.bytes_le
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    try:
        return _uuid.UUID(str(value)).bytes_le
    except ValueError:
        raise InvalidArgumentError(f"not a UUID: {value!r}") from None


def write_arena_layout(region, start, info, flog_flags=0):
    """Write a fresh arena (zeroed map, initial flog, both info blocks) and persist it."""
    region.memset_persist(start + info.mapoff, 0, L.map_size(info.external_nlba))
    flog = np.zeros(L.flog_size(info.nfree), dtype=np.uint8)
    init = L.initial_flog(info, flog_flags)
    flog[:init.nbytes] = init.view(np.uint8).reshape(-1)
    region.memcpy_persist(start + info.flogoff, flog)
    raw = info.pack()
    region.memcpy_persist(start + info.infooff, raw)
    region.memcpy_persist(start, raw)


def _backup_candidates(start, remaining, arena_size):
    sizes = []
    for cap in ([arena_size] if arena_size else []) + [L.MAX_ARENA_SIZE]:
        s = min(remaining, cap)
        sizes += [s, s - s % L.BTT_ALIGNMENT]
    seen = []
    for s in sizes:
        off = start + s - L.INFO_SIZE
        if s >= 2 * L.INFO_SIZE and off not in seen:
            seen.append(off)
    return seen


def _read_arenas(region, offset, *, readonly, arena_size, parent_uuid):
    arenas = []
    messages = []
    pos = offset
    end = region.size
    while True:
        remaining = end - pos
        if remaining < 2 * L.INFO_SIZE:
            raise BttCorruptError(
                f"arena {len(arenas)} would start at offset {pos}, but only {remaining} bytes "
                f"remain in the target")
        raw = region.read(pos, L.INFO_SIZE)
        problem = L.info_problem(raw)
        used_backup = None
        if problem is None and parent_uuid is not None and bytes(raw[32:48]) != parent_uuid:
            problem = "parent uuid does not match the pool"
        if problem is not None:
            tried = []
            for boff in _backup_candidates(pos, remaining, arena_size):
                braw = region.read(boff, L.INFO_SIZE)
                bprob = L.info_problem(braw)
                if bprob is None:
                    binfo = L.Info.unpack(braw)
                    if binfo.infooff != boff - pos:
                        bprob = f"records its own offset as 0x{binfo.infooff:x}"
                if bprob is None:
                    raw, used_backup = braw, boff
                    break
                tried.append(f"backup at offset {boff}: {bprob}")
            if used_backup is None:
                what = "no BTT found" if not arenas and bytes(raw[:16]) != L.SIGNATURE else \
                    "BTT is corrupt"
                raise BttCorruptError(
                    f"{what}: arena {len(arenas)} info block at offset {pos}: {problem}; "
                    + ("; ".join(tried) if tried else "no backup location to try")
                    + (". Check the offset (Linux label-less 1.1 namespaces put the info block "
                       "at 4 KiB), or recreate the BTT" if not arenas else ""))
            messages.append(
                f"arena {len(arenas)}: primary info block at offset {pos} is invalid "
                f"({problem}); using the backup at offset {used_backup}"
                + ("" if readonly else "; primary restored from it"))
            if not readonly:
                region.memcpy_persist(pos, raw)
        info = L.Info.unpack(raw)
        arena_span = info.nextoff if info.nextoff else remaining
        if arena_span > remaining:
            raise BttCorruptError(
                f"arena {len(arenas)} at offset {pos}: next arena offset 0x{info.nextoff:x} "
                f"lies past the end of the target")
        geo = L.geometry_problem(info, arena_span)
        if geo:
            raise BttCorruptError(f"arena {len(arenas)} at offset {pos}: {geo}")
        if arenas and info.external_lbasize != arenas[0].info.external_lbasize:
            raise BttCorruptError(
                f"arena {len(arenas)} has lbasize {info.external_lbasize}, arena 0 "
                f"{arenas[0].info.external_lbasize}")
        a = _Arena(len(arenas), pos, info, 0)
        if info.flags & L.FLAG_ERROR:
            a.ro_reason = "its info block has the error flag set"
        if used_backup is None and not readonly:
            braw = region.read(pos + info.infooff, L.INFO_SIZE)
            if L.info_problem(braw) is not None:
                messages.append(f"arena {a.index}: backup info block at offset "
                                f"{pos + info.infooff} is invalid ({L.info_problem(braw)})")
        arenas.append(a)
        if not info.nextoff:
            break
        pos += info.nextoff
    return arenas, messages


def _load_flog(region, a):
    raw = np.frombuffer(region.read(a.flogoff, a.nfree * L.FLOG_PAIR_SIZE), dtype="<u4")
    pairs = raw.reshape(a.nfree, 16)
    # Linux before 4.15 used slots 0 and 2 of each 64-byte group.
    if not pairs[:, 4:8].any() and pairs[:, 8:12].any():
        a.slots = (0, 2)
    entries, nxt, bad = L.current_flog(pairs, a.slots)
    a.flog_entries = entries.copy()
    a.flog_bad = bad
    inl = a.info.internal_nlba
    if bad.any():
        lane = int(np.argmax(bad))
        s0, s1 = a.slots
        a.ro_reason = (f"flog pair {lane} has unusable sequence numbers "
                       f"({int(pairs[lane, s0 * 4 + 3])}, {int(pairs[lane, s1 * 4 + 3])})")
    else:
        lba_bad = entries[:, 0] >= a.nlba
        blk_bad = ((entries[:, 1] & _M) >= inl) | ((entries[:, 2] & _M) >= inl)
        if lba_bad.any():
            lane = int(np.argmax(lba_bad))
            a.ro_reason = f"flog entry of lane {lane} names lba {int(entries[lane, 0])}, past the arena"
        elif blk_bad.any():
            lane = int(np.argmax(blk_bad))
            a.ro_reason = f"flog entry of lane {lane} names a block past the arena"
    a.free = array("I", entries[:, 1].astype(np.uint32).tobytes())
    a.seq = array("I", entries[:, 3].astype(np.uint32).tobytes())
    a.next = array("B", nxt.astype(np.uint8).tobytes())
    a.free_np = np.frombuffer(a.free, dtype=np.uint32)
    a.seq_np = np.frombuffer(a.seq, dtype=np.uint32)
    a.next_np = np.frombuffer(a.next, dtype=np.uint8)


def _recover(region, a, readonly):
    if a.ro_reason and a.flog_bad is not None and a.flog_bad.any():
        usable = ~a.flog_bad
    else:
        usable = np.ones(a.nfree, dtype=bool)
    e = a.flog_entries
    for lane in np.nonzero(usable & ((e[:, 1] & _M) != (e[:, 2] & _M)))[0].tolist():
        lba, old, new = int(e[lane, 0]), int(e[lane, 1]), int(e[lane, 2])
        if lba >= a.nlba or (new & _M) >= a.info.internal_nlba:
            continue
        moff = a.mapoff + 4 * lba
        cur = a.overlay.get(lba)
        if cur is None:
            cur = _U32.unpack(region.read(moff, 4))[0]
        cur_blk = lba if cur & 0xC0000000 == 0 else cur & _M
        if cur_blk == old & _M and cur_blk != new & _M:
            fixed = new if new & 0xC0000000 else new | _NORMAL
            if readonly or a.ro_reason:
                a.overlay[lba] = fixed
            else:
                region.write(moff, _U32.pack(fixed))
                region.persist(moff, 4)


def _flush_blocks(r, base, blocks, stride, length):
    """Flush the first ``length`` bytes of each block, coalescing neighbours."""
    if blocks.size == 0:
        return
    b = np.sort(blocks)
    if stride == length:
        cut = np.nonzero(np.diff(b) != 1)[0] + 1
        starts = np.concatenate(([0], cut))
        ends = np.concatenate((cut, [b.size]))
        for s, e in zip(b[starts].tolist(), (ends - starts).tolist()):
            r.flush(base + s * stride, e * stride)
    else:
        for s in b.tolist():
            r.flush(base + s * stride, length)


def _flush_lines(r, base, offsets):
    """Flush the cache lines holding ``base + offsets`` (numpy), merged into runs."""
    if offsets.size == 0:
        return
    lines = np.sort((base + offsets) // CACHE_LINE)
    first, last = int(lines[0]), int(lines[-1])
    if last - first + 1 <= 4 * lines.size:      # dense enough: one range
        r.flush(first * CACHE_LINE, (last - first + 1) * CACHE_LINE)
        return
    lines = lines[np.concatenate(([True], lines[1:] != lines[:-1]))]
    cut = np.nonzero(np.diff(lines) != 1)[0] + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [lines.size]))
    for s, n in zip(lines[starts].tolist(), (ends - starts).tolist()):
        r.flush(s * CACHE_LINE, n * CACHE_LINE)


def _check_arena(r, a):
    problems = []
    tag = f"arena {a.index}"
    if a.ro_reason:
        problems.append(f"{tag}: {a.ro_reason}")
    braw = r.read(a.infooff, L.INFO_SIZE)
    bprob = L.info_problem(braw)
    praw = r.read(a.start, L.INFO_SIZE)
    if bprob:
        problems.append(f"{tag}: backup info block at offset {a.infooff}: {bprob}")
    elif bytes(braw) != bytes(praw):
        problems.append(f"{tag}: backup info block at offset {a.infooff} differs from the primary")
    inl = a.info.internal_nlba
    ent = a.map_np.copy()
    for k, v in a.overlay.items():
        ent[k] = v
    initial = (ent & np.uint32(0xC0000000)) == 0
    blocks = np.where(initial, np.arange(a.nlba, dtype=np.uint32), ent & np.uint32(_M)).astype(np.int64)
    oob = blocks >= inl
    if oob.any():
        idx = np.nonzero(oob)[0]
        problems.append(f"{tag}: {idx.size} map entries point past the {inl} blocks "
                        f"(first: lba {a.lba_start + int(idx[0])} -> {int(blocks[idx[0]])})")
    if a.flog_bad is not None and a.flog_bad.any():
        return problems
    free = (np.array(a.free, dtype=np.uint32) & np.uint32(_M)).astype(np.int64)
    foob = free >= inl
    if foob.any():
        problems.append(f"{tag}: {int(foob.sum())} flog entries hold a free block past the arena")
    allb = np.concatenate((blocks[~oob], free[~foob]))
    counts = np.bincount(allb, minlength=inl)
    dup = np.nonzero(counts > 1)[0]
    if dup.size:
        problems.append(f"{tag}: {dup.size} blocks are referenced more than once "
                        f"(first: block {int(dup[0])})")
    missing = np.nonzero(counts[:inl] == 0)[0]
    if missing.size:
        problems.append(f"{tag}: {missing.size} blocks are unreferenced (first: block "
                        f"{int(missing[0])})")
    return problems


def locate(target, *, step=L.BTT_ALIGNMENT, limit=1 << 20):
    """Offsets (multiples of ``step`` in the first ``limit`` bytes) holding a valid BTT info block.

    Finds the BTT inside a namespace image: 4096 for label-less (1.1) Linux
    namespaces, 0 for labelled (2.0) ones, 8192 in libpmemblk pools.
    """
    region, owned = _open_target(target)
    try:
        found = []
        end = min(region.size - L.INFO_SIZE, limit)
        mv = region.buffer
        try:
            for off in range(0, end + 1, step):
                if bytes(mv[off:off + 16]) == L.SIGNATURE and \
                        L.info_problem(mv[off:off + L.INFO_SIZE]) is None:
                    infooff = L.Info.unpack(mv[off:off + L.INFO_SIZE]).infooff
                    b = off + infooff
                    if infooff and b + L.INFO_SIZE <= region.size and \
                            L.info_problem(mv[b:b + L.INFO_SIZE]) is None:
                        found.append(off)
        finally:
            mv.release()
        return found
    finally:
        if owned:
            region.close()

