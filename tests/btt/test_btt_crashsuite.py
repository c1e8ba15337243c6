"""The atomic-sector crash suite (CI-sized): BTT never tears or loses, raw mode tears,
and a BTT with a broken protocol is caught."""

import struct

import pytest

from pmemkit.btt import Btt, crashsuite as cs
from pmemkit.btt import layout
from pmemkit.cli import main
from pmemkit.cli.status import Status
from pmemkit.errors import InvalidArgumentError

CFG = cs.SuiteConfig(writes=3, engine="random:150")
FENCES = {"write": 4, "zero": 1, "error": 1, "many": 4}


@pytest.mark.parametrize("workload", cs.WORKLOADS)
def test_btt_sectors_are_atomic_and_raw_sectors_tear(workload):
    btt = cs.run_workload(workload, "btt", CFG)
    raw = cs.run_workload(workload, "raw", CFG)
    ops = cs.build_ops(workload, CFG, 100, CFG.nfree)
    # the random engine samples: never a complete exploration
    assert not btt.complete and btt.crash_points == sum(FENCES[op[0]] for op in ops) + 1
    assert btt.states >= btt.crash_points * 10
    assert (btt.torn_states, btt.lost_writes, btt.inconsistent) == (0, 0, 0), btt.examples
    assert raw.torn_states > 0 and raw.torn_sectors >= raw.torn_states


def test_persistence_points_per_write():
    """A write has exactly four fences: data, flog half 1, flog half 2 (commit), map."""
    from pmemkit.crash import TracedRegion

    img = bytearray(CFG.size)
    Btt.create(img, lbasize=512, nfree=4).close()
    r = TracedRegion(initial=img)
    b = Btt.open(r)
    f0 = r.fences
    b.write(1, b"\x01" * 512)
    assert r.fences - f0 == 4
    f0 = r.fences
    b.write_many([1, 2, 3, 4], bytes(range(256)) * 8)    # one batch over 4 lanes
    assert r.fences - f0 == 4
    f0 = r.fences
    b.set_zero(2)
    assert r.fences - f0 == 1


class _MapFirstBtt(Btt):
    """A broken BTT: it publishes the map entry before the data and the flog commit are durable."""

    def write(self, lba, data):
        a, premap = self._locate(lba)
        lane, _ = self._take_lanes(1)
        free = a.free[lane] & layout.MAP_LBA_MASK
        r = self._region
        old = a.map_mv[premap] or (premap | layout.MAP_NORMAL)
        seq = layout.NSEQ[a.seq[lane]]
        foff = a.flogoff + layout.flog_entry_offset(lane, a.slots[a.next[lane]])
        r.write(a.mapoff + 4 * premap, struct.pack("<I", free | layout.MAP_NORMAL))
        r.write(a.dataoff + free * a.internal_lbasize, data)
        r.write(foff, struct.pack("<IIII", premap, old, free | layout.MAP_NORMAL, seq))
        r.persist(a.mapoff + 4 * premap, 4)
        r.persist(a.dataoff + free * a.internal_lbasize, len(data))
        r.persist(foff, 16)
        a.seq[lane] = seq
        a.next[lane] ^= 1
        a.free[lane] = old


def test_the_checker_catches_a_broken_protocol():
    row = cs.run_workload("random", "btt", CFG, device_class=_MapFirstBtt)
    assert row.torn_states > 0 or row.lost_writes > 0 or row.inconsistent > 0


@pytest.mark.parametrize("lbasize", [0, 3, 7, True, "512"])
def test_sectors_too_small_to_tell_apart_are_refused(lbasize):
    # a 3-byte sector used to grow to 4 bytes in the workload and fail with a confusing
    # "data is 4 bytes" error from the BTT
    with pytest.raises(InvalidArgumentError, match="at least 8 bytes"):
        cs.SuiteConfig(lbasize=lbasize)


def test_cli_refuses_a_tiny_lbasize(capsys):
    assert main(["btt", "crash-suite", "--lbasize", "3"]) == Status.USAGE
    assert "at least 8 bytes" in capsys.readouterr().err
