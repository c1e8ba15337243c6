"""Batched BTT I/O: ``read_many`` and ``write_many`` over numpy arrays.

:class:`BatchIO` is the batched half of :class:`~pmemkit.btt.Btt` (which derives
from it). ``write_many`` runs the same four-step commit as a single write
(:mod:`.device`), vectorised over up to ``nlane`` distinct blocks: all lanes'
data, then all flog first halves, all commit halves and all map entries, one
persistence point each.
"""

from __future__ import annotations

import numpy as np

from ..errors import BttCorruptError, BttIOError, InvalidArgumentError, OutOfRangeError
from ..region import CACHE_LINE, as_int
from . import layout

_NEXT_SEQ = np.array(layout.NSEQ, dtype=np.uint64)
# read_many's fast path: dtypes and ufunc methods looked up once
_INT64, _UINT64, _UINT8 = np.dtype(np.int64), np.dtype(np.uint64), np.dtype(np.uint8)
_MAX, _SUBTRACT = np.maximum.reduce, np.subtract
_NORMAL_U32 = np.uint32(layout.MAP_NORMAL)
_FLAG_MASK_U32 = np.uint32(layout.MAP_FLAG_MASK)
_LBA_MASK_U32 = np.uint32(layout.MAP_LBA_MASK)
# index of the uint64 holding {lba, old_map} of each flog slot inside a 64-byte pair
_SLOT_WORDS = {slots: np.array([s * layout.FLOG_ENTRY_SIZE // 8 for s in slots], dtype=np.intp)
               for slots in (layout.FLOG_SLOTS, layout.FLOG_SLOTS_OLD_LINUX)}


def _runs(sorted_values):
    """Runs of consecutive integers in a sorted numpy array: ``(firsts, lengths)`` as lists."""
    cut = np.nonzero(np.diff(sorted_values) != 1)[0] + 1
    starts = np.concatenate(([0], cut))
    ends = np.concatenate((cut, [sorted_values.size]))
    return sorted_values[starts].tolist(), (ends - starts).tolist()


def _flush_blocks(region, base, blocks, stride, length):
    """Flush the first ``length`` bytes of each block, coalescing neighbours."""
    if blocks.size == 0:
        return
    blocks = np.sort(blocks)
    if stride == length:
        for first, count in zip(*_runs(blocks), strict=True):
            region.flush(base + first * stride, count * stride)
    else:
        for block in blocks.tolist():
            region.flush(base + block * stride, length)


def _flush_lines(region, base, offsets):
    """Flush the cache lines holding ``base + offsets`` (numpy), merged into runs."""
    if offsets.size == 0:
        return
    lines = np.sort((base + offsets) // CACHE_LINE)
    first, last = int(lines[0]), int(lines[-1])
    if last - first + 1 <= 4 * lines.size:      # dense enough: one range
        region.flush(first * CACHE_LINE, (last - first + 1) * CACHE_LINE)
        return
    lines = lines[np.concatenate(([True], lines[1:] != lines[:-1]))]
    for line, count in zip(*_runs(lines), strict=True):
        region.flush(line * CACHE_LINE, count * CACHE_LINE)


class BatchIO:
    """``read_many``/``write_many`` of a :class:`~pmemkit.btt.Btt` (uses its arenas and lanes)."""

    def _lbas(self, lbas):
        lbas = np.asarray(lbas)
        if lbas.ndim == 0:
            lbas = lbas.reshape(1)
        if lbas.ndim != 1:
            raise InvalidArgumentError(
                f"lbas must be a 1-D sequence of integers, got shape {lbas.shape}")
        if lbas.dtype == object:           # Python ints past int64, or not integers at all
            lbas = np.array([as_int(lba, "lba") for lba in lbas.tolist()], dtype=object)
            if lbas.size:
                bad = [lba for lba in lbas.tolist() if not 0 <= lba < self.nlba]
                if bad:
                    raise OutOfRangeError(
                        f"lba {bad[0]} is out of range: this BTT has {self.nlba} blocks "
                        f"(0..{self.nlba - 1})")
            lbas = lbas.astype(np.int64)
        if lbas.size and lbas.dtype.kind not in "iu":
            raise InvalidArgumentError(f"lbas must be integers, got dtype {lbas.dtype}")
        lbas = lbas.astype(np.int64, copy=False)
        if lbas.size:
            bad = (lbas < 0) | (lbas >= self.nlba)
            if bad.any():
                raise OutOfRangeError(
                    f"lba {int(lbas[np.argmax(bad)])} is out of range: this BTT has {self.nlba} "
                    f"blocks (0..{self.nlba - 1})")
        return lbas

    def _split(self, lbas):
        """Yield ``(arena, positions, pre-map lbas)`` groups (positions None: all of them)."""
        if len(self.arenas) == 1:
            yield self.arenas[0], None, lbas
            return
        which = np.searchsorted(self._starts, lbas, side="right") - 1
        for i, arena in enumerate(self.arenas):
            positions = np.nonzero(which == i)[0]
            if positions.size:
                yield arena, positions, lbas[positions] - arena.lba_start

    # --- reads ------------------------------------------------------------------------------

    def read_many(self, lbas, out=None):
        """Read many blocks at once; returns a numpy uint8 array of shape (n, lbasize).

        ``out`` (optional) is a C-contiguous uint8 array of that shape to fill and return.
        """
        arena = self._single_arena
        if (arena is not None and type(lbas) is np.ndarray and lbas.dtype == _INT64
                and lbas.ndim == 1 and not arena.overlay
                and arena.internal_lbasize == self.lbasize):
            # fast path: one arena, every entry normal. One reduction checks the range (a
            # negative lba is huge as uint64); the entries minus the NORMAL flags (uint32)
            # are the block numbers, and zero/error/initial entries wrap to >= 2**30, so a
            # second reduction checks flags and bounds together.
            count = lbas.size
            if count and _MAX(lbas.view(_UINT64)) < self.nlba:
                blocks = _SUBTRACT(arena.map_np.take(lbas), _NORMAL_U32)
                if _MAX(blocks) < arena.internal_nlba:
                    blocks = blocks.astype(np.intp)     # take() would convert it anyway
                    if out is None:
                        out = np.empty((count, self.lbasize), dtype=np.uint8)
                    elif (type(out) is not np.ndarray or out.dtype != _UINT8
                          or out.shape != (count, self.lbasize) or not out.flags.c_contiguous):
                        return self._read_many(lbas, out)
                    arena.data_np.take(blocks, axis=0, out=out, mode="clip")  # bounds checked
                    return out
        return self._read_many(lbas, out)

    def _read_many(self, lbas, out):
        self._live()
        lbas = self._lbas(lbas)
        shape = (lbas.size, self.lbasize)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.shape != shape
              or not out.flags.c_contiguous):
            raise InvalidArgumentError(f"out must be a C-contiguous uint8 array of shape {shape}")
        for arena, positions, premaps in self._split(lbas):
            entries = arena.entries(premaps)
            if int(entries.min(initial=0xFFFFFFFF)) >= layout.MAP_NORMAL:
                normal = None          # the common case: every entry is a normal one
                blocks = (entries & _LBA_MASK_U32).astype(np.intp)
            else:
                flags = entries & _FLAG_MASK_U32
                error = flags == np.uint32(layout.MAP_ERROR)
                if error.any():
                    i = int(np.argmax(error))
                    lba = arena.lba_start + int(premaps[i])
                    raise BttIOError(f"lba {lba} is flagged as an error block (EIO); write it to "
                                     "clear the error", lba=lba)
                normal = flags == _NORMAL_U32
                blocks = np.where(normal, entries & _LBA_MASK_U32, 0).astype(np.intp)
            if blocks.size and int(blocks.max()) >= arena.internal_nlba:
                i = int(np.argmax(blocks >= arena.internal_nlba))
                lba = arena.lba_start + int(premaps[i])
                raise BttCorruptError(
                    f"map entry 0x{int(entries[i]):08x} of lba {lba} points past the "
                    f"{arena.internal_nlba} blocks of arena {arena.index}; run check()", lba=lba)
            if positions is None and arena.internal_lbasize == self.lbasize:
                np.take(arena.data_np, blocks, axis=0, out=out, mode="clip")  # checked above
                if normal is not None:
                    out[~normal] = 0
                continue
            rows = arena.data_np[blocks, :self.lbasize]
            if normal is not None:
                rows[~normal] = 0
            if positions is None:
                out[:] = rows
            else:
                out[positions] = rows
        return out

    # --- writes -----------------------------------------------------------------------------

    def write_many(self, lbas, data):
        """Write many blocks; each block is atomic, and batches of up to ``nlane``
        distinct blocks share the four persistence points (all lanes at once). Where the
        region copies non-temporally (``nt_copies``) each block's data is copied with its
        own fence, like libpmemblk's.

        When an lba appears more than once, its last data wins, as if the blocks
        were written one by one (the earlier copies are not written at all).
        """
        region = self._live()
        lbas = self._lbas(lbas)
        count = lbas.size
        if isinstance(data, (bytes, bytearray, memoryview)):
            rows = np.frombuffer(data, dtype=np.uint8)
        else:
            rows = np.asarray(data)
        if rows.dtype != np.uint8:
            raise InvalidArgumentError(f"data must be uint8 (or bytes), got dtype {rows.dtype}")
        if rows.size != count * self.lbasize:
            raise InvalidArgumentError(
                f"data holds {rows.size} bytes; {count} blocks of {self.lbasize} bytes need "
                f"{count * self.lbasize}")
        rows = rows.reshape(count, self.lbasize)
        if self.readonly:
            self._writable(self.arenas[0])
        for arena, _, _ in self._split(lbas):
            self._writable(arena)
        if count == 0:
            return
        ordered = np.sort(lbas)
        if count > 1 and not (ordered[1:] != ordered[:-1]).all():
            _, first_reversed = np.unique(lbas[::-1], return_index=True)
            # a later write of the same lba supersedes an earlier one in the same call:
            # keep the last, in call order (the result is as if written one by one)
            keep = np.sort(count - 1 - first_reversed)
            lbas, rows = lbas[keep], rows[keep]
        nlane = self.nlane
        for arena, positions, premaps in self._split(lbas):
            arena_rows = rows if positions is None else rows[positions]
            for s in range(0, premaps.size, nlane):
                self._commit_many(region, arena, premaps[s:s + nlane], arena_rows[s:s + nlane])

    def _take_lanes(self, count):
        """``count`` consecutive lanes from the lane cursor (wrapping to 0 when they do not fit)."""
        cursor = self._lane_cursor
        first = cursor[0] if cursor[0] + count <= self.nlane else 0
        cursor[0] = (first + count) % self.nlane
        return first, first + count

    def _commit_many(self, region, arena, premaps, rows):
        """The write protocol for k <= nlane distinct blocks of one arena, all lanes at once
        (the vectorised twin of :func:`pmemkit.btt.device.bind_commit`)."""
        count = premaps.size
        lo, hi = self._take_lanes(count)
        blocks = (arena.free_np[lo:hi] & _LBA_MASK_U32).astype(np.intp)
        if int(blocks.max()) >= arena.internal_nlba:
            raise BttCorruptError(f"a lane of arena {arena.index} owns a block past the arena")
        lbasize = self.lbasize
        # 1. data into the lanes' free blocks
        if self._nt_copies:
            # non-temporal copies, one fence each, as libpmemblk does (cheaper than cached
            # stores + CLWB when the free blocks are cold)
            persist_copy = region.memcpy_persist
            flat = memoryview(np.ascontiguousarray(rows)).cast("B")
            pos = 0
            for off in (arena.dataoff + blocks * arena.internal_lbasize).tolist():
                persist_copy(off, flat[pos:pos + lbasize])
                pos += lbasize
        else:
            if arena.internal_lbasize == lbasize:
                arena.data_np[blocks] = rows
            else:
                arena.data_np[blocks, :lbasize] = rows
            _flush_blocks(region, arena.dataoff, blocks, arena.internal_lbasize, lbasize)
            region.drain()
        old = arena.entries(premaps)
        initial = (old & _FLAG_MASK_U32) == layout.MAP_INITIAL
        if initial.any():
            old = np.where(initial, premaps.astype(np.uint32) | _NORMAL_U32, old)
        old = old.astype(np.uint64)
        new = blocks.astype(np.uint64) | np.uint64(layout.MAP_NORMAL)
        seqs = _NEXT_SEQ[arena.seq_np[lo:hi] & np.uint32(layout.SEQ_MASK)]
        next_slot = arena.next_np[lo:hi]
        words = (np.arange(0, 8 * count, 8, dtype=np.intp)
                 + _SLOT_WORDS[arena.slots][next_slot])
        flog = arena.flog64[lo:hi].reshape(-1)
        flog_start = arena.flogoff + lo * layout.FLOG_PAIR_SIZE
        flog_length = count * layout.FLOG_PAIR_SIZE
        # 2. flog first halves {lba, old_map}
        flog[words] = premaps.astype(np.uint64) | (old << np.uint64(32))
        region.flush(flog_start, flog_length)
        region.drain()
        # 3. flog second halves {new_map, seq}: the commit points
        flog[words + 1] = new | (seqs << np.uint64(32))
        region.flush(flog_start, flog_length)
        region.drain()
        # 4. the map
        arena.map_np[premaps] = new.astype(np.uint32)
        _flush_lines(region, arena.mapoff, premaps * layout.MAP_ENTRY_SIZE)
        region.drain()
        if arena.overlay:
            for premap in premaps.tolist():
                arena.overlay.pop(premap, None)
        arena.free_np[lo:hi] = old
        arena.seq_np[lo:hi] = seqs
        next_slot ^= np.uint8(1)
