"""Interop with libpmemblk, the oracle: pools go both ways and read identically."""

import ctypes
import errno

import numpy as np
import pytest

from pmemkit.btt import create_pmemblk, open_pmemblk
from pmemkit.btt import pmemblk as P
from pmemkit.errors import BttCorruptError, BttIOError, InvalidArgumentError

from blkhelper import run_pmempool


def content(bsize, tag):
    return np.random.default_rng(tag).integers(0, 256, bsize, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("bsize", [512, 520, 4096])
def test_pool_written_by_libpmemblk_reads_identically(tmp_path, blkpool, bsize):
    path = tmp_path / "c.blk"
    assert run_pmempool("create", "blk", bsize, path).returncode == 0
    pool = blkpool(path, bsize)
    nblock = pool.nblock
    expect = {}
    for i, lba in enumerate([0, 1, 2, 17, nblock - 1, 17, 1]):   # includes rewrites
        pool.write(lba, content(bsize, i))
        expect[lba] = content(bsize, i)
    pool.write(30, content(bsize, 99))
    pool.set_zero(30)                                             # zeroed block
    pool.set_zero(31)                                             # zeroed, never written
    pool.write(40, content(bsize, 98))
    pool.set_error(40)                                            # error block
    pool.set_error(41)
    expect[30] = expect[31] = bytes(bsize)
    expect[50] = bytes(bsize)                                     # never written
    pool.close()

    b = open_pmemblk(str(path))
    assert b.nlba == nblock and b.lbasize == bsize
    for lba, data in expect.items():
        assert b.read(lba) == data, lba
    for lba in (40, 41):
        with pytest.raises(BttIOError):
            b.read(lba)
    got = b.read_many(sorted(expect))
    assert [got[i].tobytes() for i in range(len(expect))] == [expect[k] for k in sorted(expect)]
    assert b.check() == []
    # pmemkit continues writing a libpmemblk pool; libpmemblk reads it back
    b.write(17, content(bsize, 500))
    b.write_many([2, 3, 40], np.frombuffer(content(bsize, 501) + content(bsize, 502)
                                           + content(bsize, 503), np.uint8))
    b.close()
    assert run_pmempool("check", "-v", path).returncode == 0
    pool = blkpool(path, bsize)
    assert pool.read(17) == content(bsize, 500)
    assert [pool.read(lba) for lba in (2, 3, 40)] == [content(bsize, t) for t in (501, 502, 503)]


@pytest.mark.parametrize("bsize", [512, 4096])
def test_pool_made_by_pmemkit_passes_pmempool_check_and_reads_in_libpmemblk(tmp_path, blkpool,
                                                                           libpmemblk, bsize):
    path = tmp_path / "p.blk"
    b = create_pmemblk(str(path), bsize, 40 << 20)
    rng = np.random.default_rng(bsize)
    lbas = rng.choice(b.nlba, 600, replace=False)
    data = rng.integers(0, 256, (600, bsize), dtype=np.uint8)
    b.write_many(lbas, data)                      # all 256 lanes, several batches
    for i in range(0, 600, 37):
        b.write(int(lbas[i]), content(bsize, i))  # single writes over batched ones
        data[i] = np.frombuffer(content(bsize, i), np.uint8)
    b.set_zero(int(lbas[1]))
    data[1] = 0
    b.set_error(int(lbas[2]))
    nlba = b.nlba
    assert b.check() == []
    b.close()

    res = run_pmempool("check", "-v", path)
    assert res.returncode == 0 and "consistent" in res.stdout, res.stdout + res.stderr
    info = run_pmempool("info", path).stdout
    assert f"External LBA count       : {nlba}" in info

    pool = blkpool(path, bsize)
    assert pool.nblock == nlba
    for i, lba in enumerate(lbas.tolist()):
        if i == 2:
            buf = ctypes.create_string_buffer(bsize)
            assert libpmemblk.pmemblk_read(pool.p, buf, lba) == -1
            assert ctypes.get_errno() == errno.EIO
            continue
        assert pool.read(lba) == data[i].tobytes(), i
    # libpmemblk writes into the pmemkit pool, pmemkit reads them
    pool.write(int(lbas[3]), content(bsize, 7))
    pool.close()
    b = open_pmemblk(str(path))
    assert b.read(int(lbas[3])) == content(bsize, 7)
    assert b.check() == []


def test_pool_with_no_layout_yet(tmp_path, blkpool):
    path = tmp_path / "fresh.blk"
    assert run_pmempool("create", "blk", 4096, path).returncode == 0
    with pytest.raises(BttCorruptError):
        open_pmemblk(str(path), readonly=True)   # nothing to read yet
    b = open_pmemblk(str(path))                  # lays the BTT out, as the first write would
    assert b.read(5) == bytes(4096)
    b.write(5, content(4096, 5))
    b.close()
    assert run_pmempool("check", path).returncode == 0
    assert blkpool(path, 4096).read(5) == content(4096, 5)


def test_pool_header_errors(tmp_path):
    path = tmp_path / "p.blk"
    create_pmemblk(str(path), 512, P.MIN_POOL).close()
    raw = bytearray(path.read_bytes())
    assert P.parse_header(raw[:4096])["major"] == 1
    raw[100] ^= 0xFF
    path.write_bytes(raw)
    with pytest.raises(BttCorruptError, match="checksum"):
        open_pmemblk(str(path))
    raw[:8] = b"PMEMLOG\0"
    path.write_bytes(raw)
    with pytest.raises(BttCorruptError, match="signature"):
        open_pmemblk(str(path))
    with pytest.raises(InvalidArgumentError, match="exists"):
        create_pmemblk(str(path), 512, P.MIN_POOL)
    with pytest.raises(InvalidArgumentError, match="at least"):
        create_pmemblk(str(tmp_path / "tiny"), 512, 1 << 20)
