"""`pmemkit vm` from a user's project (tests/vm/project_fixture), with pmemkit installed from its
wheel into a fresh venv outside the checkout: the project's PyPI dependency and Debian packages
come from its [tool.pmemkit.vm] (one guest layer for its Python and its C part), its dax test
passes in the guest, its libpmemobj program sees real pmem, and the layer is built once.
Plus the user errors that must come before any guest boots.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.vm import cache

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("project_fixture")
MEMMAP = ["--memmap", defaults.MEMMAP_SMALL]
TIMEOUT = 1800


def _layers():
    return {p.name: p.stat().st_mtime for p in (cache.cache_dir() / "rootfs").iterdir()
            if not p.name.startswith(".")}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """pmemkit's wheel, built from a copy of the sources, installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "pmemkit", src / "pmemkit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    run = {"capture_output": True, "text": True, "timeout": 900}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist",
                            src], **run)
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp / "dist").glob("pmemkit-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    installed = subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", wheel], **run)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _pmemkit(venv, cwd, *argv):
    return subprocess.run([venv / "bin/pmemkit", "vm", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_project_from_wheel_python_and_c(wheel_venv, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    site = subprocess.run([wheel_venv / "bin/python", "-c",
                           "import pmemkit; print(pmemkit.__file__)"],
                          capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    assert site.startswith(str(wheel_venv)), site          # not the checkout

    first = _pmemkit(wheel_venv, project, "test", *MEMMAP, "--", "-v")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"test_roundtrip_on_dax PASSED", first.stdout), first.stdout
    assert re.search(r"test_roundtrip_plain PASSED", first.stdout), first.stdout
    plugins = next(line for line in first.stdout.splitlines() if line.startswith("plugins:"))
    assert plugins.count("pmemkit-") == 1, plugins          # loaded once, by its entry point
    layers = _layers()

    second = _pmemkit(wheel_venv, project, "run", *MEMMAP, "--setup", "make -C native pmemprobe",
                      "--", "sh", "-c",
                      "make -C native check && python3 -c 'import pmemkit, pmemkit._flush as f; "
                      "print(pmemkit.__file__, f.__file__)'")
    assert second.returncode == 0, second.stdout + second.stderr
    built = second.stdout.index("-o pmemprobe pmemprobe.c")        # by the setup command,
    assert built < second.stdout.index("pmem_is_pmem=")              # before the command
    for mount in defaults.MOUNT_POINTS.values():
        assert f"{mount}: pmem_is_pmem=1 mapped_is_pmem=1" in second.stdout, second.stdout
        assert f"{mount}/probe.pool: consistent" in second.stdout, second.stdout
    assert "native check passed" in second.stdout
    module, native = second.stdout.strip().splitlines()[-1].split()
    assert module == "/run/pmemkit-lib/pmemkit/__init__.py"  # the wheel's pmemkit, shared read-only
    assert native.endswith(".so")
    assert "building guest layer" not in second.stderr, second.stderr
    assert _layers() == layers                              # the cached layer was reused
    assert "PMEM_IS_PMEM_FORCE" not in second.stdout + second.stderr


def test_unknown_debian_package_is_named_before_any_guest(wheel_venv, tmp_path):
    res = _pmemkit(wheel_venv, tmp_path, "run", *MEMMAP,
                   "--packages", "make,pmemkit-no-such-package", "--", "true")
    assert res.returncode != 0
    assert "has no package pmemkit-no-such-package" in res.stderr, res.stderr
    assert "booting guest" not in res.stderr and "Traceback" not in res.stderr


def test_failing_pip_requirement_shows_pip_output(wheel_venv, tmp_path):
    res = _pmemkit(wheel_venv, tmp_path, "run", *MEMMAP, "--pip", "pmemkit-no-such-requirement==1",
                   "--", "true")
    assert res.returncode != 0
    assert "pip could not install pmemkit-no-such-requirement==1" in res.stderr, res.stderr
    assert "No matching distribution found for pmemkit-no-such-requirement" in res.stderr
    assert "booting guest" not in res.stderr and "Traceback" not in res.stderr


def test_too_new_requires_python_is_refused_before_boot(wheel_venv, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "new"\nrequires-python = ">=3.99"\n')
    res = _pmemkit(wheel_venv, tmp_path, "run", *MEMMAP, "--", "true")
    assert res.returncode != 0
    assert "requires-python '>=3.99'" in res.stderr and "guest's Python is 3." in res.stderr
    assert "booting guest" not in res.stderr and "Traceback" not in res.stderr


def test_extension_that_does_not_load_stops_the_run_loudly(tmp_path, monkeypatch):
    """A pmemkit whose extension cannot load in the guest's Python (here: a corrupt file) must
    not run anything on DAX with the msync fallback: the guest refuses, the host raises."""
    from pmemkit import vm
    from pmemkit.errors import GuestError
    from pmemkit.vm import runner

    package = tmp_path / "lib" / "pmemkit"
    shutil.copytree(ROOT / "pmemkit", package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"))
    runner.native_file(defaults.VM_SUITE_PYTHON, package).write_bytes(b"not an ELF file")
    monkeypatch.setattr(runner, "_pmemkit_package", lambda: package)
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    config = vm.VmConfig(memmap=defaults.MEMMAP_SMALL, share=project)
    with pytest.raises(GuestError, match="native extension does not load in the guest's Python"):
        vm.run(config, ["sh", "-c", "touch ran"], timeout=TIMEOUT)
    assert not (project / "ran").exists()


def test_interrupted_image_build_leaves_no_mount_process_or_directory(tmp_path):
    """Ctrl-C while debootstrap runs its second stage (it has mounted /proc in the target):
    the build's process tree is killed, the mount is gone and so is the temporary directory."""
    import os
    import signal
    import time

    import psutil

    cache_root = tmp_path / "cache"
    code = ("import sys; from pmemkit.vm import guest; "
            "guest.build_rootfs(cache_root=sys.argv[1], layer=guest.Layer(packages=('make',)))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache_root)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def mounts():
        with open("/proc/self/mounts", encoding="utf-8") as f:
            return [line.split()[1] for line in f if str(cache_root) in line.split()[1]]

    try:
        deadline = time.monotonic() + TIMEOUT
        while not mounts() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert mounts(), "debootstrap never mounted /proc in its target"
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in proc.stderr.read()
    assert mounts() == []
    assert [p.name for p in (cache_root / "rootfs").iterdir()] == []
    time.sleep(1)
    alive = [pid for pid in children if psutil.pid_exists(pid)
             and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [psutil.Process(pid).cmdline() for pid in alive]
    assert os.path.isdir(tmp_path)
