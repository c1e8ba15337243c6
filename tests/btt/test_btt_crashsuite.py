"""The atomic-sector crash suite (CI-sized): BTT never tears or loses, raw mode tears,
and a BTT with a broken protocol is caught."""

import struct

import pytest

from pmemkit.btt import Btt, crashsuite as cs

CFG = cs.SuiteConfig(writes=3, engine="random:150")
FENCES = {"write": 4, "zero": 1, "error": 1, "many": 4}


@pytest.mark.parametrize("workload", cs.WORKLOADS)
def test_btt_sectors_are_atomic_and_raw_sectors_tear(workload):
    btt = cs.run_workload(workload, "btt", CFG)
    raw = cs.run_workload(workload, "raw", CFG)
    ops = cs.build_ops(workload, CFG, 100, CFG.nfree)
    assert btt.complete and btt.crash_points == sum(FENCES[op[0]] for op in ops) + 1
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
        a, pre = self._locate(lba)
        lane = self._next_lane
        self._next_lane = (lane + 1) % self.nlane
        free = a.free[lane] & 0x3FFFFFFF
        r = self._region
        old = a.map_mv[pre] or (pre | 0xC0000000)
        seq = (0, 2, 3, 1)[a.seq[lane]]
        foff = a.flogoff + lane * 64 + a.slots[a.next[lane]] * 16
        r.write(a.mapoff + 4 * pre, struct.pack("<I", free | 0xC0000000))
        r.write(a.dataoff + free * a.ilbasize, data)
        r.write(foff, struct.pack("<IIII", pre, old, free | 0xC0000000, seq))
        r.persist(a.mapoff + 4 * pre, 4)
        r.persist(a.dataoff + free * a.ilbasize, len(data))
        r.persist(foff, 16)
        a.seq[lane] = seq
        a.next[lane] ^= 1
        a.free[lane] = old


def test_the_checker_catches_a_broken_protocol():
    row = cs.run_workload("random", "btt", CFG, device_class=_MapFirstBtt)
    assert row.torn_states > 0 or row.lost_writes > 0 or row.inconsistent > 0
