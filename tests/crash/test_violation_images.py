"""Violations keep their images as differences from one shared base, not whole.

The images a violation gives (``image``, ``persisted``), its printed form and its diff ranges are
pinned to those of the dense implementation (every violation held two whole images) by hashes in
``data/violation_images.json``, over the regression suite, its three models and every way of
running an exploration; a subprocess shows that 100 violations of a 256 MiB region stay far below
what 100 whole images would take.
"""

import dataclasses
import hashlib
import json
import pickle
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_regression import BUGS, MODELS, _checks, _initial

from pmemkit import crash

GOLDEN = Path(__file__).parent / "data" / "violation_images.json"
MODES = {
    "in-process": {},
    "workers": {"workers": 2},
    "executor": {"executor": "threads"},
    "sections": {"workers": 2, "sections": lambda info: "auto"},   # the in-process pool
}


def images_digest(report):
    """A hash of every kept violation's point, choice, images, diff ranges and printed form
    (the checker's message left out: pytest's assertion rewriting changes it)."""
    h = hashlib.sha256()
    for v in report.violations:
        shown = str(dataclasses.replace(v, message="-"))
        for part in (repr((v.point.index, sorted(v.choice.items()), v.diff_ranges())).encode(),
                     v.image, v.persisted, shown.encode()):
            h.update(len(part).to_bytes(8, "little") + part)
    return f"{len(report.violations)}:{h.hexdigest()}"


def run(name, which, model, mode):
    entry = BUGS[name]
    kw = dict(MODES[mode], size=2048, initial=_initial(entry), model=model, progress=None)
    check = _checks(entry)[which]
    if kw.get("executor") == "threads":
        with ThreadPoolExecutor(2) as pool:
            kw["executor"] = pool
            return crash.explore(entry[which], check, **kw)
    return crash.explore(entry[which], check, **kw)


CASES = [(name, which, model) for name in sorted(BUGS) for which in (0, 1) for model in MODELS]


def digests(mode):
    """``{"bug/variant/model": digest}`` of the regression suite run in ``mode``."""
    return {f"{name}/{which}/{model}": images_digest(run(name, which, model, mode))
            for name, which, model in CASES}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_violation_images_are_those_of_whole_images(mode):
    golden = json.loads(GOLDEN.read_text())
    assert digests(mode) == golden


def test_a_report_pickles_with_its_images():
    report = run("undo-valid-before-log", 0, "x86", "in-process")
    again = pickle.loads(pickle.dumps(report))
    assert images_digest(again) == images_digest(report) and report.violations
    v = report.violations[0]
    assert v.size == len(v.image) == 2048
    assert v.image == v.image and v.image is not v.image      # made on each read, never kept
    # the violations share one base: pickled once, not once per violation
    assert len(pickle.dumps(report)) < 2048 * len(report.violations)


def test_a_violation_of_plain_bytes_still_works():
    r = run("numpy-view-unflushed", 0, "x86", "in-process")
    v = dataclasses.replace(r.violations[0], image=bytes(r.violations[0].image),
                            persisted=bytes(r.violations[0].persisted))
    assert v == r.violations[0] and v.diff_ranges() == r.violations[0].diff_ranges()
    assert str(v) == str(r.violations[0])


# 100 kept violations of a 256 MiB region: 126 images of one fence reject (7 stores, far apart,
# durable all or none). Whole images would take 100 x 256 MiB = 25 GiB: under the address-space
# limit below the dense implementation died with MemoryError after a dozen violations.
MANY_VIOLATIONS = textwrap.dedent("""\
    import pickle, resource, sys
    limit = 3 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from pmemkit import crash

    SIZE, FAR = 256 << 20, 997 * 4096

    def workload(pm):
        for i in range(7):
            pm.write(i * FAR, (i + 1).to_bytes(8, "little"))
            pm.flush(i * FAR, 8)
        pm.drain()

    def check(img):
        got = [img[i * FAR] != 0 for i in range(7)]
        assert all(got) or not any(got), "a torn group"

    kw = {"workers": 2} if sys.argv[1] == "workers" else {}
    r = crash.explore(workload, check, size=SIZE, progress=None, **kw)
    assert r.violation_count == 126 and len(r.violations) == 100, r.summary()
    shown, pickled = str(r), pickle.dumps(r)
    assert "crash: 00" in shown and len(pickled) < 1 << 20, len(pickled)
    v = r.violations[-1]
    assert v.size == SIZE and all(e - s == 1 for s, e in v.diff_ranges())
    # this process's peak (ru_maxrss would count the forking parent's from before the exec)
    status = open("/proc/self/status").read()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    image = v.image                 # one whole image, made on this read
    assert image == crash.replay(workload, v) and len(image) == SIZE
""")


@pytest.mark.parametrize("how", ["in-process", "workers"])
def test_many_violations_of_a_big_region_cost_the_bytes_that_differ(how):
    out = subprocess.run([sys.executable, "-c", MANY_VIOLATIONS, how], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 256 * 1024, f"peak RSS {peak_kib} KiB: more than one whole image"
