"""``pmemkit info``, ``pmemkit doctor`` and ``pmemkit demo``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pmemkit import defaults
from pmemkit.cli import main

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "discovery", "fixtures")


def fx(name):
    return os.path.join(FIXTURES, name)


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_info_human(capsys):
    status, out, _ = run(capsys, "info", "--root", fx("memmap-fsdax-mounted"))
    assert status == 0
    assert "memmap=512M!2G  512M at 2G" in out
    assert "region0  512M  e820  persistence domain: unknown" in out
    assert "namespace0.0  fsdax  512M  /dev/pmem0" in out
    assert "/dev/pmem1  block  512M  dax" in out
    assert "/mnt/pmem-ext4  /dev/pmem0  ext4  dax=always" in out
    assert "/mnt/nodax  /dev/pmem1  ext4  no dax option" in out
    assert "RAM: 1.9 GiB" in out and "kernel: 6.1." in out


def test_info_human_invalid_memmap(capsys, tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("memmap=1Q!9G memmap=1G$4G\n")
    _, out, _ = run(capsys, "info", "--root", str(tmp_path))
    assert "memmap=1Q!9G  INVALID: cannot parse memmap size '1Q'" in out
    assert "memmap=1G$4G  (not persistent memory)" in out


def test_info_human_devdax(capsys):
    _, out, _ = run(capsys, "info", "--root", fx("devdax"))
    assert "eADR: yes" in out
    assert "/dev/dax0.0  dax" in out
    assert "persistence domain: cpu_cache  deep_flush" in out
    assert "CPU flush: clwb, clflushopt, clflush (best: clwb; from /proc/cpuinfo)" in out


def test_info_json_fixture(capsys):
    status, out, _ = run(capsys, "info", "--json", "--root", fx("nvdimm-sector"))
    assert status == 0
    d = json.loads(out)
    assert d["namespaces"][0]["mode"] == "sector"
    assert d["devices"][0]["name"] == "pmem0s"
    assert d["mounts"][0]["dax"] is None
    assert d["backend"] == "files"


def test_info_json_this_machine(capsys):
    status, out, _ = run(capsys, "info", "--json")
    assert status == 0
    d = json.loads(out)
    assert d["backend"] == "live" and d["root"] == "/"
    assert set(d) >= {"regions", "namespaces", "devices", "mounts", "memmaps", "cpu",
                      "eadr", "dax_mount_points", "problems"}


def test_doctor_grub_line(capsys):
    status, out, _ = run(capsys, "doctor", "--root", fx("none"))
    assert status == 0
    assert f'GRUB_CMDLINE_LINUX="... memmap={defaults.MEMMAP}"' in out
    assert "update-grub" in out and "reboot" in out


def test_doctor_raw_ndctl(capsys):
    _, out, _ = run(capsys, "doctor", "--root", fx("memmap-raw"))
    assert "ndctl create-namespace -f -e namespace0.0 --mode=fsdax --map=mem" in out


def test_doctor_mount(capsys):
    _, out, _ = run(capsys, "doctor", "--root", fx("nvdimm-fsdax"))
    assert f"mount -o dax /dev/pmem0 {defaults.MOUNT_POINTS['ext4']}" in out
    assert "mkfs.ext4" in out


def test_doctor_vm(capsys):
    _, out, _ = run(capsys, "doctor", "--root", fx("container"))
    assert "pmemkit vm run -- " in out


def test_doctor_json(capsys):
    _, out, _ = run(capsys, "doctor", "--json", "--root", fx("memmap-fsdax-mounted"))
    advice = json.loads(out)
    assert {"mount.nodax", "mount.dax"} <= {a["key"] for a in advice}
    assert all(isinstance(a["commands"], list) for a in advice)


def test_doctor_this_machine(capsys):
    status, out, _ = run(capsys, "doctor")
    assert status == 0
    assert out.startswith("pmemkit doctor: ")
    assert "[" in out   # at least one piece of advice


def test_bad_root_is_a_clean_error(capsys, tmp_path):
    status, out, err = run(capsys, "info", "--root", str(tmp_path))
    assert status == 2
    assert err.startswith("pmemkit: error: ") and "neither sys/ nor proc/" in err
    assert "Traceback" not in err


def test_demo_in_a_directory(capsys, tmp_path):
    status, out, _ = run(capsys, "demo", "--dir", str(tmp_path))
    assert status == 0
    assert "read back: 'hello, persistent memory'" in out
    assert "demo succeeded" in out
    assert "is_pmem=" in out and "granularity=" in out and "flush_method=" in out
    assert os.listdir(tmp_path) == []          # the demo file is removed


def test_demo_default_location(capsys):
    status, out, _ = run(capsys, "demo")
    assert status == 0 and "demo succeeded" in out


def test_demo_bad_dir_is_a_clean_error(capsys, tmp_path):
    status, _, err = run(capsys, "demo", "--dir", str(tmp_path / "missing"))
    assert status == 2 and err.startswith("pmemkit: error: ")


@pytest.mark.dax
def test_demo_on_dax(capsys, dax_dir):
    _, out, _ = run(capsys, "demo", "--dir", str(dax_dir))
    assert "is_pmem=True" in out
    assert "granularity=cache_line" in out or "granularity=byte" in out


def test_entry_point_subprocess():
    r = subprocess.run([sys.executable, "-m", "pmemkit", "info", "--json", "--root", fx("none")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["has_grub_defaults"] is True
