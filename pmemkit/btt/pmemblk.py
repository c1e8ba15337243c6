"""libpmemblk pool files: the 4 KiB PMDK pool header (``PMEMBLK``), bsize, then a BTT.

Pool layout (PMDK 1.x, as ``pmempool create blk BSIZE FILE`` makes it)::

    0x0000  pool header: signature "PMEMBLK\\0", major 1, features, uuids, crtime,
            architecture flags; Fletcher-64 checksum at 0xff8 covering the first 2 KiB
    0x1000  struct pmemblk: bsize (u32), is_zeroed (i32), run-time fields
    0x2000  the BTT (parent uuid = the pool set uuid), laid out on the first write
"""

from __future__ import annotations

import os
import struct
import time
import uuid as _uuid

from ..errors import BttCorruptError, InvalidArgumentError
from ..region import closed_on_failure
from .device import Btt
from .layout import DEFAULT_NFREE, INFO_SIZE, MIN_ARENA_SIZE, fletcher64

SIGNATURE = b"PMEMBLK\0"
HDR_SIZE = 4096
BSIZE_OFFSET = 0x1000
BTT_OFFSET = 0x2000
#: libpmemblk's smallest pool: a 16 MiB BTT plus the two 4 KiB headers.
MIN_POOL = MIN_ARENA_SIZE + BTT_OFFSET
MAJOR = 1
FEAT_COMPAT = 0x1            # CHECK_BAD_BLOCKS
FEAT_INCOMPAT = 0x6          # CKSUM_2K | SHUTDOWN_STATE
FEAT_RO_COMPAT = 0x0
CHECKSUM_OFFSET = HDR_SIZE - 8
CHECKSUM_END = 2048
# arch_flags of x86-64 Linux as PMDK computes them
ALIGNMENT_DESC = 0x000007F737777310
MACHINE_CLASS = 2            # 64-bit
MACHINE_DATA = 1             # little-endian
MACHINE = 62                 # EM_X86_64

# signature, major, compat, incompat, ro_compat, poolset_uuid, uuid, prev_part,
# next_part, prev_repl, next_repl, crtime, alignment_desc, machine_class, data,
# reserved[4], machine
_HDR = struct.Struct("<8sIIII16s16s16s16s16s16sQQBB4sH")


def header_checksum(raw):
    return fletcher64(raw, skip=CHECKSUM_OFFSET, zero_from=CHECKSUM_END)


def make_header(poolset_uuid, pool_uuid, crtime=None):
    raw = bytearray(HDR_SIZE)
    _HDR.pack_into(raw, 0, SIGNATURE, MAJOR, FEAT_COMPAT, FEAT_INCOMPAT, FEAT_RO_COMPAT,
                   poolset_uuid, pool_uuid, pool_uuid, pool_uuid, pool_uuid, pool_uuid,
                   int(time.time() if crtime is None else crtime), ALIGNMENT_DESC,
                   MACHINE_CLASS, MACHINE_DATA, b"\0" * 4, MACHINE)
    struct.pack_into("<Q", raw, CHECKSUM_OFFSET, header_checksum(raw))
    return bytes(raw)


def parse_header(raw):
    """Check a pool header; return its fields as a dict or raise BttCorruptError."""
    if len(raw) < HDR_SIZE:
        raise BttCorruptError(f"file is {len(raw)} bytes, too small for a libpmemblk pool header")
    if bytes(raw[:8]) != SIGNATURE:
        raise BttCorruptError(
            f"not a libpmemblk pool: signature {bytes(raw[:8])!r}, expected {SIGNATURE!r}")
    stored = struct.unpack_from("<Q", raw, CHECKSUM_OFFSET)[0]
    f = _HDR.unpack_from(raw, 0)
    zero_from = CHECKSUM_END if f[3] & 0x2 else None
    computed = fletcher64(raw[:HDR_SIZE], skip=CHECKSUM_OFFSET, zero_from=zero_from)
    if stored != computed:
        raise BttCorruptError(
            f"libpmemblk pool header checksum 0x{stored:016x} does not match 0x{computed:016x}: "
            f"the header is damaged (pmempool check -r may repair it)")
    return {"major": f[1], "compat": f[2], "incompat": f[3], "ro_compat": f[4],
            "poolset_uuid": f[5], "uuid": f[6], "crtime": f[11]}


#: libpmemblk stores its run-time pointers in the descriptor; ``pmempool info`` derives the
#: BTT's offset from ``data - addr``, so a plausible (fake) mapping address is recorded.
FAKE_ADDR = 0x7F0000000000


def pmemblk_descriptor(bsize, size):
    """struct pmemblk as libpmemblk leaves it: bsize, is_zeroed, addr, size, is_pmem, rdonly,
    data, datasize."""
    return struct.pack("<IiQQiiQQ", bsize, 1, FAKE_ADDR, size, 0, 0, FAKE_ADDR + BTT_OFFSET,
                       size - BTT_OFFSET)


def create_pmemblk(path, bsize, size, *, mode=0o644):
    """Create a libpmemblk pool of ``size`` bytes with block size ``bsize`` (``pmempool create
    blk BSIZE``) and lay out its BTT; returns the open :class:`~pmemkit.btt.Btt`."""
    from ..mapping import map_file

    try:
        bsize = int(bsize)
        size = int(size)
    except (TypeError, ValueError):
        raise InvalidArgumentError("bsize and size must be integers") from None
    if bsize < 1 or bsize > 1 << 30:
        raise InvalidArgumentError(f"bsize must be between 1 and 1 GiB, got {bsize}")
    if size < MIN_POOL:
        raise InvalidArgumentError(
            f"a libpmemblk pool needs at least {MIN_POOL} bytes (16 MiB + 8 KiB), got {size}")
    if os.path.exists(path):
        raise InvalidArgumentError(
            f"{path} exists; libpmemblk pools are created on new files (remove it first)")
    region = map_file(path, size, create=True, mode=mode)
    with closed_on_failure(region):
        poolset_uuid = _uuid.uuid4().bytes
        region.memcpy_persist(0, make_header(poolset_uuid, _uuid.uuid4().bytes))
        region.memcpy_persist(BSIZE_OFFSET, pmemblk_descriptor(bsize, size))
        return _lay_out_btt(region, bsize, poolset_uuid)


def _lay_out_btt(region, bsize, poolset_uuid):
    """Lay out the pool's BTT as libpmemblk does (style, nfree, version 1.1, flog flags)."""
    return Btt.create(region, bsize, DEFAULT_NFREE, "1.1", BTT_OFFSET, layout="pmemblk",
                      parent_uuid=poolset_uuid, close_region=True)


def open_pmemblk(path, *, readonly=False):
    """Open a libpmemblk pool file (header ``PMEMBLK``, BTT at 8 KiB); returns its Btt.

    A pool whose BTT was never laid out gets its layout now (libpmemblk does the same
    on the first write); read-only opens of such pools fail. ``readonly`` maps the file
    read-only (a file without write permission opens)."""
    from ..mapping import map_file

    region = map_file(path, writable=not readonly)
    with closed_on_failure(region):
        if region.size < MIN_POOL:
            raise BttCorruptError(
                f"{path} is {region.size} bytes, smaller than any libpmemblk pool", path=path)
        header = parse_header(region.read(0, HDR_SIZE))
        bsize = struct.unpack("<I", region.read(BSIZE_OFFSET, 4))[0]
        if bsize == 0:
            raise BttCorruptError(f"{path}: block size 0 in the pool descriptor", path=path)
        if not any(region.read(BTT_OFFSET, INFO_SIZE)) and not readonly:
            # libpmemblk zeroes the map itself when is_zeroed is unset; the layout always does
            return _lay_out_btt(region, bsize, header["poolset_uuid"])
        btt = Btt.open(region, BTT_OFFSET, readonly=readonly,
                       parent_uuid=header["poolset_uuid"], close_region=True)
    if btt.lbasize != bsize:
        btt.close()
        raise BttCorruptError(
            f"{path}: pool block size {bsize} differs from the BTT's lbasize {btt.lbasize}",
            path=path)
    return btt
