"""Page write tracking (mprotect) of the traced region: whole-region diff images, safe faults."""

import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_regression import BUGS, MODELS, _initial

from pmemkit import crash
from pmemkit.crash import trace
from pmemkit.crash.trace import TracedRegion, image_hash

pytestmark = pytest.mark.skipif(trace.Tracker is None, reason="pmemkit.crash._dirty was not built")

PAGE = 4096


def mixed_views(pm):
    """Stores through write(), pm.buffer and numpy views, across page boundaries, unaligned."""
    a = pm.array(np.uint64)
    buf = pm.buffer
    a[510:514] = [1, 2, 3, 4]  # crosses the first page boundary
    pm.write(PAGE * 2 - 4, b"abcdefgh")  # write() over a page boundary
    buf[PAGE * 3 + 5 : PAGE * 3 + 9] = b"wxyz"  # unaligned, inside one unit pair
    pm.flush(PAGE - 16, 32)
    pm.write(8, b"\x07" * 8)
    a[0] = 9  # view store next to a write() store
    pm.persist(0, 16)
    buf[pm.size - 3 :] = b"end"  # last bytes of an odd-sized region
    pm.persist(PAGE * 2 - 8, 16)
    pm.persist(PAGE * 3, 16)
    pm.persist(pm.size - 8, 8)
    a[1000] = 5  # never flushed


def _image_log(workload, model, initial=None, size=None):
    seen = []

    def check(img, point):
        seen.append((point.index, hashlib.blake2b(img).hexdigest()))

    report = crash.explore(
        workload, check, size=size, initial=initial, model=model, engine="exhaustive", progress=None
    )
    return seen, report


CASES = [(name, i) for name in sorted(BUGS) for i in (0, 1)]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("case", [*CASES, ("mixed-views", None)], ids=str)
def test_tracked_images_equal_whole_region_diffs(case, model, monkeypatch):
    name, which = case
    if which is None:
        workload, initial, size = mixed_views, None, 4 * PAGE + 3
    else:
        workload, initial, size = BUGS[name][which], _initial(BUGS[name]), 2048
    tracked, r1 = _image_log(workload, model, initial, size)
    monkeypatch.setattr(trace, "Tracker", None)
    dense, r2 = _image_log(workload, model, initial, size)
    assert tracked == dense and tracked
    assert r1.violation_count == r2.violation_count
    assert (r1.states_checked, r1.unique_images, r1.crash_points) == (
        r2.states_checked,
        r2.unique_images,
        r2.crash_points,
    )
    assert r1.warnings == r2.warnings


def test_view_stores_are_recorded_once_with_writes_between():
    pm = TracedRegion(3 * PAGE)
    a = pm.array(np.uint8)
    a[100] = 1
    pm.write(200, b"\x02")
    a[PAGE + 1] = 3
    pm.flush(0, 3 * PAGE)
    got = [(s.offset, len(s.data), s.via) for s in pm.stores]
    assert got == [(96, 8, "view"), (200, 1, "write"), (PAGE, 8, "view")]
    assert pm._tracker.dirty_pages == 0
    pm.close()
    a[5] = 1  # the memory stays valid (and writable) while the view lives


def test_durable_hash_is_relative_to_the_initial_image():
    initial = bytes(range(256)) * 32
    pm = TracedRegion(initial=initial)
    pm.write(64, b"x" * 100)
    pm.persist(64, 100)
    assert pm.durable_hash == image_hash(pm.durable) ^ image_hash(initial)
    pm.close()


def _run(code, **kw):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def test_a_real_segfault_still_reaches_faulthandler_and_kills():
    """A fault outside tracked memory goes to the previous handler (faulthandler), once."""
    proc = _run("""
        import ctypes, faulthandler
        faulthandler.enable()
        from pmemkit.crash.trace import TracedRegion
        pm = TracedRegion(8192)
        a = pm.array("u1")
        a[10] = 1
        ctypes.string_at(0)
    """)
    assert proc.returncode == -11, proc
    assert proc.stderr.count("Segmentation fault") == 1, proc.stderr


def test_a_real_segfault_without_faulthandler_kills():
    proc = _run("""
        import ctypes
        from pmemkit.crash.trace import TracedRegion
        pm = TracedRegion(8192)
        pm.buffer[0:4] = b"abcd"
        ctypes.string_at(0)
    """)
    assert proc.returncode == -11, proc


def test_several_regions_and_handlers_installed_later():
    """Two tracked regions at once; faulthandler enabled later is chained below ours."""
    proc = _run("""
        import faulthandler
        from pmemkit.crash.trace import TracedRegion
        one, two = TracedRegion(3 * 4096), TracedRegion(5 * 4096)
        a, b = one.array("u8"), two.array("u8")
        faulthandler.enable()
        three = TracedRegion(4096)
        c = three.array("u1")
        a[600] = 1; b[2000] = 2; b[1] = 3; c[7] = 4
        for pm in (one, two, three):
            pm.flush(0, pm.size)
            print(sorted((s.offset, s.via) for s in pm.stores))
    """)
    assert proc.returncode == 0, proc
    assert proc.stdout.split("\n")[:3] == [
        "[(4800, 'view')]",
        "[(8, 'view'), (16000, 'view')]",
        "[(0, 'view')]",
    ]


def test_memory_follows_the_pages_written():
    """A 1 GiB region, a numpy view held, 200 persisted writes: megabytes, not gigabytes."""
    proc = _run("""
        import resource
        from pmemkit import crash
        size = 1 << 30
        def work(pm):
            a = pm.array("u8")
            for i in range(200):
                off = i * (size // 200) // 8 * 8
                a[off // 8] = i + 1
                pm.persist(off, 8)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = crash.explore(work, lambda img: True, size=size, progress=None)
        assert r.ok and r.complete and r.crash_points == 201
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) < 64, f"{proc.stdout.strip()} MiB for 200 written pages"


def test_checker_file_is_patched_and_restored(tmp_path):
    """Only differing pages are copied; what a checker wrote into the file is undone."""
    from pmemkit.crash.checkers import _ImageFile

    f = _ImageFile()
    try:
        one = bytes(range(256)) * 64  # 4 pages
        path = f.write(one)
        with open(path, "rb") as fh:
            assert fh.read() == one
        two = bytearray(one)
        two[5000:5008] = b"ABCDEFGH"
        with open(path, "r+b") as fh:  # the checker scribbles on page 3
            fh.seek(3 * PAGE + 1)
            fh.write(b"zz")
        assert f.write(two) == path
        with open(path, "rb") as fh:
            assert fh.read() == bytes(two)
        os.unlink(path)  # replaced behind our back: written whole
        with open(path, "wb") as fh:
            fh.write(b"short")
        f.write(one)
        with open(path, "rb") as fh:
            assert fh.read() == one
    finally:
        f.cleanup()
    assert f.dir is None


def test_a_system_call_into_tracked_memory_fails_cleanly(tmp_path):
    """The documented limit: read(2) into a protected page is EFAULT, an OSError, not a crash."""
    src = tmp_path / "data"
    src.write_bytes(b"x" * 100)
    pm = TracedRegion(8192)
    buf = pm.buffer
    errno = None
    with open(src, "rb", buffering=0) as f:
        try:
            f.readinto(buf[:100])
        except OSError as exc:  # not kept: its traceback would hold buf in a cycle
            errno = exc.errno
    assert errno == 14
    with open(src, "rb") as f:  # buffered: copied in user space, tracked
        f.readinto(buf[:100])
    pm.flush(0, 100)
    assert [(s.offset, len(s.data), s.via) for s in pm.stores] == [(0, 104, "view")]
    pm.close()
