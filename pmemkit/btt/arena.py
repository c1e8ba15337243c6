"""Arena I/O: find a BTT's arenas in a region, load their flogs, recover, lay out, check.

An arena is ``info block | data blocks | map | flog | backup info block`` (see
:mod:`.layout`). :class:`Arena` holds one arena's run-time state (offsets made
absolute within the region, the lanes' flog state, numpy and memoryview views of
the map, data and flog); the functions here read and write the media through the
:class:`~pmemkit.region.Region` contract only.
"""

from __future__ import annotations

import os
import struct
from array import array

import numpy as np

from ..errors import BttCorruptError
from ..region import as_region
from . import layout

_U32 = struct.Struct("<I")


def open_target(target, *, size=None, create=False, writable=True):
    """Return ``(region, owned)`` for a path, a Region or a writable buffer.

    A path is mapped with :func:`~pmemkit.mapping.map_file`; ``writable=False`` maps it
    read-only, so that a file without write permission can be read.
    """
    if isinstance(target, (str, os.PathLike)):
        from ..mapping import map_file

        if create and size is not None:
            exists = os.path.exists(target)
            current = os.path.getsize(target) if exists else 0
            return map_file(target, max(size, current), create=True), True
        return map_file(target, writable=writable), True
    return as_region(target), False


class Arena:
    """Run-time state of one arena (offsets absolute within the region)."""

    def __init__(self, index, start, info):
        self.index = index
        self.start = start
        self.info = info
        self.lba_start = 0            # the first external lba of this arena in the device
        self.nlba = info.external_nlba
        self.internal_nlba = info.internal_nlba
        self.internal_lbasize = info.internal_lbasize
        self.dataoff = start + info.dataoff
        self.mapoff = start + info.mapoff
        self.flogoff = start + info.flogoff
        self.infooff = start + info.infooff
        self.nfree = info.nfree
        self.ro_reason = None
        #: pre-map lba -> map entry, the roll-forwards of a recovery that could not write
        self.overlay = {}
        self.slots = layout.FLOG_SLOTS
        # per lane, as array.array (fast int access from Python) with numpy views of the
        # same memory (batched updates): raw old_map of the current flog entry (the lane's
        # free block), its seq, and which slot of the pair is written next
        self.free = self.seq = self.next = None
        self.free_np = self.seq_np = self.next_np = None
        self.flog_entries = None    # numpy (nfree, 4) current entries, for check()
        self.flog_bad = None
        # views of the media, made by attach_views
        self.map_mv = None
        self.map_np = None
        self.data_np = None
        self.flog64 = None

    # --- views ----------------------------------------------------------------------------

    def attach_views(self, region, buffer):
        """Map, data and flog views over ``region`` (``buffer`` is a memoryview of it)."""
        self.map_mv = buffer[self.mapoff:self.mapoff + layout.MAP_ENTRY_SIZE * self.nlba].cast("I")
        self.map_np = region.array("<u4", self.nlba, self.mapoff)
        self.data_np = region.array(np.uint8, (self.internal_nlba, self.internal_lbasize),
                                    self.dataoff)
        self.flog64 = region.array("<u8", (self.nfree, layout.FLOG_PAIR_SIZE // 8), self.flogoff)

    def release_views(self):
        if self.map_mv is not None:
            self.map_mv.release()
        self.map_mv = self.map_np = self.data_np = self.flog64 = None

    # --- map entries ----------------------------------------------------------------------

    def entry(self, premap):
        """The map entry of pre-map lba ``premap`` (a pending read-only roll-forward wins)."""
        if self.overlay:
            found = self.overlay.get(premap)
            if found is not None:
                return found
        return self.map_mv[premap]

    def entries(self, premaps):
        """The map entries of a numpy array of pre-map lbas (a copy)."""
        found = self.map_np[premaps]
        for premap, entry in self.overlay.items():
            found[premaps == premap] = entry
        return found

    def block_offset(self, entry, premap):
        """Region offset of the block ``entry`` points to; BttCorruptError past the arena."""
        block = layout.map_block(entry, premap)
        if block >= self.internal_nlba:
            raise BttCorruptError(
                f"map entry 0x{entry:08x} of lba {self.lba_start + premap} (arena {self.index}) "
                f"points past the {self.internal_nlba} blocks of the arena; run check()",
                lba=self.lba_start + premap)
        return self.dataoff + block * self.internal_lbasize

    # --- flog and recovery ----------------------------------------------------------------

    def load_flog(self, region):
        """Read the flog: each lane's current entry, free block, seq and next slot."""
        raw = np.frombuffer(region.read(self.flogoff, self.nfree * layout.FLOG_PAIR_SIZE),
                            dtype="<u4")
        pairs = raw.reshape(self.nfree, layout.FLOG_PAIR_SIZE // 4)
        if not pairs[:, 4:8].any() and pairs[:, 8:12].any():
            self.slots = layout.FLOG_SLOTS_OLD_LINUX
        entries, next_slot, bad = layout.current_flog(pairs, self.slots)
        self.flog_entries = entries.copy()
        self.flog_bad = bad
        limit = self.internal_nlba
        if bad.any():
            lane = int(np.argmax(bad))
            first, second = self.slots
            self.ro_reason = (f"flog pair {lane} has unusable sequence numbers "
                              f"({int(pairs[lane, first * 4 + 3])}, "
                              f"{int(pairs[lane, second * 4 + 3])})")
        else:
            lba_bad = entries[:, 0] >= self.nlba
            block_bad = (((entries[:, 1] & layout.MAP_LBA_MASK) >= limit)
                         | ((entries[:, 2] & layout.MAP_LBA_MASK) >= limit))
            if lba_bad.any():
                lane = int(np.argmax(lba_bad))
                self.ro_reason = (f"flog entry of lane {lane} names lba {int(entries[lane, 0])}, "
                                  f"past the arena")
            elif block_bad.any():
                lane = int(np.argmax(block_bad))
                self.ro_reason = f"flog entry of lane {lane} names a block past the arena"
        self.free = array("I", entries[:, 1].astype(np.uint32).tobytes())
        self.seq = array("I", entries[:, 3].astype(np.uint32).tobytes())
        self.next = array("B", next_slot.astype(np.uint8).tobytes())
        self.free_np = np.frombuffer(self.free, dtype=np.uint32)
        self.seq_np = np.frombuffer(self.seq, dtype=np.uint32)
        self.next_np = np.frombuffer(self.next, dtype=np.uint8)

    def recover(self, region, readonly):
        """Roll forward every lane whose flog committed a write the map does not show yet.

        A read-only open (or a read-only arena) keeps the roll-forwards in :attr:`overlay`.
        """
        mask = layout.MAP_LBA_MASK
        if self.ro_reason and self.flog_bad is not None and self.flog_bad.any():
            usable = ~self.flog_bad
        else:
            usable = np.ones(self.nfree, dtype=bool)
        flog = self.flog_entries
        for lane in np.nonzero(usable & ((flog[:, 1] & mask) != (flog[:, 2] & mask)))[0].tolist():
            lba, old, new = int(flog[lane, 0]), int(flog[lane, 1]), int(flog[lane, 2])
            if lba >= self.nlba or (new & mask) >= self.internal_nlba:
                continue
            entry_off = self.mapoff + layout.MAP_ENTRY_SIZE * lba
            current = self.overlay.get(lba)
            if current is None:
                current = _U32.unpack(region.read(entry_off, layout.MAP_ENTRY_SIZE))[0]
            current_block = layout.map_block(current, lba)
            if current_block == old & mask and current_block != new & mask:
                fixed = new if new & layout.MAP_FLAG_MASK else new | layout.MAP_NORMAL
                if readonly or self.ro_reason:
                    self.overlay[lba] = fixed
                else:
                    region.write(entry_off, _U32.pack(fixed))
                    region.persist(entry_off, layout.MAP_ENTRY_SIZE)

    # --- checking -------------------------------------------------------------------------

    def check(self, region, since=None, changed=None):
        """This arena's problems (like ``pmempool check``): a list of strings.

        With ``since`` (this arena's :class:`ArenaBaseline`, taken from a consistent image
        this one derives from) and ``changed`` (byte ranges of the region outside which the
        two images are equal), the map is checked only where it changed: the same problems
        as the full check, at a cost proportional to the change.
        """
        problems = []
        tag = f"arena {self.index}"
        if self.ro_reason:
            problems.append(f"{tag}: {self.ro_reason}")
        backup = region.read(self.infooff, layout.INFO_SIZE)
        backup_problem = layout.info_problem(backup)
        primary = region.read(self.start, layout.INFO_SIZE)
        if backup_problem:
            problems.append(f"{tag}: backup info block at offset {self.infooff}: {backup_problem}")
        elif bytes(backup) != bytes(primary):
            problems.append(f"{tag}: backup info block at offset {self.infooff} differs from the "
                            f"primary")
        if since is None:
            premaps = np.arange(self.nlba, dtype=np.int64)
        else:
            premaps = self._changed_premaps(changed)
        blocks = self._blocks(premaps)
        limit = self.internal_nlba
        outside = blocks >= limit
        if outside.any():
            idx = np.nonzero(outside)[0]
            problems.append(f"{tag}: {idx.size} map entries point past the {limit} blocks "
                            f"(first: lba {self.lba_start + int(premaps[idx[0]])} -> "
                            f"{int(blocks[idx[0]])})")
        if self.flog_bad is not None and self.flog_bad.any():
            return problems
        free = (self.free_np & np.uint32(layout.MAP_LBA_MASK)).astype(np.int64)
        free_outside = free >= limit
        if free_outside.any():
            problems.append(f"{tag}: {int(free_outside.sum())} flog entries hold a free block past "
                            f"the arena")
        referenced = np.concatenate((blocks[~outside], free[~free_outside]))
        if since is None:
            counted = np.arange(limit)
            counts = np.bincount(referenced, minlength=limit)
        else:
            # the blocks whose reference count can differ from the baseline's (all 1 there)
            removed = np.concatenate((since.blocks[premaps], since.free))
            counted, where = np.unique(np.concatenate((removed, referenced)),
                                       return_inverse=True)
            counts = (since.counts[counted]
                      + np.bincount(where[removed.size:], minlength=counted.size)
                      - np.bincount(where[:removed.size], minlength=counted.size))
        duplicated = counted[counts > 1]
        if duplicated.size:
            problems.append(f"{tag}: {duplicated.size} blocks are referenced more than once "
                            f"(first: block {int(duplicated[0])})")
        missing = counted[counts == 0]
        if missing.size:
            problems.append(f"{tag}: {missing.size} blocks are unreferenced (first: block "
                            f"{int(missing[0])})")
        return problems

    def _blocks(self, premaps):
        """The post-map block each of ``premaps`` (sorted pre-map lbas) references (int64)."""
        entries = self.map_np[premaps]
        for premap, entry in self.overlay.items():
            if 0 <= premap < self.nlba:
                hit = np.searchsorted(premaps, premap)
                if hit < premaps.size and premaps[hit] == premap:
                    entries[hit] = entry
        initial = (entries & np.uint32(layout.MAP_FLAG_MASK)) == layout.MAP_INITIAL
        return np.where(initial, premaps.astype(np.uint32),
                        entries & np.uint32(layout.MAP_LBA_MASK)).astype(np.int64)

    def _changed_premaps(self, changed):
        """Sorted pre-map lbas whose map entry lies in the byte ranges ``changed``, with those
        a recovery overlay holds."""
        size = layout.MAP_ENTRY_SIZE
        end = self.mapoff + size * self.nlba
        parts = [np.arange((max(lo, self.mapoff) - self.mapoff) // size,
                           (min(hi, end) - self.mapoff + size - 1) // size, dtype=np.int64)
                 for lo, hi in changed if lo < end and hi > self.mapoff]
        parts.append(np.array([p for p in self.overlay if 0 <= p < self.nlba], dtype=np.int64))
        return np.unique(np.concatenate(parts))

    def baseline(self, region):
        """This arena's :class:`ArenaBaseline`, or ``None`` when it is not consistent (a
        baseline describes a consistent arena only)."""
        if self.check(region):
            return None
        premaps = np.arange(self.nlba, dtype=np.int64)
        blocks = self._blocks(premaps)
        free = (self.free_np & np.uint32(layout.MAP_LBA_MASK)).astype(np.int64)
        return ArenaBaseline(self.geometry(), blocks, free,
                             np.bincount(np.concatenate((blocks, free)),
                                         minlength=self.internal_nlba))

    def geometry(self):
        """What a baseline must share with the arena it checks."""
        return (self.start, self.mapoff, self.flogoff, self.infooff, self.nlba,
                self.internal_nlba, self.nfree)


class ArenaBaseline:
    """One consistent arena, for checking images derived from it (:meth:`Arena.check`):
    the post-map block of every map entry, the flog's free blocks and each block's
    reference count (every count is 1)."""

    def __init__(self, geometry, blocks, free, counts):
        self.geometry = geometry
        self.blocks = blocks
        self.free = free
        self.counts = counts


def write_arena_layout(region, start, info, flog_flags=0):
    """Write a fresh arena (zeroed map, initial flog, both info blocks) and persist it."""
    region.memset_persist(start + info.mapoff, 0, layout.map_size(info.external_nlba))
    flog = np.zeros(layout.flog_size(info.nfree), dtype=np.uint8)
    initial = layout.initial_flog(info, flog_flags)
    flog[:initial.nbytes] = initial.view(np.uint8).reshape(-1)
    region.memcpy_persist(start + info.flogoff, flog)
    raw = info.pack()
    region.memcpy_persist(start + info.infooff, raw)
    region.memcpy_persist(start, raw)


def backup_candidates(start, remaining, arena_size):
    """Where the backup info block of an arena at ``start`` may be (arena sizes the
    creators use, with and without Linux's rounding down to 4 KiB)."""
    sizes = []
    for cap in ([arena_size] if arena_size else []) + [layout.MAX_ARENA_SIZE]:
        size = min(remaining, cap)
        sizes += [size, size - size % layout.BTT_ALIGNMENT]
    offsets = []
    for size in sizes:
        off = start + size - layout.INFO_SIZE
        if size >= 2 * layout.INFO_SIZE and off not in offsets:
            offsets.append(off)
    return offsets


def read_arenas(region, offset, *, readonly, arena_size, parent_uuid):
    """Decode the chain of arenas from ``offset``: ``(arenas, messages)``.

    A bad primary info block falls back to a valid backup (and is restored from it
    unless ``readonly``); ``messages`` says what was repaired or found damaged.
    """
    arenas = []
    messages = []
    pos = offset
    end = region.size
    while True:
        remaining = end - pos
        if remaining < 2 * layout.INFO_SIZE:
            raise BttCorruptError(
                f"arena {len(arenas)} would start at offset {pos}, but only {remaining} bytes "
                f"remain in the target")
        raw = region.read(pos, layout.INFO_SIZE)
        problem = layout.info_problem(raw)
        used_backup = None
        if problem is None and parent_uuid is not None and bytes(raw[32:48]) != parent_uuid:
            problem = "parent uuid does not match the pool"
        if problem is not None:
            tried = []
            for backup_off in backup_candidates(pos, remaining, arena_size):
                backup = region.read(backup_off, layout.INFO_SIZE)
                backup_problem = layout.info_problem(backup)
                if backup_problem is None:
                    recorded = layout.Info.unpack(backup).infooff
                    if recorded != backup_off - pos:
                        backup_problem = f"records its own offset as 0x{recorded:x}"
                if backup_problem is None:
                    raw, used_backup = backup, backup_off
                    break
                tried.append(f"backup at offset {backup_off}: {backup_problem}")
            if used_backup is None:
                what = ("no BTT found" if not arenas and bytes(raw[:16]) != layout.SIGNATURE
                        else "BTT is corrupt")
                raise BttCorruptError(
                    f"{what}: arena {len(arenas)} info block at offset {pos}: {problem}; "
                    + ("; ".join(tried) if tried else "no backup location to try")
                    + (". Check the offset (Linux label-less 1.1 namespaces put the info block "
                       "at 4 KiB), or recreate the BTT" if not arenas else ""), offset=pos)
            messages.append(
                f"arena {len(arenas)}: primary info block at offset {pos} is invalid "
                f"({problem}); using the backup at offset {used_backup}"
                + ("" if readonly else "; primary restored from it"))
            if not readonly:
                region.memcpy_persist(pos, raw)
        info = layout.Info.unpack(raw)
        needed = info.nextoff or info.infooff + layout.INFO_SIZE
        if needed > remaining:
            what = "the next arena" if info.nextoff else "its backup info block"
            raise BttCorruptError(
                f"the image is truncated: arena {len(arenas)} at offset {pos} reaches "
                f"{pos + needed} bytes into the target (to the end of {what}), but the target "
                f"is only {end} bytes: restore the whole image (or give the right offset)",
                offset=pos)
        arena_span = info.nextoff if info.nextoff else remaining
        geometry = layout.geometry_problem(info, arena_span)
        if geometry:
            raise BttCorruptError(f"arena {len(arenas)} at offset {pos}: {geometry}", offset=pos)
        if arenas and info.external_lbasize != arenas[0].info.external_lbasize:
            raise BttCorruptError(
                f"arena {len(arenas)} has lbasize {info.external_lbasize}, arena 0 "
                f"{arenas[0].info.external_lbasize}")
        arena = Arena(len(arenas), pos, info)
        if info.flags & layout.FLAG_ERROR:
            arena.ro_reason = "its info block has the error flag set"
        if used_backup is None:
            backup_problem = layout.info_problem(region.read(pos + info.infooff, layout.INFO_SIZE))
            if backup_problem is not None:
                messages.append(f"arena {arena.index}: backup info block at offset "
                                f"{pos + info.infooff} is invalid ({backup_problem})")
        arenas.append(arena)
        if not info.nextoff:
            break
        pos += info.nextoff
    return arenas, messages


def _valid_info(view, off):
    """The Info at ``off`` of ``view`` when a valid info block is there, else ``None``."""
    block = view[off:off + layout.INFO_SIZE]
    if bytes(block[:16]) != layout.SIGNATURE or layout.info_problem(block) is not None:
        return None
    return layout.Info.unpack(block)


def locate(target, *, step=layout.BTT_ALIGNMENT, limit=1 << 20, arena_size=None):
    """Offsets (multiples of ``step`` in the first ``limit`` bytes) where a BTT starts.

    Finds the BTT inside a namespace image: 4096 for label-less (1.1) Linux
    namespaces, 0 for labelled (2.0) ones, 8192 in libpmemblk pools. A BTT is found
    from either copy of its first info block: a valid primary, or a valid backup
    (at the end of the arena, as :meth:`~pmemkit.btt.Btt.open` looks for it; give
    ``arena_size`` for BTTs made with a smaller arena size) that points back here.
    A path is mapped read-only.
    """
    region, owned = open_target(target, writable=False)
    try:
        found = []
        size = region.size
        end = min(size - layout.INFO_SIZE, limit)
        view = region.buffer
        try:
            for off in range(0, end + 1, step):
                if _valid_info(view, off) is not None:
                    found.append(off)
                    continue
                for backup_off in backup_candidates(off, size - off, arena_size):
                    backup = _valid_info(view, backup_off)
                    if backup is not None and backup.infooff == backup_off - off:
                        found.append(off)
                        break
        finally:
            view.release()
        return found
    finally:
        if owned:
            region.close()
