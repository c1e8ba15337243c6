"""pmemkit.discovery against fixture sysfs/procfs trees, and against this machine."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from pmemkit import defaults, discovery
from pmemkit.discovery import (
    DiscoveryError, dax_mount_points, diagnose, discover, has_eadr, is_dax,
    parse_cmdline_memmaps, suggest_memmap,
)
from pmemkit.errors import InvalidArgumentError
from pmemkit.units import Memmap

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
GiB = 1 << 30
MiB = 1 << 20


def fx(name):
    return os.path.join(FIXTURES, name)


def keys(advice):
    return [a.key for a in advice]


def by_key(advice, key):
    found = [a for a in advice if a.key == key]
    assert found, f"no advice {key!r} in {keys(advice)}"
    return found[0]


# --- fixture trees (captured from Linux 6.1 guests: see make_fixtures.py) ----------

RAM_GUEST_3G = 2060423168      # MemTotal of the memmap guest (-m 3G, 1 GiB reserved)


def test_memmap_boots_in_fsdax():
    # Linux 6.1: a memmap= range boots as a label-less io namespace in fsdax mode
    # (map=mem, no pfn device), /dev/pmem0 DAX-capable.
    info = discover(fx("memmap-fsdax"))
    assert info.backend == "files"
    regions = [(r.name, r.size, r.provider, r.persistence_domain, r.deep_flush)
               for r in info.regions]
    assert regions == [("region0", 512 * MiB, "e820", None, False),
                       ("region1", 512 * MiB, "e820", None, False)]
    assert all(r.emulated and not r.eadr for r in info.regions)
    # seeds (pfn0.0, btt0.0, dax0.0 with no namespace) are not namespaces
    assert [(n.name, n.region, n.mode, n.size, n.devtype, n.holder, n.device)
            for n in info.namespaces] == [
        ("namespace0.0", "region0", "fsdax", 512 * MiB, "nd_namespace_io", None, "/dev/pmem0"),
        ("namespace1.0", "region1", "fsdax", 512 * MiB, "nd_namespace_io", None, "/dev/pmem1")]
    assert [(d.name, d.path, d.kind, d.size, d.dax, d.namespace) for d in info.devices] == [
        ("pmem0", "/dev/pmem0", "block", 512 * MiB, True, "namespace0.0"),
        ("pmem1", "/dev/pmem1", "block", 512 * MiB, True, "namespace1.0")]
    assert info.mounts == ()               # rootfs, proc, sysfs, devtmpfs are not pmem
    assert [(m.text, m.memmap, m.valid) for m in info.memmaps] == [
        ("memmap=512M!1G", Memmap(512 * MiB, 1 * GiB), True),
        ("memmap=512M!2G", Memmap(512 * MiB, 2 * GiB), True)]
    assert info.ram_bytes == RAM_GUEST_3G
    assert info.kernel.startswith("6.1.")
    assert info.has_grub_defaults is False
    assert info.problems == ()
    assert info.cpu.best_flush == "clwb"   # QEMU -cpu max


def test_memmap_raw():
    info = discover(fx("memmap-raw"))
    ns = info.namespace("namespace0.0")
    assert (ns.mode, ns.holder, ns.device) == ("raw", None, "/dev/pmem0")
    assert info.namespace("namespace1.0").mode == "fsdax"
    assert [(d.name, d.dax) for d in info.devices] == [("pmem0", False), ("pmem1", True)]


def test_memmap_fsdax_mounted():
    info = discover(fx("memmap-fsdax-mounted"))
    # only pmem / DAX mounts are kept, with their DAX option
    assert [(m.device, m.mount_point, m.fstype, m.dax, m.dax_always) for m in info.mounts] == [
        ("/dev/pmem0", "/mnt/pmem-ext4", "ext4", "dax=always", True),
        ("/dev/pmem1", "/mnt/nodax", "ext4", None, False)]
    assert [m.mount_point for m in info.dax_mounts] == ["/mnt/pmem-ext4"]


def test_mount_options_and_bad_memmap(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(fx("memmap-fsdax-mounted"), root, symlinks=True)
    with open(root / "proc/mounts", "a") as f:
        f.write("/dev/pmem1 /mnt/pmem-xfs xfs rw,relatime,attr2,dax=inode,inode64,noquota 0 0\n"
                "/dev/mapper/vg-dax /srv/dax xfs rw,dax=never 0 0\n")
    (root / "proc/cmdline").write_text("root=/dev/vda1 memmap=512M!1G memmap=1Q!9G\n")
    info = discover(root)
    assert [(m.mount_point, m.dax) for m in info.mounts] == [
        ("/mnt/pmem-ext4", "dax=always"), ("/mnt/nodax", None), ("/mnt/pmem-xfs", "dax=inode"),
        ("/srv/dax", "dax=never")]
    assert [(m.text, m.valid) for m in info.memmaps] == [
        ("memmap=512M!1G", True), ("memmap=1Q!9G", False)]
    assert "1Q" in info.memmaps[1].error
    advice = diagnose(info)
    assert by_key(advice, "memmap.invalid").level == "warning"
    assert "mount -o dax=always /dev/pmem1 /mnt/pmem-xfs" in by_key(advice, "mount.inode").commands


def test_nvdimm_raw():
    # a QEMU NVDIMM without labels boots raw, no DAX on its block device
    info = discover(fx("nvdimm-raw"))
    [r] = info.regions
    assert (r.provider, r.persistence_domain, r.deep_flush, r.emulated, r.eadr) == (
        "ACPI.NFIT", "memory_controller", True, False, False)
    [ns] = info.namespaces
    assert (ns.mode, ns.devtype, ns.holder, ns.device) == (
        "raw", "nd_namespace_io", None, "/dev/pmem0")
    [dev] = info.devices
    assert (dev.dax, dev.size) == (False, 256 * MiB)


def test_nvdimm_fsdax():
    info = discover(fx("nvdimm-fsdax"))
    [ns] = info.namespaces
    assert (ns.mode, ns.holder, ns.device) == ("fsdax", "pfn0.0", "/dev/pmem0")
    [dev] = info.devices
    assert dev.dax is True and dev.namespace == "namespace0.0"
    assert dev.size == 266338304          # the pfn metadata (struct pages in RAM: map=mem) is small
    assert info.memmaps == () and info.mounts == ()


def test_nvdimm_sector():
    info = discover(fx("nvdimm-sector"))
    [ns] = info.namespaces
    assert (ns.mode, ns.holder, ns.device) == ("sector", "btt0.0", "/dev/pmem0s")
    [dev] = info.devices
    assert (dev.name, dev.dax, dev.namespace) == ("pmem0s", False, "namespace0.0")
    [m] = info.mounts
    assert (m.device, m.mount_point, m.dax, m.dax_always) == (
        "/dev/pmem0s", "/mnt/blk", None, False)


def test_devdax_and_eadr():
    # QEMU -machine nvdimm-persistence=cpu: the region's persistence domain is cpu_cache
    info = discover(fx("devdax"))
    [r] = info.regions
    assert r.persistence_domain == "cpu_cache" and r.eadr
    assert info.eadr is True
    [ns] = info.namespaces
    assert (ns.mode, ns.holder, ns.device) == ("devdax", "dax0.0", "/dev/dax0.0")
    [dev] = info.devices
    assert (dev.kind, dev.path, dev.size, dev.dax, dev.namespace) == (
        "dax", "/dev/dax0.0", 262144000, True, "namespace0.0")


def test_vm_harness_guest_with_partitions():
    # captured inside `pmemkit vm run` (dump.sh): ext4 and xfs on partitions of /dev/pmem0,
    # the project shared over 9p (its tag "pmemkit-share" must not pass for a pmem device)
    info = discover(fx("vm-partitions"))
    assert [(d.name, d.size, d.dax, d.namespace) for d in info.devices] == [
        ("pmem0", 512 * MiB, True, "namespace0.0"),
        ("pmem0p1", 208 * MiB, True, "namespace0.0"),      # dax from the whole disk's queue
        ("pmem0p2", 300 * MiB, True, "namespace0.0")]
    assert [(m.device, m.mount_point, m.fstype, m.dax) for m in info.mounts] == [
        ("/dev/pmem0p1", "/mnt/pmem-ext4", "ext4", "dax=always"),
        ("/dev/pmem0p2", "/mnt/pmem-xfs", "xfs", "dax=always")]
    assert dax_mount_points(fx("vm-partitions")) == ["/mnt/pmem-ext4", "/mnt/pmem-xfs"]
    advice = diagnose(info)
    # mounted through its partitions: no "mount /dev/pmem0" advice
    assert [a.key for a in advice if a.level in ("ok", "action")] == ["mount.dax", "mount.dax"]


def test_cpu_from_cpuinfo(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text(
        "processor\t: 0\nflags\t\t: fpu vme clflush mmx sse sse2\n\nprocessor\t: 1\n")
    info = discover(tmp_path)
    assert (info.cpu.clflush, info.cpu.clflushopt, info.cpu.clwb) == (True, False, False)
    assert info.cpu.best_flush == "clflush" and info.cpu.source == "/proc/cpuinfo"
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\n")
    assert discover(tmp_path).cpu is None


@pytest.mark.parametrize("name", ["none", "container"])
def test_no_pmem(name):
    info = discover(fx(name))
    assert info.regions == info.namespaces == info.devices == info.mounts == ()
    assert info.eadr is False
    assert info.cpu.best_flush == "clwb"
    assert info.has_grub_defaults is (name == "none")


def test_container_ignores_init_arguments():
    # container's cmdline has "memmap=1G!1G" after "--": an argument to init, not the kernel
    assert discover(fx("container")).memmaps == ()


def test_malformed_is_reported_not_raised():
    info = discover(fx("malformed"))
    where = {p.where: p.message for p in info.problems}
    assert "not a number: 'lots'" == where["/sys/bus/nd/devices/region0/size"]
    assert "unknown namespace mode 'quantum'" == where["/sys/bus/nd/devices/namespace0.0/mode"]
    assert "not a number: '0xZZ'" == where["/sys/block/pmem0/size"]
    assert any(p.message == "not ASCII text" and p.where.endswith("namespace0.0/holder")
               for p in info.problems)
    assert info.regions[0].size is None
    assert info.namespaces[0].mode == "quantum"
    assert info.devices[0].size is None
    assert [a.key for a in diagnose(info)].count("problem") == len(info.problems)


def test_to_dict_is_json():
    for name in sorted(os.listdir(FIXTURES)):
        d = discover(fx(name)).to_dict()
        back = json.loads(json.dumps(d))
        assert back == d
    d = discover(fx("memmap-fsdax-mounted")).to_dict()
    assert d["dax_mount_points"] == ["/mnt/pmem-ext4"]
    assert d["memmaps"][1]["memmap"] == {"size": 512 * MiB, "start": 2 * GiB, "text": "512M!2G"}
    assert d["regions"][0]["emulated"] is True and d["eadr"] is False
    assert d["mounts"][1]["dax"] is None
    assert d["mounts"][0]["options"] == ["rw", "relatime", "dax=always"]
    d = discover(fx("devdax")).to_dict()
    assert d["eadr"] is True and d["cpu"]["best_flush"] == "clwb"


def test_bad_roots(tmp_path):
    with pytest.raises(DiscoveryError, match="not a directory"):
        discover(tmp_path / "missing")
    with pytest.raises(DiscoveryError, match="neither sys/ nor proc/"):
        discover(tmp_path)
    with pytest.raises(InvalidArgumentError, match="live backend"):
        discover(fx("none"), backend="live")
    with pytest.raises(InvalidArgumentError, match="backend must be"):
        discover(fx("none"), backend="udev")


def test_unreadable_attribute_is_a_problem(tmp_path):
    # an attribute that is a directory or unreadable is reported, never a traceback
    root = tmp_path / "tree"
    region = root / "sys/devices/platform/e820_pmem/ndbus0/region0"
    (region / "size").mkdir(parents=True)                     # a directory, not a file
    (region / "persistence_domain").write_text("cpu_cache\n")
    (root / "sys/bus/nd/devices").mkdir(parents=True)
    (root / "sys/bus/nd/devices/region0").symlink_to(region)
    (root / "proc").mkdir()
    (root / "proc/cmdline").write_bytes(b"memmap=\xff\xfe!1G\n")
    info = discover(root)
    assert info.regions[0].size is None
    [m] = info.memmaps
    assert m.error and not m.valid
    assert has_eadr(root) is True


# --- the kernel command line --------------------------------------------------------

def test_parse_cmdline_memmaps():
    got = parse_cmdline_memmaps(
        'BOOT_IMAGE=/vmlinuz root=/dev/sda1 memmap=4G!12G,1G$2G "quoted=a b" memmap=bad!1G '
        "memmap=1G!13G memmap=exactmap memmap=256m!20g -- memmap=1G!1G")
    assert [(m.text, m.kind, m.memmap, m.valid) for m in got] == [
        ("memmap=4G!12G", "pmem", Memmap(4 * GiB, 12 * GiB), True),
        ("memmap=1G$2G", "other", None, False),
        ("memmap=bad!1G", "pmem", None, False),
        ("memmap=1G!13G", "pmem", Memmap(1 * GiB, 13 * GiB), False),
        ("memmap=exactmap", "other", None, False),
        ("memmap=256m!20g", "pmem", Memmap(256 * MiB, 20 * GiB), True),
    ]
    assert "overlaps memmap=4G!12G" in got[3].error
    assert "cannot parse memmap size 'bad'" in got[2].error
    assert got[1].error is None and got[4].error is None


def test_parse_cmdline_quotes_and_empty():
    assert parse_cmdline_memmaps("") == []
    got = parse_cmdline_memmaps('x="memmap=1G!1G inside a quoted value" memmap=1G!0 memmap=0!1G')
    assert [m.text for m in got] == ["memmap=1G!0", "memmap=0!1G"]
    assert got[0].valid and got[0].memmap == Memmap(GiB, 0)
    assert "zero size" in got[1].error


# --- helpers other modules use ----------------------------------------------------

def test_has_eadr_on_fixtures(tmp_path):
    assert has_eadr(fx("devdax")) is True
    assert has_eadr(fx("nvdimm-fsdax")) is False      # memory_controller
    assert has_eadr(fx("memmap-raw")) is False        # no persistence_domain attribute
    assert has_eadr(fx("none")) is False              # no regions at all
    # every region must be cpu_cache
    for i, domain in enumerate(("cpu_cache", "memory_controller")):
        d = tmp_path / f"sys/bus/nd/devices/region{i}"
        d.mkdir(parents=True)
        (d / "persistence_domain").write_text(domain + "\n")
    assert has_eadr(tmp_path) is False
    (tmp_path / "sys/bus/nd/devices/region1/persistence_domain").write_text("cpu_cache\n")
    assert has_eadr(tmp_path) is True


def test_dax_mount_points(tmp_path):
    assert dax_mount_points(fx("memmap-fsdax-mounted")) == ["/mnt/pmem-ext4"]
    assert dax_mount_points(fx("nvdimm-sector")) == []
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/mounts").write_text(
        "/dev/pmem0 /mnt/with\\040space ext4 rw,dax 0 0\n"
        "/dev/pmem1 /mnt/x xfs rw,dax=always 0 0\n"
        "/dev/pmem2 /mnt/i xfs rw,dax=inode 0 0\n"
        "/dev/pmem3 /mnt/n xfs rw,dax=never 0 0\n"
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        "broken line\n")
    assert dax_mount_points(tmp_path) == ["/mnt/with space", "/mnt/x"]


def test_is_dax_on_a_plain_file(tmp_path):
    f = tmp_path / "plain"
    f.write_bytes(b"x")
    raw = discovery._statx_raw(str(f))
    assert is_dax(f) in (False, None)
    if raw is not None and raw[1] & discovery.STATX_ATTR_DAX:
        assert is_dax(f) is False        # the kernel says: not DAX
    with pytest.raises(DiscoveryError, match="No such file"):
        is_dax(tmp_path / "missing")


def test_is_dax_reads_the_attribute(monkeypatch):
    from pmemkit._linux import statx

    monkeypatch.setattr(statx, "statx_attributes", lambda p: (0x200000, 0x200000 | 0x1000))
    assert is_dax("/x") is True
    monkeypatch.setattr(statx, "statx_attributes", lambda p: (0, 0x1000))     # kernel cannot tell
    assert is_dax("/x") is None
    monkeypatch.setattr(statx, "statx_attributes", lambda p: None)            # no statx
    assert is_dax("/x") is None


@pytest.mark.dax
def test_is_dax_on_a_dax_mount(dax_dir):
    f = os.path.join(dax_dir, "f")
    with open(f, "wb") as fh:
        fh.write(b"\0" * 4096)
    assert is_dax(f) is True
    mp = [m for m in dax_mount_points() if os.path.realpath(dax_dir).startswith(m)]
    assert mp, f"{dax_dir} is not under a mount point dax_mount_points() returns"


def test_helpers_do_not_import_heavy_modules():
    code = ("import sys, pmemkit.discovery as d; d.has_eadr(); d.is_dax('/'); "
            "d.dax_mount_points('" + fx("none") + "'); "
            "bad = [m for m in ('pyudev', 'numpy', 'psutil') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- doctor ---------------------------------------------------------------------------

def test_doctor_none_gives_grub_line():
    advice = diagnose(discover(fx("none")))                  # 24 GiB of RAM
    a = by_key(advice, "memmap.missing")
    assert a.level == "action"
    assert a.commands == (f'GRUB_CMDLINE_LINUX="... memmap={defaults.MEMMAP}"',
                          "update-grub", "reboot")
    assert "vm.alternative" in keys(advice)
    assert advice[0].key == "memmap.missing"


def test_doctor_small_ram_suggests_smaller_range():
    info = dataclasses.replace(discover(fx("none")), ram_bytes=8 * GiB)
    a = by_key(diagnose(info), "memmap.missing")
    assert a.commands[0] == f'GRUB_CMDLINE_LINUX="... memmap={defaults.MEMMAP_SMALL}"'
    assert "smaller range" in a.detail
    tiny = dataclasses.replace(info, ram_bytes=1 * GiB)
    ks = keys(diagnose(tiny))
    assert "memmap.too_small" in ks and "vm" in ks and "memmap.missing" not in ks


def test_suggest_memmap():
    assert str(suggest_memmap(24 * GiB)) == defaults.MEMMAP
    assert str(suggest_memmap(8 * GiB)) == defaults.MEMMAP_SMALL
    assert suggest_memmap(1 * GiB) is None
    assert str(suggest_memmap(None)) == defaults.MEMMAP


def test_doctor_container_gives_vm_harness():
    advice = diagnose(discover(fx("container")))
    a = by_key(advice, "vm")
    assert a.level == "action"
    assert any(c.startswith("pmemkit vm run -- ") for c in a.commands)
    assert "memmap.missing" not in keys(advice)


def test_doctor_raw_namespace_gives_ndctl_command():
    for name in ("memmap-raw", "nvdimm-raw"):
        a = by_key(diagnose(discover(fx(name))), "namespace.raw")
        assert a.commands == ("ndctl create-namespace -f -e namespace0.0 --mode=fsdax --map=mem",)


def test_doctor_unmounted_fsdax_gives_mkfs_and_mount():
    advice = diagnose(discover(fx("nvdimm-fsdax")))
    a = by_key(advice, "mount.missing")
    mp = defaults.MOUNT_POINTS["ext4"]
    assert a.commands == ("mkfs.ext4 " + " ".join(defaults.MKFS_OPTIONS["ext4"]) + " /dev/pmem0",
                          f"mkdir -p {mp}", f"mount -o dax /dev/pmem0 {mp}")
    assert "mkfs.xfs" in a.detail


def test_doctor_two_unmounted_devices_get_distinct_mount_points():
    advice = [a for a in diagnose(discover(fx("memmap-fsdax"))) if a.key == "mount.missing"]
    assert [a.commands[-1] for a in advice] == [
        f"mount -o dax /dev/pmem0 {defaults.MOUNT_POINTS[defaults.FILESYSTEMS[0]]}",
        f"mount -o dax /dev/pmem1 {defaults.MOUNT_POINTS[defaults.FILESYSTEMS[1]]}"]
    assert advice[1].commands[0].startswith(f"mkfs.{defaults.FILESYSTEMS[1]} ")
    # a memmap guest: the reserved GiB is not in MemTotal, and that is no reason to warn
    assert "memmap.beyond_ram" not in keys(diagnose(discover(fx("memmap-fsdax"))))


def test_doctor_mounted_without_dax(tmp_path):
    info = discover(fx("nvdimm-fsdax"))
    mount = discovery.Mount("/dev/pmem0", "/data", "xfs", ("rw", "relatime"), None)
    a = by_key(diagnose(dataclasses.replace(info, mounts=(mount,))), "mount.nodax")
    assert a.commands == ("umount /data", "mount -o dax /dev/pmem0 /data")


def test_doctor_dax_mounts():
    advice = diagnose(discover(fx("memmap-fsdax-mounted")))
    ok = by_key(advice, "mount.dax")
    assert ok.level == "ok" and "/mnt/pmem-ext4" in ok.title
    nodax = by_key(advice, "mount.nodax")
    assert nodax.commands == ("umount /mnt/nodax", "mount -o dax /dev/pmem1 /mnt/nodax")
    assert "mount.missing" not in keys(advice) and "memmap.missing" not in keys(advice)


def test_doctor_sector_and_devdax():
    s = by_key(diagnose(discover(fx("nvdimm-sector"))), "namespace.sector")
    assert "--mode=fsdax" in s.commands[0] and "no DAX" in s.title
    ks = keys(diagnose(discover(fx("nvdimm-sector"))))
    assert "mount.nodax" not in ks          # a BTT device cannot do DAX: no mount advice
    d = diagnose(discover(fx("devdax")))
    assert by_key(d, "namespace.devdax").level == "ok"
    assert by_key(d, "eadr").level == "info"


def test_doctor_memmap_without_region():
    info = dataclasses.replace(discover(fx("none")),
                               memmaps=tuple(parse_cmdline_memmaps("memmap=4G!12G")))
    a = by_key(diagnose(info), "memmap.no_region")
    assert "modprobe nd_e820" in a.commands
    assert "memmap.missing" not in keys(diagnose(info))


def test_doctor_memmap_beyond_ram():
    info = dataclasses.replace(discover(fx("memmap-raw")),
                               memmaps=tuple(parse_cmdline_memmaps("memmap=4G!12G")))
    a = by_key(diagnose(info), "memmap.beyond_ram")
    assert "ends at 16G" in a.detail and "memmap=" + defaults.MEMMAP_SMALL in a.detail


def test_doctor_native_extension():
    info = discover(fx("nvdimm-fsdax"))
    missing = diagnose(dataclasses.replace(info, native_flush=False))
    a = by_key(missing, "native.missing")
    assert "msync" in a.title and any("apt-get install" in c for c in a.commands)
    assert "native.missing" not in keys(diagnose(dataclasses.replace(info, native_flush=True)))


# --- this machine ---------------------------------------------------------------------

def test_live_and_file_backends_agree_on_this_machine():
    live = discover("/")
    assert live.backend == "live"          # pyudev is a dependency: it must work here
    files = discover("/", backend="files")
    a, b = live.to_dict(), files.to_dict()
    for d in (a, b):
        d.pop("backend")
        d["cpu"].pop("source")             # cpuid (native) vs /proc/cpuinfo: same flags
    assert a == b


def test_psutil_and_proc_mounts_agree():
    import psutil

    # mounts can change while we read (other processes): compare a snapshot that held still
    for _ in range(5):
        before = discovery._read_mounts_file("/")
        # psutil reports the device "none" (tmpfs, devpts, ...) as an empty string
        via_psutil = [(p.device or "none", p.mountpoint, p.fstype, p.opts)
                      for p in psutil.disk_partitions(all=True)]
        if discovery._read_mounts_file("/") == before:
            break
    assert via_psutil == before


def test_live_to_dict_is_json():
    d = discover().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["ram_bytes"] > 0
    assert d["cpu"]["clflush"] is True      # every x86-64 CPU has CLFLUSH
