"""On-media structures of the Block Translation Table (UEFI / Linux nd_btt / PMDK libpmemblk).

All integers are little-endian. An arena is laid out as::

    info block (4 KiB) | data blocks | map | flog | backup info block (4 KiB)

with every offset in the info block relative to the arena's first byte.
Nothing here touches a region: these are pure functions over bytes and numbers.
"""

from __future__ import annotations

import functools
import struct
import uuid as _uuid
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import BttCorruptError, InvalidArgumentError

#: Alignment of every BTT structure (and the size of an info block).
BTT_ALIGNMENT = 4096
INFO_SIZE = 4096
SIGNATURE = b"BTT_ARENA_INFO\0\0"
#: Smallest arena Linux and libpmemblk accept (16 MiB).
MIN_ARENA_SIZE = 1 << 24
#: Largest arena (512 GiB).
MAX_ARENA_SIZE = 1 << 39
DEFAULT_NFREE = 256
#: The external LBA sizes the Linux driver supports.
LINUX_LBASIZES = (512, 520, 528, 4096, 4104, 4160, 4224)
MIN_LBASIZE = 512
VERSIONS = {"1.1": (1, 1), "2.0": (2, 0)}

FLAG_ERROR = 0x1

MAP_ENTRY_SIZE = 4
MAP_LBA_MASK = 0x3FFFFFFF
MAP_FLAG_MASK = 0xC0000000
MAP_FLAG_SHIFT = 30          # entry >> MAP_FLAG_SHIFT: 0 initial, 1 error, 2 zero, 3 normal
MAP_NORMAL = 0xC0000000
MAP_ZERO = 0x80000000
MAP_ERROR = 0x40000000
MAP_INITIAL = 0x00000000

FLOG_ENTRY_SIZE = 16
FLOG_PAIR_SIZE = 64          # two 16-byte entries padded to a cache line
#: The flog slots of a pair: (0, 1) today, (0, 2) as Linux before 4.15 wrote them.
FLOG_SLOTS = (0, 1)
FLOG_SLOTS_OLD_LINUX = (0, 2)
#: seq cycles 1 -> 2 -> 3 -> 1; 0 means "never written". ``NSEQ[seq & SEQ_MASK]`` is the next seq.
NSEQ = (0, 2, 3, 1)
SEQ_MASK = 3


def map_block(entry, premap_lba):
    """The internal block a map entry points to (an initial entry maps the lba to itself)."""
    return entry & MAP_LBA_MASK if entry & MAP_FLAG_MASK else premap_lba


def normal_entry(entry, premap_lba):
    """``entry`` as a normal one, an initial entry becoming the identity mapping."""
    return entry if entry & MAP_FLAG_MASK else premap_lba | MAP_NORMAL


def flog_entry_offset(lane, slot):
    """Byte offset of ``slot`` of ``lane``'s flog pair, relative to the flog."""
    return lane * FLOG_PAIR_SIZE + slot * FLOG_ENTRY_SIZE

# sig, uuid, parent_uuid, flags, major, minor, external_lbasize, external_nlba,
# internal_lbasize, internal_nlba, nfree, infosize, nextoff, dataoff, mapoff,
# flogoff, infooff, unused[3968], checksum
_INFO = struct.Struct("<16s16s16sIHHIIIIIIQQQQQ3968sQ")
assert _INFO.size == INFO_SIZE
CHECKSUM_OFFSET = INFO_SIZE - 8


def fletcher64(data, skip=None, zero_from=None):
    """Fletcher-64 over 32-bit little-endian words (PMDK's util_checksum, Linux's nd_fletcher64).

    ``skip`` is the byte offset of an 8-byte checksum field counted as zeros;
    ``zero_from`` treats every byte from there on as zero (PMDK's skip_off).
    """
    words = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint64)
    if len(data) % 4:
        raise InvalidArgumentError("Fletcher-64 needs a length that is a multiple of 4")
    if skip is not None:
        words[skip // 4:skip // 4 + 2] = 0
    if zero_from is not None:
        words[zero_from // 4:] = 0
    lo = np.cumsum(words, dtype=np.uint64) & np.uint64(0xFFFFFFFF)
    hi = int(lo.sum(dtype=np.uint64)) & 0xFFFFFFFF
    low = int(lo[-1]) if len(lo) else 0
    return (hi << 32) | low


def internal_lbasize(lbasize, style="pmemblk"):
    """Internal (on-media) block size for an external ``lbasize``.

    ``style="pmemblk"``: at least 512 and a multiple of 256 (libpmemblk);
    ``style="linux"``: a multiple of 64 (nd_btt).
    """
    if style == "linux":
        return -(-lbasize // 64) * 64
    return -(-max(lbasize, MIN_LBASIZE) // 256) * 256


def flog_size(nfree):
    return -(-(nfree * FLOG_PAIR_SIZE) // BTT_ALIGNMENT) * BTT_ALIGNMENT


def map_size(external_nlba):
    return -(-(external_nlba * MAP_ENTRY_SIZE) // BTT_ALIGNMENT) * BTT_ALIGNMENT


@dataclass
class Info:
    """A decoded BTT arena info block (offsets relative to the arena start)."""

    uuid: bytes = b"\0" * 16
    parent_uuid: bytes = b"\0" * 16
    flags: int = 0
    major: int = 1
    minor: int = 1
    external_lbasize: int = 4096
    external_nlba: int = 0
    internal_lbasize: int = 4096
    internal_nlba: int = 0
    nfree: int = DEFAULT_NFREE
    infosize: int = INFO_SIZE
    nextoff: int = 0
    dataoff: int = INFO_SIZE
    mapoff: int = 0
    flogoff: int = 0
    infooff: int = 0
    signature: bytes = SIGNATURE
    checksum: int = 0
    unused_nonzero: bool = field(default=False, compare=False)

    @property
    def version(self):
        return f"{self.major}.{self.minor}"

    @property
    def uuid_str(self):
        return str(_uuid.UUID(bytes_le=bytes(self.uuid)))

    @property
    def parent_uuid_str(self):
        return str(_uuid.UUID(bytes_le=bytes(self.parent_uuid)))

    def pack(self):
        """The 4 KiB on-media image, with its checksum computed."""
        raw = bytearray(_INFO.pack(
            self.signature, bytes(self.uuid), bytes(self.parent_uuid), self.flags,
            self.major, self.minor, self.external_lbasize, self.external_nlba,
            self.internal_lbasize, self.internal_nlba, self.nfree, self.infosize,
            self.nextoff, self.dataoff, self.mapoff, self.flogoff, self.infooff,
            b"\0" * 3968, 0))
        csum = fletcher64(raw, skip=CHECKSUM_OFFSET)
        struct.pack_into("<Q", raw, CHECKSUM_OFFSET, csum)
        self.checksum = csum
        return bytes(raw)

    @classmethod
    def unpack(cls, raw):
        if len(raw) != INFO_SIZE:
            raise BttCorruptError(f"info block is {len(raw)} bytes, expected {INFO_SIZE}")
        f = _INFO.unpack(bytes(raw))
        return cls(signature=f[0], uuid=f[1], parent_uuid=f[2], flags=f[3], major=f[4],
                   minor=f[5], external_lbasize=f[6], external_nlba=f[7],
                   internal_lbasize=f[8], internal_nlba=f[9], nfree=f[10], infosize=f[11],
                   nextoff=f[12], dataoff=f[13], mapoff=f[14], flogoff=f[15], infooff=f[16],
                   checksum=f[18], unused_nonzero=any(f[17]))

    def copy(self, **changes):
        return replace(self, **changes)


def info_problem(raw):
    """Why ``raw`` (4 KiB) is not a valid info block, or ``None`` when it is.

    Verdicts are cached by content: an image that keeps its info blocks (every crash image
    of a BTT) pays for one checksum per distinct block.
    """
    return _info_problem(bytes(raw))


@functools.lru_cache(maxsize=64)
def _info_problem(raw):
    if raw[:16] != SIGNATURE:
        return f"bad signature {bytes(raw[:16])!r} (expected {SIGNATURE!r})"
    stored = struct.unpack_from("<Q", raw, CHECKSUM_OFFSET)[0]
    computed = fletcher64(raw, skip=CHECKSUM_OFFSET)
    if stored != computed:
        return f"bad checksum 0x{stored:016x} (computed 0x{computed:016x})"
    major = struct.unpack_from("<H", raw, 52)[0]
    if major == 0:
        return "major version 0"
    return None


def geometry_problem(info, arena_size):
    """Why the geometry in ``info`` cannot describe an arena of ``arena_size`` bytes, or ``None``.

    These are the checks that keep every later access inside the arena; a reader
    that passes them can never index outside the target.
    """
    if info.external_lbasize < 1 or info.internal_lbasize < info.external_lbasize:
        return (f"lbasize external {info.external_lbasize} / internal {info.internal_lbasize} "
                f"is impossible")
    if info.nfree == 0 or info.external_nlba == 0:
        return f"nfree {info.nfree} / external_nlba {info.external_nlba} must be non-zero"
    if info.internal_nlba != info.external_nlba + info.nfree:
        return (f"internal_nlba {info.internal_nlba} != external_nlba {info.external_nlba} "
                f"+ nfree {info.nfree}")
    if info.internal_nlba > MAP_LBA_MASK:
        return f"internal_nlba {info.internal_nlba} does not fit a map entry"
    if info.nfree > info.external_nlba + info.nfree or info.nfree > 1 << 20:
        return f"nfree {info.nfree} is implausible"
    if info.infooff + INFO_SIZE > arena_size:
        return (f"backup info offset 0x{info.infooff:x} lies past the arena "
                f"(0x{arena_size:x} bytes)")
    data_end = info.dataoff + info.internal_nlba * info.internal_lbasize
    if info.dataoff < INFO_SIZE or data_end > info.mapoff:
        return (f"data area [0x{info.dataoff:x}, +{info.internal_nlba}x{info.internal_lbasize}) "
                f"overlaps the map at 0x{info.mapoff:x}")
    if info.mapoff + info.external_nlba * MAP_ENTRY_SIZE > info.flogoff:
        return f"map at 0x{info.mapoff:x} overlaps the flog at 0x{info.flogoff:x}"
    if info.flogoff + info.nfree * FLOG_PAIR_SIZE > info.infooff:
        return f"flog at 0x{info.flogoff:x} overlaps the backup info block at 0x{info.infooff:x}"
    if info.nextoff and (info.nextoff < info.infooff + INFO_SIZE or info.nextoff % BTT_ALIGNMENT):
        return f"next arena offset 0x{info.nextoff:x} is inside this arena or misaligned"
    return None


def plan_arenas(rawsize, lbasize, nfree=DEFAULT_NFREE, *, max_arena=MAX_ARENA_SIZE,
                style="pmemblk", min_arena=None):
    """Compute the arenas (offset, Info without uuids) for a BTT of ``rawsize`` bytes.

    ``style="pmemblk"`` reproduces libpmemblk's ``write_layout`` byte for byte,
    ``style="linux"`` the kernel's ``create_arenas`` (sizes rounded down to 4 KiB,
    64-byte internal block alignment).
    """
    if min_arena is None:
        min_arena = min(MIN_ARENA_SIZE, max_arena)
    ilba = internal_lbasize(lbasize, style)
    arenas = []
    remaining = rawsize
    off = 0
    while remaining >= min_arena:
        size = min(remaining, max_arena)
        remaining -= size
        if style == "linux":
            size -= size % BTT_ALIGNMENT
        datasize = size - 2 * INFO_SIZE - flog_size(nfree)
        internal_nlba = (datasize - BTT_ALIGNMENT) // (ilba + MAP_ENTRY_SIZE)
        if internal_nlba < 2 * nfree:
            raise InvalidArgumentError(
                f"an arena of {size} bytes holds only {max(internal_nlba, 0)} blocks of "
                f"{ilba} bytes; it needs at least 2*nfree = {2 * nfree}: give a larger size "
                f"or a smaller nfree")
        if internal_nlba > MAP_LBA_MASK:
            raise InvalidArgumentError(f"arena of {size} bytes has too many blocks")
        external_nlba = internal_nlba - nfree
        infooff = size - INFO_SIZE
        flogoff = infooff - flog_size(nfree)
        mapoff = flogoff - map_size(external_nlba)
        info = Info(external_lbasize=lbasize, external_nlba=external_nlba,
                    internal_lbasize=ilba, internal_nlba=internal_nlba, nfree=nfree,
                    nextoff=size if remaining >= min_arena else 0,
                    dataoff=INFO_SIZE, mapoff=mapoff, flogoff=flogoff, infooff=infooff)
        arenas.append((off, info))
        off += size
    if not arenas:
        raise InvalidArgumentError(
            f"{rawsize} bytes is too small for a BTT: an arena needs at least {min_arena} bytes")
    return arenas


def initial_flog(info, flags=MAP_ZERO):
    """The flog of a new arena: lane i owns block external_nlba+i, seq 1 in the first slot."""
    n = info.nfree
    flog = np.zeros((n, FLOG_PAIR_SIZE // 4), dtype="<u4")
    blocks = np.arange(n, dtype=np.uint64) + info.external_nlba
    blocks = blocks.astype(np.uint32) | np.uint32(flags)
    flog[:, 0] = np.arange(n, dtype=np.uint32)
    flog[:, 1] = blocks
    flog[:, 2] = blocks
    flog[:, 3] = 1
    return flog


def current_flog(pairs, slots=FLOG_SLOTS):
    """Choose the current entry of each flog pair (vectorised).

    ``pairs`` is a (nfree, 16) uint32 array of the raw flog. Returns
    ``(entries (nfree, 4), next_slot (nfree,) 0/1, bad (nfree,) bool)``: ``bad``
    marks pairs with equal sequence numbers (a layout error).
    """
    s0, s1 = slots
    e0 = pairs[:, s0 * 4:s0 * 4 + 4]
    e1 = pairs[:, s1 * 4:s1 * 4 + 4]
    q0 = e0[:, 3] & SEQ_MASK
    q1 = e1[:, 3] & SEQ_MASK
    nseq = np.array(NSEQ, dtype=np.uint32)
    bad = (q0 == q1) | (e0[:, 3] > SEQ_MASK) | (e1[:, 3] > SEQ_MASK)
    # entry 1 is current when entry 0 is unused, or seq1 == NSEQ(seq0)
    one_current = (q0 == 0) | ((q1 != 0) & (nseq[q0] == q1))
    entries = np.where(one_current[:, None], e1, e0)
    next_slot = np.where(one_current, 0, 1).astype(np.int64)
    return entries, next_slot, bad


