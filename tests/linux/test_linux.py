"""pmemkit._linux: the machine-fact readers, on fixture trees and on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from pmemkit._linux import cpuinfo, mounts, statx, sysfs
from pmemkit.errors import DiscoveryError


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_mapping_does_not_import_discovery():
    code = ("import os, sys, tempfile; os.environ['PMEMKIT_FORCE_PMEM'] = '1'\n"
            "import pmemkit.mapping as m\n"
            "d = tempfile.mkdtemp(); p = os.path.join(d, 'f')\n"
            "m.map_file(p, 4096, create=True).close(); os.unlink(p); os.rmdir(d)\n"
            "heavy = ('pmemkit.discovery', 'psutil', 'pyudev', 'numpy')\n"
            "bad = [n for n in heavy if n in sys.modules]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cpu_flags_under_a_root(tmp_path):
    root = _tree(tmp_path, {"/proc/cpuinfo": "processor : 0\nflags\t\t: fpu clwb sse2\n\n"
                                             "processor : 1\nflags : other\n"})
    assert cpuinfo.cpu_flags(root) == frozenset({"fpu", "clwb", "sse2"})
    assert cpuinfo.cpu_flags(str(tmp_path / "nothing")) is None
    no_flags = _tree(tmp_path / "b", {"/proc/cpuinfo": "processor : 0\n"})
    assert cpuinfo.cpu_flags(no_flags) is None


def test_live_cpu_flags_are_read_once():
    assert cpuinfo.cpu_flags() is cpuinfo.cpu_flags()


def test_mounts_table_and_longest_match(tmp_path):
    root = _tree(tmp_path, {"/proc/self/mounts": (
        "/dev/sda1 / ext4 rw 0 0\n"
        "/dev/pmem0 /mnt/with\\040space ext4 rw,dax 0 0\n"
        "/dev/pmem1 /mnt/with\\040space/inner xfs rw,dax=always 0 0\n"
        "short line\n")})
    table = mounts.read_mounts(root)
    assert table == [("/dev/sda1", "/", "ext4", "rw"),
                     ("/dev/pmem0", "/mnt/with space", "ext4", "rw,dax"),
                     ("/dev/pmem1", "/mnt/with space/inner", "xfs", "rw,dax=always")]
    assert table[1].mountpoint == "/mnt/with space"
    assert mounts.mount_of("/mnt/with space/inner/f", root).device == "/dev/pmem1"
    assert mounts.mount_of("/mnt/with space/f", root).fstype == "ext4"
    assert mounts.mount_of("/mnt/with spaces", root).mountpoint == "/"
    assert mounts.read_mounts(str(tmp_path / "none")) == []


def test_live_mount_of_this_file():
    entry = mounts.mount_of(__file__)
    real = os.path.realpath(__file__)
    assert entry is not None and (entry.mountpoint == "/" or real.startswith(entry.mountpoint))


def test_unreadable_mount_table_raises(tmp_path):
    (tmp_path / "proc/self/mounts").mkdir(parents=True)
    with pytest.raises(DiscoveryError, match="cannot read"):
        mounts.read_mounts(str(tmp_path))


def test_eadr_and_device_dax_under_a_root(tmp_path):
    region = "/sys/devices/platform/e820_pmem/ndbus0/region0"
    root = _tree(tmp_path, {
        f"{region}/persistence_domain": "cpu_cache\n",
        f"{region}/deep_flush": "0\n",
        f"{region}/dax0.0/dax/dax0.0/size": "1073741824\n",
    })
    (tmp_path / "sys/bus/nd/devices").mkdir(parents=True)
    os.symlink(tmp_path / region.lstrip("/"), tmp_path / "sys/bus/nd/devices/region0")
    (tmp_path / "sys/dev/char").mkdir(parents=True)
    device = tmp_path / f"{region.lstrip('/')}/dax0.0/dax/dax0.0"
    os.symlink(device, tmp_path / "sys/dev/char/251:0")
    st = SimpleNamespace(st_rdev=os.makedev(251, 0))
    assert sysfs.has_eadr(root) is True
    assert sysfs.devdax_size(st, root) == 1 << 30
    assert sysfs.devdax_deep_flush_file(st, root).endswith("region0/deep_flush")
    with pytest.raises(OSError):
        sysfs.devdax_size(SimpleNamespace(st_rdev=os.makedev(1, 3)), root)
    (tmp_path / region.lstrip("/") / "persistence_domain").write_text("memory_controller\n")
    assert sysfs.has_eadr(root) is False


def test_statx_on_a_plain_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x")
    assert statx.is_dax(f) in (False, None)
    with pytest.raises(DiscoveryError, match="No such file"):
        statx.statx_attributes(tmp_path / "missing")
