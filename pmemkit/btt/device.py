"""The BTT device: atomic sector writes over any pmemkit region.

The code touches the media only through the :class:`~pmemkit.region.Region`
contract (``read``/``write``/``buffer``/``array``/``flush``/``drain``/
``persist``/``memcpy_persist``/``nt_copies``), so the same object works on a file
mapping, on real DAX, on a plain buffer and under the crash simulator.

Write protocol (one sector, lane L; each numbered step ends with a drain), written
once in :func:`bind_commit` (its vectorised twin is :meth:`.BatchIO._commit_many`)::

    1. copy the data into L's free block                      -> persist
    2. flog[L][next] = {lba, old_map}      (8-byte store)     -> persist
    3. flog[L][next] = {new_map, seq}      (8-byte store)     -> persist   <- commit point
    4. map[lba] = new_map                  (4-byte store)     -> persist
    L's free block is now the old block.

Recovery (at open, :meth:`.Arena.recover`): for every lane take the flog entry with
the newer seq; if the map still holds its old_map (and new_map differs), roll the
map forward.
"""

from __future__ import annotations

import struct
import uuid as _uuid
import warnings

import numpy as np

from ..errors import (BttCorruptError, BttIOError, BttReadOnlyError, ClosedMappingError,
                      InvalidArgumentError, OutOfRangeError)
from ..region import as_int, bytes_view, closed_on_failure
from .arena import ArenaBaseline, open_target, read_arenas, write_arena_layout
from .batch import BatchIO
from .layout import (BTT_ALIGNMENT, DEFAULT_NFREE, FLOG_ENTRY_SIZE, FLOG_PAIR_SIZE, INFO_SIZE,
                     LINUX_LBASIZES, MAP_ENTRY_SIZE, MAP_ERROR, MAP_FLAG_MASK, MAP_FLAG_SHIFT,
                     MAP_LBA_MASK, MAP_NORMAL, MAP_ZERO, MAX_ARENA_SIZE, MIN_ARENA_SIZE, NSEQ,
                     SEQ_MASK, VERSIONS, info_problem, normal_entry, plan_arenas)

#: Info block fields :meth:`Btt.info` reports as they are.
_INFO_FIELDS = ("flags", "version", "external_lbasize", "external_nlba", "internal_lbasize",
                "internal_nlba", "nfree", "nextoff", "dataoff", "mapoff", "flogoff", "infooff",
                "checksum")
_PAIR = struct.Struct("<II")
_U32 = struct.Struct("<I")
#: A key no lba has: :meth:`Btt.close` puts it in every overlay so that fast paths callers
#: still hold fall back to the checked methods (which raise ClosedMappingError).
_CLOSED = -1


class BttWarning(UserWarning):
    """Something was wrong with the image but pmemkit could carry on (e.g. it used the backup
    info block)."""


def bind_commit(region, arena, lane_cursor, nlane):
    """The write protocol for one block of ``arena``: returns ``commit(premap, data)``.

    ``data`` must already be validated (``lbasize`` bytes) and the arena writable.
    ``lane_cursor`` is the device's one-element list holding the next lane (shared by
    every arena of the device and by batched writes).
    """
    persist_copy = region.memcpy_persist
    free, seqs, next_slots, slots = arena.free, arena.seq, arena.next, arena.slots
    map_view, overlay = arena.map_mv, arena.overlay
    dataoff, internal_lbasize, internal_nlba = (arena.dataoff, arena.internal_lbasize,
                                                arena.internal_nlba)
    flogoff, mapoff = arena.flogoff, arena.mapoff
    pack_pair, pack_entry, next_seq = _PAIR.pack, _U32.pack, NSEQ
    lba_mask, flag_mask, normal, seq_mask = (MAP_LBA_MASK, MAP_FLAG_MASK,
                                             MAP_NORMAL, SEQ_MASK)
    pair_size, entry_size, map_entry_size = (FLOG_PAIR_SIZE, FLOG_ENTRY_SIZE,
                                             MAP_ENTRY_SIZE)

    def commit(premap, data):
        lane = lane_cursor[0]
        lane_cursor[0] = lane + 1 if lane + 1 < nlane else 0
        block = free[lane] & lba_mask
        if block >= internal_nlba:
            raise BttCorruptError(
                f"lane {lane} of arena {arena.index} owns block {block}, past the arena")
        # 1. data into the lane's free block
        persist_copy(dataoff + block * internal_lbasize, data)
        old = overlay.get(premap) if overlay else None
        if old is None:
            old = map_view[premap]
        if not old & flag_mask:                    # an initial entry maps the lba to itself
            old = premap | normal
        new = block | normal
        seq = next_seq[seqs[lane] & seq_mask]
        entry_off = flogoff + lane * pair_size + slots[next_slots[lane]] * entry_size
        # 2. flog first half {lba, old_map} (one 8-byte store), durable
        persist_copy(entry_off, pack_pair(premap, old))
        # 3. flog second half {new_map, seq}: the commit point
        persist_copy(entry_off + 8, pack_pair(new, seq))
        # 4. the map entry
        persist_copy(mapoff + map_entry_size * premap, pack_entry(new))
        if overlay:
            overlay.pop(premap, None)
        seqs[lane] = seq
        next_slots[lane] ^= 1
        free[lane] = old

    return commit


class Btt(BatchIO):
    """A Block Translation Table on a region: atomic ``lbasize``-byte sector writes.

    Use :meth:`create` to lay out a new BTT, :meth:`open` to attach an existing
    one (running recovery); :mod:`pmemkit.btt.pmemblk` opens libpmemblk pool files.
    """

    def __init__(self, region, offset, arenas, *, owned=False, readonly=False, messages=()):
        self._region = region
        self._owned = owned
        self.offset = offset
        self.arenas = arenas
        self.readonly = readonly
        self.messages = list(messages)
        self.lbasize = arenas[0].info.external_lbasize
        self.nlba = sum(a.nlba for a in arenas)
        self.nlane = min(a.nfree for a in arenas)
        self.version = arenas[0].info.version
        self._starts = np.array([a.lba_start for a in arenas], dtype=np.int64)
        self._lane_cursor = [0]
        self._buffer = memoryview(region.buffer)   # our own view: released by close()
        self._zero = bytes(self.lbasize)
        self._single_arena = arenas[0] if len(arenas) == 1 else None
        self._nt_copies = bool(region.nt_copies)
        for a in arenas:
            a.attach_views(region, self._buffer)
        self._commits = [bind_commit(region, a, self._lane_cursor, self.nlane) for a in arenas]
        if (self._single_arena is not None and not readonly and type(self).read is Btt.read
                and type(self).write is Btt.write):
            self._bind_fast_paths(self._single_arena)

    # --- construction ---------------------------------------------------------------

    @classmethod
    def create(cls, target, lbasize=4096, nfree=DEFAULT_NFREE, version="1.1", offset=0,
               size=None, *, arena_size=MAX_ARENA_SIZE, layout="linux", uuid=None,
               parent_uuid=None, close_region=False):
        """Lay out a new, empty BTT on ``target`` and open it.

        ``target``: a path (created or extended when ``size`` is given), a
        region (``PmemMap``, traced region) or a writable buffer. The BTT
        occupies ``size`` bytes (default: the rest of the target) from
        ``offset``. ``arena_size`` caps each arena (default 512 GiB; smaller
        values make multi-arena BTTs for tests). ``layout="linux"`` sizes
        arenas like the kernel (64-byte internal block alignment),
        ``"pmemblk"`` like libpmemblk (256-byte, at least 512).
        ``close_region=True`` hands a region target over: closing the Btt closes it.
        """
        lbasize = as_int(lbasize, "lbasize")
        nfree = as_int(nfree, "nfree")
        offset = as_int(offset, "offset")
        if version not in VERSIONS:
            raise InvalidArgumentError(
                f"unknown BTT version {version!r}; use one of {', '.join(VERSIONS)}")
        if layout not in ("linux", "pmemblk"):
            raise InvalidArgumentError(f"layout must be 'linux' or 'pmemblk', got {layout!r}")
        if layout == "linux" and lbasize not in LINUX_LBASIZES:
            raise InvalidArgumentError(
                f"lbasize {lbasize} is not one the Linux BTT supports "
                f"({', '.join(map(str, LINUX_LBASIZES))}); pick one, or pass "
                f"layout='pmemblk'")
        if not 1 <= lbasize <= 1 << 20:
            raise InvalidArgumentError(f"lbasize must be between 1 and 1 MiB, got {lbasize}")
        if not 1 <= nfree <= 1 << 16:
            raise InvalidArgumentError(f"nfree must be between 1 and 65536, got {nfree}")
        if offset < 0 or offset % 8:
            raise InvalidArgumentError(f"offset must be a non-negative multiple of 8, got {offset}")
        arena_size = as_int(arena_size, "arena_size")
        if arena_size % BTT_ALIGNMENT or arena_size <= 0 or arena_size > MAX_ARENA_SIZE:
            raise InvalidArgumentError(
                f"arena_size must be a positive multiple of 4096 up to 512 GiB, got {arena_size}")
        region, owned = open_target(
            target, size=None if size is None else offset + as_int(size, "size"), create=True)
        owned = owned or close_region
        with closed_on_failure(region, owned):
            if size is None:
                size = region.size - offset
            size = as_int(size, "size")
            if size <= 0 or offset + size > region.size:
                raise OutOfRangeError(
                    f"the BTT [{offset}, {offset + size}) does not fit the {region.size}-byte "
                    f"target")
            major, minor = VERSIONS[version]
            plan = plan_arenas(size, lbasize, nfree, max_arena=arena_size, style=layout,
                                      min_arena=min(MIN_ARENA_SIZE, arena_size, size))
            uid = _uuid_bytes(uuid) if uuid is not None else _uuid.uuid4().bytes_le
            puid = _uuid_bytes(parent_uuid) if parent_uuid is not None else bytes(16)
            flog_flags = MAP_ZERO if layout == "pmemblk" else 0
            for arena_off, info in plan:
                info.uuid, info.parent_uuid = uid, puid
                info.major, info.minor = major, minor
                write_arena_layout(region, offset + arena_off, info, flog_flags)
            return cls._attach(region, offset, owned=owned)

    @classmethod
    def open(cls, target, offset=0, *, readonly=False, arena_size=None, parent_uuid=None,
             close_region=False):
        """Attach the BTT at ``offset`` of ``target`` and run recovery (flog replay).

        A bad primary info block falls back to the backup (a :class:`BttWarning`
        says so, and a writable open restores the primary). An arena whose flog
        or flags are inconsistent is opened read-only (:class:`BttReadOnlyError`
        on write, with the reason). ``arena_size`` helps find a backup info block
        of BTTs made with a non-default arena size. A path opened ``readonly`` is mapped
        read-only (a file without write permission opens). ``parent_uuid`` (16 bytes)
        accepts only info blocks naming that parent (a pool's uuid).
        ``close_region=True`` hands a region target over: closing the Btt closes it.
        """
        offset = as_int(offset, "offset")
        region, owned = open_target(target, writable=not readonly)
        owned = owned or close_region
        with closed_on_failure(region, owned):
            return cls._attach(region, offset, owned=owned, readonly=readonly,
                               arena_size=arena_size, parent_uuid=parent_uuid)

    @classmethod
    def _attach(cls, region, offset, *, owned=False, readonly=False, arena_size=None,
                parent_uuid=None):
        if offset < 0 or offset + INFO_SIZE > region.size:
            raise OutOfRangeError(
                f"offset {offset} leaves no room for a BTT info block in the "
                f"{region.size}-byte target")
        arenas, messages = read_arenas(region, offset, readonly=readonly,
                                       arena_size=arena_size, parent_uuid=parent_uuid)
        for m in messages:
            warnings.warn(m, BttWarning, stacklevel=3)
        lba = 0
        for a in arenas:
            a.lba_start = lba
            lba += a.nlba
            a.load_flog(region)
            a.recover(region, readonly)
        return cls(region, offset, arenas, owned=owned, readonly=readonly, messages=messages)

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
        self._single_arena = None
        self.__dict__.pop("read", None)        # drop the bound fast paths
        self.__dict__.pop("write", None)
        for a in self.arenas:                 # and divert closures callers still hold
            a.overlay[_CLOSED] = 0
            a.release_views()
        self._commits = []
        self._buffer.release()
        self._buffer = None
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
        region = self._region
        if region is None:
            raise ClosedMappingError("this Btt is closed; open it again to use it")
        return region

    # --- addressing --------------------------------------------------------------------

    def _locate(self, lba):
        """``(arena, pre-map lba)`` of external ``lba``, after checking it."""
        lba = as_int(lba, "lba")
        if not 0 <= lba < self.nlba:
            raise OutOfRangeError(
                f"lba {lba} is out of range: this BTT has {self.nlba} blocks (0..{self.nlba - 1})")
        if len(self.arenas) == 1:
            return self.arenas[0], lba
        arena = self.arenas[int(np.searchsorted(self._starts, lba, side="right")) - 1]
        return arena, lba - arena.lba_start

    def _check_data(self, data):
        view = bytes_view(data)
        if view.nbytes != self.lbasize:
            raise InvalidArgumentError(
                f"data is {view.nbytes} bytes; a block of this BTT is exactly {self.lbasize} bytes")
        return view

    def _writable(self, arena):
        if self.readonly:
            raise BttReadOnlyError(
                "this BTT was opened read-only; open it with readonly=False to write")
        if arena.ro_reason:
            raise BttReadOnlyError(f"arena {arena.index} is read-only: {arena.ro_reason}")

    # --- single-block I/O ----------------------------------------------------------------------

    def read(self, lba):
        """Return block ``lba`` (``lbasize`` bytes). Raises BttIOError on an error-flagged block."""
        region = self._live()
        arena, premap = self._locate(lba)
        entry = arena.entry(premap)
        flags = entry & MAP_FLAG_MASK
        if flags == MAP_NORMAL:
            return region.read(arena.block_offset(entry, premap), self.lbasize)
        if flags == MAP_ERROR:
            raise BttIOError(
                f"lba {lba} is flagged as an error block (EIO); write it to clear the error",
                lba=lba)
        return self._zero

    def write(self, lba, data):
        """Write block ``lba`` atomically (exactly four persistence points)."""
        self._live()
        arena, premap = self._locate(lba)
        data = self._check_data(data)
        self._writable(arena)
        self._commits[arena.index](premap, data)

    def _bind_fast_paths(self, arena):
        """Bind closures over a single arena's state as ``self.read``/``self.write``.

        They only pre-validate the common case (an int lba, a normal map entry, bytes of
        the right size) with local variables, then read the block or run the one commit;
        everything else goes to the checked methods.
        """
        map_view, overlay = arena.map_mv, arena.overlay
        dataoff, internal_lbasize, internal_nlba = (arena.dataoff, arena.internal_lbasize,
                                                    arena.internal_nlba)
        lbasize, nlba, normal = self.lbasize, self.nlba, MAP_NORMAL
        checked_read, checked_write = Btt.read.__get__(self), Btt.write.__get__(self)
        region_read, commit = self._region.read, self._commits[0]

        # The read fast path leans on the map view for its checks: map_view has exactly nlba
        # entries, so indexing it rejects lba >= nlba (IndexError) and non-integers
        # (TypeError), and once close() has released it, any use (ValueError); all of these
        # go to the checked read, which raises the proper typed error. Only lba < 0 (which a
        # memoryview would wrap) needs its own test. A normal entry minus the NORMAL flags
        # is the block number; zero, error and initial entries wrap negative or past
        # internal_nlba. An arena with a recovery overlay keeps the checked method.
        def read(lba):
            try:
                if type(lba) is int and lba >= 0:
                    block = map_view[lba] - normal
                    if 0 <= block < internal_nlba:
                        return region_read(dataoff + block * internal_lbasize, lbasize)
            except Exception:
                pass
            return checked_read(lba)

        def write(lba, data):
            if (type(lba) is not int or not 0 <= lba < nlba or overlay or arena.ro_reason
                    or type(data) not in (bytes, bytearray) or len(data) != lbasize):
                return checked_write(lba, data)
            return commit(lba, data)

        if not overlay:
            self.read = read
        self.write = write

    def _set_flag(self, lba, flag):
        region = self._live()
        arena, premap = self._locate(lba)
        self._writable(arena)
        old = normal_entry(arena.entry(premap), premap)
        if flag == MAP_ZERO and old & MAP_FLAG_MASK == MAP_ZERO:
            return
        entry_off = arena.mapoff + MAP_ENTRY_SIZE * premap
        region.write(entry_off, _U32.pack((old & MAP_LBA_MASK) | flag))
        region.persist(entry_off, MAP_ENTRY_SIZE)
        arena.overlay.pop(premap, None)

    def set_zero(self, lba):
        """Mark ``lba`` as reading zeros (one atomic map update, like libpmemblk's set_zero)."""
        self._set_flag(lba, MAP_ZERO)

    def set_error(self, lba):
        """Flag ``lba`` as an error block: reads raise BttIOError until it is written again."""
        self._set_flag(lba, MAP_ERROR)

    # --- checking ----------------------------------------------------------------------------

    def check(self, since=None, changed=None):
        """Consistency check (like ``pmempool check``): a list of problems (empty: consistent).

        ``since`` (what :meth:`baseline` returned on the image this one derives from) and
        ``changed`` (byte ranges ``(start, end)`` of the region outside which both images
        are equal, e.g. a crash point's ``changed_ranges``) check the map only where it
        changed: the same problems as the full check, at a cost that follows the change
        instead of the device size. A baseline of another geometry is ignored (full check).
        """
        region = self._live()
        if (since is None) != (changed is None):
            raise InvalidArgumentError(
                "give both since (a baseline) and changed (the byte ranges that changed since "
                "it), or neither for the full check")
        bases = [None] * len(self.arenas)
        if since is not None:
            changed = _byte_ranges(changed)
            if not (isinstance(since, tuple) and all(isinstance(b, ArenaBaseline)
                                                     for b in since)):
                raise InvalidArgumentError(
                    f"since must be what Btt.baseline() returned, got {type(since).__name__}")
            if [b.geometry for b in since] == [a.geometry() for a in self.arenas]:
                bases = since
        problems = list(self.messages)
        for a, base in zip(self.arenas, bases, strict=True):
            problems.extend(a.check(region, base, None if base is None else changed))
        return problems

    def baseline(self):
        """This BTT's state for incremental checks of images derived from it
        (``check(since=..., changed=...)``): a tuple with one entry per arena, or ``None``
        when the BTT is not consistent (only a consistent image can be a baseline)."""
        region = self._live()
        if self.messages:
            return None
        bases = tuple(a.baseline(region) for a in self.arenas)
        return None if any(b is None for b in bases) else bases

    def info(self):
        """A dict describing the layout (what ``pmemkit btt info`` prints).

        Each arena's ``info_damage`` maps ``"primary"`` and ``"backup"`` to what is wrong
        with that copy of its info block (``None``: intact).
        """
        region = self._live()
        out = {"offset": self.offset, "version": self.version, "lbasize": self.lbasize,
               "nlba": self.nlba, "nlane": self.nlane, "arenas": []}
        for a in self.arenas:
            info = a.info
            damage = {which: info_problem(region.read(off, INFO_SIZE))
                      for which, off in (("primary", a.start), ("backup", a.infooff))}
            flags = a.map_np >> np.uint32(MAP_FLAG_SHIFT)
            states = np.bincount(flags.astype(np.int64), minlength=4)
            out["arenas"].append({
                "index": a.index, "offset": a.start, "uuid": info.uuid_str,
                "parent_uuid": info.parent_uuid_str,
                **{name: getattr(info, name) for name in _INFO_FIELDS},
                "flog_slots": a.slots, "read_only": a.ro_reason, "info_damage": damage,
                "map": {"initial": int(states[0]), "error": int(states[1]),
                        "zero": int(states[2]), "normal": int(states[3])},
            })
        return out


def _byte_ranges(changed):
    """``changed`` as a list of ``(start, end)`` int pairs; InvalidArgumentError otherwise."""
    try:
        pairs = [(as_int(lo, "start"), as_int(hi, "end")) for lo, hi in changed]
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"changed must be byte ranges (start, end), like a crash point's changed_ranges, "
            f"got {changed!r:.80}") from None
    if any(lo < 0 or hi < lo for lo, hi in pairs):
        raise InvalidArgumentError(
            "changed must be byte ranges (start, end) with 0 <= start <= end")
    return pairs


def _uuid_bytes(value):
    if isinstance(value, _uuid.UUID):
        return value.bytes_le
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    try:
        return _uuid.UUID(str(value)).bytes_le
    except ValueError:
        raise InvalidArgumentError(f"not a UUID: {value!r}") from None
