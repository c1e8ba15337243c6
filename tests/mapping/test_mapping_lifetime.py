"""Memory handed out by a region stays valid after close() until the last view goes.

Each case runs in a subprocess: before the fix a numpy array read after ``close()``
was a SIGSEGV, which would take pytest down with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mapping_helpers import CPU_METHODS

SETUP = {
    "msync": "os.environ['PMEMKIT_FORCE_PMEM'] = '0'",
    "msync-python": ("from pmemkit import cpu, mapping\n"
                     "mapping._native = None; cpu.native = lambda: None"),
    **{m: f"os.environ['PMEMKIT_FORCE_PMEM'] = '1'; os.environ['PMEMKIT_FLUSH'] = '{m}'"
       for m in CPU_METHODS},
}

# Each case: code run with ``pm`` open, then ``pm.close()`` (or a ``with`` block), then code
# that touches what was handed out. It prints what it read; stdout is compared.
CASES = {
    "readme-with-block": (
        "with pmemkit.map_file(path, 4096, create=True) as pm:\n"
        "    a = pm.array('u8', 1)\n"
        "    a[0] = 7\n",
        "print(a[0]); a[0] = 8; print(a[0])", "7\n8\n"),
    "array-after-close": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "a = pm.array('u8', 1); a[0] = 5\n"
        "pm.close()\n",
        "print(a[0])", "5\n"),
    "view-of-a-slice": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "b = pm.array('u1')[10:20]; b[:] = 3\n"
        "v = b.view('u2')[1:]\n"
        "pm.close(); del b\n",
        "print(int(v.sum()))", f"{4 * 0x0303}\n"),
    "frombuffer-of-buffer": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "pm.write(100, b'\\x09')\n"
        "f = np.frombuffer(pm.buffer, 'u1')\n"
        "pm.close()\n",
        "print(f[100])", "9\n"),
    "ndarray-on-buffer": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "pm.write(0, b'\\x06')\n"
        "f = np.ndarray((8,), 'u1', buffer=pm.buffer)\n"
        "pm.close()\n",
        "print(f[0]); f[1] = 2; print(f[1])", "6\n2\n"),
    "memoryview-slice": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "pm.write(0, b'hello')\n"
        "m = pm.buffer[1:4]\n"
        "pm.close()\n",
        "print(bytes(m).decode())", "ell\n"),
    "mapping-garbage-collected": (
        "pm = pmemkit.map_file(path, 4096, create=True)\n"
        "a = pm.array('u4', 2, offset=8); a[1] = 11\n"
        "del pm; gc.collect()\n",
        "print(a[1])", "11\n"),
    "read-only-mapping": (
        "w = pmemkit.map_file(path, 4096, create=True); w.memcpy_persist(0, b'\\x04'); w.close()\n"
        "pm = pmemkit.map_file(path, writable=False)\n"
        "a = pm.array('u1', 4)\n"
        "pm.close()\n",
        "print(a[0])", "4\n"),
}

SCRIPT = """
import gc, os, sys
{setup}
import numpy as np
import pmemkit
path = sys.argv[1]
{before}
{after}
def mapped():
    with open('/proc/self/maps') as f:
        return path in f.read()
print('mapped-while-used', mapped())
for name in [n for n in dir() if n in ('a', 'b', 'v', 'f', 'm')]:
    del globals()[name]
gc.collect()
print('mapped-after-release', mapped())
"""


@pytest.mark.parametrize("kind", list(SETUP))
@pytest.mark.parametrize("case", list(CASES))
def test_handed_out_memory_outlives_close(case, kind, tmp_path):
    before, after, expected = CASES[case]
    script = SCRIPT.format(setup=SETUP[kind], before=before, after=after)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pool")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout == expected + "mapped-while-used True\nmapped-after-release False\n"


def test_region_api_refuses_use_after_close_even_with_views_alive(tmp_path):
    """The views keep the memory; the region itself is closed for every call."""
    script = textwrap.dedent("""
        import sys, pmemkit
        pm = pmemkit.map_file(sys.argv[1], 4096, create=True)
        a = pm.array('u1')
        pm.close()
        for call in (lambda: pm.read(0, 1), lambda: pm.array('u1'), lambda: pm.buffer,
                     lambda: pm.persist(0, 1)):
            try:
                call()
            except pmemkit.ClosedMappingError:
                print('closed')
        a[0] = 1
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pool")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "closed\n" * 4


@pytest.mark.parametrize("region", ["BufferRegion(bytearray(4096))", "TracedRegion(4096)"])
def test_other_regions_hand_out_memory_that_outlives_close(region):
    script = textwrap.dedent(f"""
        import gc
        import numpy as np
        from pmemkit.region import BufferRegion
        from pmemkit.crash.trace import TracedRegion
        r = {region}
        a = r.array('u8', 2); a[0] = 5
        f = np.frombuffer(r.buffer, 'u1')
        v = r.buffer[0:1]
        r.close(); del r; gc.collect()
        a[1] = 3
        print(a[0], a[1], f[0], bytes(v)[0])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr}"
    assert proc.stdout == "5 3 5 5\n"
