"""Memory a region hands out never crashes the interpreter, in reference cycles or not.

Buffers, their slices, arrays, views of arrays and ``numpy.frombuffer`` of the buffer are
caught in reference cycles (an exception's traceback holding a slice, lists holding
themselves) and collected before and after ``close()``, on every kind of region.  Each case
runs in a subprocess: the failure this guards against is a SIGSEGV in the garbage collector.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pmemkit import cpu

CPU_METHODS = [m for m in cpu.available_methods() if m != "msync"]

# mapped files go to the working directory, which is the test's tmp_path
MAKE_PMEM = ("_n = [0]\n"
             "def make():\n"
             "    _n[0] += 1\n"
             "    path = os.path.join(os.getcwd(), str(_n[0]))\n"
             "    return pmemkit.map_file(path, 8192, create=True)\n")

KINDS = {
    "pmem-msync": "os.environ['PMEMKIT_FORCE_PMEM'] = '0'\n" + MAKE_PMEM,
    "pmem-msync-python": ("from pmemkit import cpu, mapping\n"
                          "mapping._native = None; cpu.native = lambda: None\n" + MAKE_PMEM),
    **{f"pmem-{m}": (f"os.environ['PMEMKIT_FORCE_PMEM'] = '1'; "
                     f"os.environ['PMEMKIT_FLUSH'] = '{m}'\n" + MAKE_PMEM)
       for m in CPU_METHODS},
    "buffer-bytearray": "def make():\n    return BufferRegion(bytearray(8192))\n",
    "buffer-numpy": "def make():\n    return BufferRegion(np.zeros(8192, np.uint8))\n",
    "buffer-read-only": "def make():\n    return BufferRegion(bytes(8192), writable=False)\n",
    "traced": "def make():\n    return TracedRegion(8192)\n",
    "traced-no-tracker": ("from pmemkit.crash import trace\n"
                          "trace.Tracker = None\n"
                          "def make():\n    return TracedRegion(8192)\n"),
}

PRELUDE = """
import gc, os, random, sys, time
import numpy as np
import pmemkit
from pmemkit.region import BufferRegion
from pmemkit.crash.trace import TracedRegion
{make}
"""

# The reported reproducer: a buffer slice held by an exception's traceback in a cycle.
REPRODUCER = """
def boom(b):
    raise OSError(14, "x")
def t():
    pm = make(); buf = pm.buffer; keep = []
    try:
        boom(buf[:100])
    except OSError as e:
        keep.append(e); keep.append(keep)
    pm.close()
t(); gc.collect()
print("ok")
"""

# Everything handed out, in cycles with the region itself; collected before close, after
# close while alive, then read and written, then dropped and collected.
CYCLES = """
def hand_out(pm):
    if pm.writable:
        pm.write(0, bytes(range(64)))
    a = pm.array('u1')
    out = [pm.buffer, pm.buffer[3:40], pm.buffer[3:40][1:2], a, a[4:20], a[4:20].view('u2'),
           pm.array('u4', (2, 3), offset=8), np.frombuffer(pm.buffer, 'u1'),
           np.frombuffer(pm.buffer[8:16], 'u8'), memoryview(a), memoryview(a)[5:9],
           np.ndarray((64,), 'u1', buffer=pm.buffer)]
    out.append(out)
    out.append(pm)
    pm.cycle = out          # region -> list -> region
    return out

def garbage_cycle(pm, views_only=False):
    # cycles of what was handed out, reachable from nothing once this returns (numpy arrays
    # are not tracked by the collector, so the views-only cycle is collected as a whole)
    if views_only:
        out = [pm.buffer, pm.buffer[3:40], memoryview(pm.buffer[8:]).cast('B')]
    else:
        out = hand_out(pm)
    out.append(out)
    try:
        raise OSError(14, "x")
    except OSError as e:
        out.append(e)       # the traceback holds this frame, which holds out
    pm.__dict__.pop("cycle", None)

expected = bytes(range(64)) if make().writable else bytes(64)
for when in ("before", "after", "never"):
    pm = make()
    out = hand_out(pm)
    garbage_cycle(pm)
    if when == "before":
        gc.collect()
    pm.close()
    garbage_cycle_after_close = out[:3]
    garbage_cycle_after_close.append(garbage_cycle_after_close)
    del garbage_cycle_after_close
    if when == "after":
        gc.collect()
    buf, sl, sl2, a, a2, v, a3, f, f8, m, m2, nd = out[:12]
    assert bytes(buf[:64]) == expected, when
    assert bytes(sl) == expected[3:40] and bytes(sl2) == expected[4:5]
    assert bytes(a[:64]) == expected and bytes(a2) == expected[4:20]
    assert v.tobytes() == expected[4:20] and bytes(f[:64]) == expected
    assert a3.tobytes() == expected[8:32] and f8.tobytes() == expected[8:16]
    assert bytes(m[:64]) == expected and bytes(m2) == expected[5:9]
    assert nd.tobytes() == expected
    if pm.writable:
        a[63] = 1
        assert buf[63] == 1 and f[63] == 1 and nd[63] == 1
    del pm, out, buf, sl, sl2, a, a2, v, a3, f, f8, m, m2, nd
    gc.collect()
    # closed while only garbage cycles hold what it handed out
    for views_only in (False, True):
        pm = make()
        garbage_cycle(pm, views_only)
        pm.close()
        del pm
        gc.collect()
print("ok")
"""

# Random create / slice / cycle / close / collect for a few seconds.
STRESS = """
rng = random.Random(int(sys.argv[1]))
pool, regions = [], []
deadline = time.monotonic() + float(sys.argv[2])
steps = 0
while time.monotonic() < deadline:
    steps += 1
    op = rng.randrange(9)
    if op == 0 or not regions:
        regions.append(make())
    elif op == 1:
        pm = regions.pop(rng.randrange(len(regions)))
        pm.close()
    elif op == 2:
        pm = rng.choice(regions)
        if not pm.closed:
            start = rng.randrange(8192)
            pool.append(pm.buffer[start:rng.randrange(start, 8193)])
    elif op == 3:
        pm = rng.choice(regions)
        if not pm.closed:
            a = pm.array('u1', offset=rng.randrange(0, 8192, 8))
            pool.append(a[rng.randrange(max(1, len(a))):].view('u1'))
    elif op == 4:
        pm = rng.choice(regions)
        if not pm.closed:
            pool.append(np.frombuffer(pm.buffer, 'u8'))
    elif op == 5:
        pm = rng.choice(regions)
        if not pm.closed:
            made = rng.choice([lambda: pm.buffer[rng.randrange(8192):],
                               lambda: pm.array('u1')[rng.randrange(8192):].view('u1'),
                               lambda: np.frombuffer(pm.buffer, 'u1')])
            cyc = [made(), pm]
            cyc.append(cyc)
            try:
                raise OSError(14, "x")
            except OSError as e:
                cyc.append(e)
            if rng.random() < 0.5:
                pool.append(cyc[0])
            del cyc, made
    elif op == 6 and pool:
        pool.pop(rng.randrange(len(pool)))
    elif op == 7:
        gc.collect()
    elif op == 8 and pool:
        x = rng.choice(pool)
        assert bytes(memoryview(x).cast('B')[:8]) == bytes(memoryview(x).cast('B')[:8])
    if len(regions) > 8:
        regions.pop(0).close()
    if len(pool) > 64:
        del pool[:32]
for pm in regions:
    pm.close()
del pool, regions
gc.collect()
print("ok", steps > 100)
"""


def _run(tmp_path, kind, body, *args):
    script = PRELUDE.format(make=KINDS[kind]) + body
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Error" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("kind", list(KINDS))
def test_buffer_slice_in_an_exception_cycle_is_collected_after_close(kind, tmp_path):
    assert _run(tmp_path, kind, REPRODUCER) == "ok\n"


@pytest.mark.parametrize("kind", list(KINDS))
def test_everything_handed_out_survives_cycles_and_collection_around_close(kind, tmp_path):
    assert _run(tmp_path, kind, CYCLES) == "ok\n"


@pytest.mark.parametrize("kind", ["pmem-msync", "pmem-msync-python", "buffer-bytearray",
                                  "traced"])
def test_random_create_slice_cycle_close_collect(kind, tmp_path):
    assert _run(tmp_path, kind, STRESS, "1234", "1.5") == "ok True\n"
