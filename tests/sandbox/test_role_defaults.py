"""The role's defaults are pmemkit's defaults (pmemkit/defaults.py is the single source of
truth)."""

from pathlib import Path

import yaml

from pmemkit import defaults
from pmemkit.units import parse_memmap

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "pmem"


def load_defaults():
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_role_defaults_equal_pmemkit_defaults():
    d = load_defaults()
    assert d["pmem_memmap"] == defaults.MEMMAP
    assert d["pmem_namespace_mode"] == defaults.NAMESPACE_MODE
    assert tuple(d["pmem_filesystems"]) == tuple(defaults.FILESYSTEMS)
    assert d["pmem_mount_points"] == dict(defaults.MOUNT_POINTS)
    assert d["pmem_mount_options"] == defaults.MOUNT_OPTIONS
    assert ({fs: tuple(opts) for fs, opts in d["pmem_mkfs_options"].items()}
            == {fs: tuple(opts) for fs, opts in defaults.MKFS_OPTIONS.items()})
    assert d["pmem_supported_filesystems"] == defaults.MIN_FS_MIB
    assert d["pmem_partition_table"] == defaults.PARTITION_TABLE


def test_role_memmap_default_is_a_valid_range():
    assert str(parse_memmap(load_defaults()["pmem_memmap"])) == defaults.MEMMAP


def test_every_default_filesystem_is_supported_by_the_role():
    d = load_defaults()
    assert set(d["pmem_filesystems"]) <= set(d["pmem_supported_filesystems"])
    assert set(d["pmem_filesystems"]) <= set(d["pmem_mount_points"])
