"""pmemkit's pytest plugin (entry point ``pytest11``): thin over the library.

* Marker ``dax``: the test needs a real DAX filesystem (MAP_SYNC). Such tests get
  a ``dax_dir`` fixture: a fresh directory on a DAX mount. Where there is none they
  are skipped - or fail, with ``--require-dax`` or ``PMEMKIT_REQUIRE_DAX=1``
  (``pmemkit vm test`` sets it inside the guest, so nothing is skipped there).
* Fixture ``crash_explore(workload, check, **explore_kwargs)``: runs
  :func:`pmemkit.crash.explore` and fails the test with the full report on a violation.
* DAX mounts come from ``PMEMKIT_DAX_DIRS`` (``os.pathsep``-separated) when set,
  else from :func:`pmemkit.discovery.dax_mount_points`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from . import defaults


def pytest_addoption(parser):
    group = parser.getgroup("pmemkit")
    group.addoption(
        "--require-dax", action="store_true", default=False,
        help=f"fail (instead of skip) tests marked 'dax' when no DAX mount is found "
             f"(also: {defaults.REQUIRE_DAX_ENV}=1)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "dax: needs a real DAX filesystem (MAP_SYNC works); skipped off DAX unless "
        f"--require-dax or {defaults.REQUIRE_DAX_ENV}=1")


def _require_dax(config):
    return config.getoption("--require-dax") or os.environ.get(defaults.REQUIRE_DAX_ENV) == "1"


def dax_mount_points():
    """Directories on DAX mounts, from the environment or from discovery."""
    env = os.environ.get(defaults.DAX_DIRS_ENV)
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    from .discovery import dax_mount_points as discovered
    return [Path(p) for p in discovered()]


def _no_dax_outcome(config, why):
    if _require_dax(config):
        pytest.fail(f"real DAX required but {why}", pytrace=False)
    pytest.skip(f"needs real DAX: {why} (run it inside `pmemkit vm test`)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("dax") is None:
        return
    if not dax_mount_points():
        _no_dax_outcome(item.config, f"no DAX mount was found (set {defaults.DAX_DIRS_ENV} or "
                                     "mount a filesystem with -o dax)")


@pytest.fixture
def dax_dirs(request):
    """Every DAX mount point this machine offers (list of Paths); skips/fails when none."""
    mounts = dax_mount_points()
    if not mounts:
        _no_dax_outcome(request.config, "no DAX mount was found")
    return mounts


@pytest.fixture
def dax_dir(dax_dirs):
    """A fresh, empty directory on the first DAX mount, removed afterwards."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="pmemkit-test-", dir=dax_dirs[0]))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- crash exploration -------------------------------------------------------------

class CrashExplorer:
    """The ``crash_explore`` fixture: ``crash_explore(workload, check, **explore_kwargs)``.

    Runs :func:`pmemkit.crash.explore` and fails the test with the full report
    (crash point, marker, durable stores, byte diff, replay hint) when any crash
    image is inconsistent; returns the report otherwise. ``expect_violations=True``
    inverts that (for tests that show a bug is caught). An exploration with no violation
    that was sampled or stopped by ``max_states`` fails too (its OK would not be true)
    unless ``allow_incomplete=True``. ``.reports`` keeps every report.
    """

    def __init__(self):
        self.reports = []

    def __call__(self, workload, check, *, expect_violations=False, allow_incomplete=False,
                 **kwargs):
        from . import crash

        kwargs.setdefault("progress", "auto")     # a bar only on a terminal (pytest -s)
        report = crash.explore(workload, check, **kwargs)
        self.reports.append(report)
        if expect_violations and report.ok:
            pytest.fail(f"expected crash-consistency violations, found none:\n{report}",
                        pytrace=False)
        if not expect_violations and not report.ok:
            pytest.fail(f"crash-consistency violations:\n{report}", pytrace=False)
        if report.ok and not report.complete and not allow_incomplete:
            pytest.fail(f"no violation, but the exploration was incomplete (sampled or stopped by "
                        f"max_states), so this is not an OK: use engine='exhaustive' and no "
                        f"max_states, or pass allow_incomplete=True\n{report}", pytrace=False)
        return report


@pytest.fixture
def crash_explore():
    """Explore a workload's crash states; the test fails with the report on any violation."""
    return CrashExplorer()
