"""The Vagrantfile validates offline (Debian's vagrant and vagrant-libvirt packages)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.units import parse_size

VM_DIR = Path(__file__).resolve().parents[2] / "vm"


def vagrant(tmp_path, *args, **env_extra):
    exe = shutil.which("vagrant")
    if not exe:
        pytest.fail("vagrant is not installed: sudo apt-get install vagrant vagrant-libvirt "
                    "(scripts/bootstrap.sh does)")
    env = dict(os.environ, VAGRANT_CWD=str(VM_DIR), VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"),
               VAGRANT_HOME=str(tmp_path / "home"), VAGRANT_CHECKPOINT_DISABLE="1",
               VAGRANT_NO_COLOR="1", **env_extra)
    env.pop("PMEM_MEMMAP", None) if "PMEM_MEMMAP" not in env_extra else None
    return subprocess.run([exe, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=300)


def test_vagrantfile_validates(tmp_path):
    proc = vagrant(tmp_path, "validate")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout


def test_vagrantfile_validates_with_small_range(tmp_path):
    proc = vagrant(tmp_path, "validate", PMEM_MEMMAP="512M!1G")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vagrantfile_refuses_bad_range(tmp_path):
    proc = vagrant(tmp_path, "validate", PMEM_MEMMAP="4G$12G")
    assert proc.returncode != 0
    assert "PMEM_MEMMAP=4G$12G is not SIZE!OFFSET" in proc.stdout + proc.stderr


def test_vagrantfile_repeats_the_vm_defaults():
    """Ruby cannot import defaults.py: the Vagrantfile's memory headroom and CPUs are pinned here
    (its memmap range comes from the role's defaults, pinned in test_role_defaults.py)."""
    text = (VM_DIR / "Vagrantfile").read_text()
    headroom = re.search(r'ENV\.fetch\("PMEM_HEADROOM_MB", "(\d+)"\)', text)
    cpus = re.search(r'ENV\.fetch\("PMEM_CPUS", "(\d+)"\)', text)
    assert headroom and cpus, "the Vagrantfile no longer reads PMEM_HEADROOM_MB / PMEM_CPUS"
    assert int(headroom.group(1)) << 20 == parse_size(defaults.VM_MEMORY_HEADROOM)
    assert int(cpus.group(1)) == defaults.VM_CPUS
