"""VmConfig validation, QEMU command lines, the launcher's cleanup and bad input: no guest boots
here."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from pmemkit import defaults
from pmemkit.cli import main as cli_main
from pmemkit.errors import GuestError, MissingToolError, VmConfigError, VmError
from pmemkit.units import parse_size
from pmemkit.vm import VmConfig, cache, kernel, qemu, runner
from pmemkit.vm.config import pc_ram_ranges

G = 1 << 30


# --- defaults and derived values ------------------------------------------------

def test_defaults_come_from_pmemkit_defaults(tmp_path):
    cfg = VmConfig(share=tmp_path)
    assert str(cfg.memmap) == defaults.MEMMAP
    assert cfg.mode == defaults.NAMESPACE_MODE
    assert cfg.fs == defaults.FILESYSTEMS
    assert cfg.accel == defaults.VM_ACCEL
    assert cfg.dax_dirs == [defaults.MOUNT_POINTS[f] for f in defaults.FILESYSTEMS]
    # memory holds the range plus headroom: 4G!12G -> 17G
    assert cfg.memory == cfg.memmap.end + parse_size(defaults.VM_MEMORY_HEADROOM)
    assert cfg.memory == 17 * G


def test_guest_init_repeats_the_defaults():
    """The guest's init script (shell) cannot import defaults.py: its copies are pinned here."""
    script = (Path(runner.__file__).parent / "guest_init.sh").read_text()
    settings = dict(line.split("=", 1) for line in script.splitlines()
                    if line.startswith(("MIN_XFS_MIB=", "PARTITION_TABLE=")))
    assert settings == {"MIN_XFS_MIB": str(defaults.MIN_FS_MIB["xfs"]),
                        "PARTITION_TABLE": defaults.PARTITION_TABLE}


def test_small_config_and_share(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    cfg = VmConfig(memmap=defaults.MEMMAP_SMALL, share=tmp_path)
    assert cfg.memmap.size == 512 << 20 and cfg.memmap.start == G
    assert cfg.share == tmp_path.resolve()
    assert cfg.guest_share == str(tmp_path.resolve())
    assert cfg.guest_cwd() == str(sub.resolve())
    assert VmConfig(share=False).share is None


def test_share_over_system_path_goes_elsewhere():
    assert VmConfig(share="/usr").guest_share == "/mnt/host"
    assert VmConfig(share="/").guest_share == "/mnt/host"


def test_non_fsdax_modes_make_no_filesystem_unless_asked(tmp_path):
    assert VmConfig(mode="sector", share=tmp_path).fs == ()
    assert VmConfig(mode="sector", fs="ext4", share=tmp_path).fs == ("ext4",)
    assert VmConfig(mode="sector", share=tmp_path).dax_dirs == []
    assert VmConfig(fs="none", share=tmp_path).fs == ()


def test_pc_ram_layout():
    assert pc_ram_ranges(2 * G) == [(0, 2 * G)]
    assert pc_ram_ranges(17 * G) == [(0, 3 * G), (4 * G, 18 * G)]


# --- bad input: each is a VmConfigError before anything starts ----------------------

@pytest.mark.parametrize("kw, words", [
    ({"memmap": "4X"}, "memmap"),
    ({"memmap": "4G"}, "memmap"),
    ({"memmap": "4G!12G", "memory": "8G"}, "does not fit"),
    ({"memmap": "512M!1G", "memory": "1G"}, "does not fit"),
    ({"memmap": "2G!1G", "memory": "2G"}, "does not fit"),
    ({"memmap": "512M!3G"}, "does not fit"),              # in the PCI hole
    ({"memmap": "2816M!128M", "memory": "3G"}, "leaves only"),
    ({"memmap": "512M!0"}, "below 64M"),
    ({"memory": "lots"}, "cannot parse guest memory"),
    ({"nvdimm": "big"}, "cannot parse NVDIMM size"),
    ({"nvdimm": "1000K"}, "multiple of 16M"),
    ({"nvdimm": "100M"}, "multiple of 16M"),
    ({"nvdimm": "1G", "memmap": "512M!1G"}, "either memmap or nvdimm"),
    ({"mode": "devdax"}, "unknown namespace mode"),
    ({"fs": "btrfs"}, "unknown filesystem"),
    ({"fs": "ext4,ext4"}, "twice"),
    ({"memmap": "256M!1G"}, "too small"),                 # ext4 + xfs need > 300M
    ({"nvdimm": "128M", "fs": "xfs"}, "too small"),
    ({"accel": "hvf"}, "unknown accelerator"),
    ({"cpus": 0}, "cpus"),
    ({"timeout": 0}, "timeout"),
    ({"share": "/nonexistent/dir"}, "not a directory"),
])
def test_bad_input_is_a_clear_error(kw, words, tmp_path):
    kw.setdefault("share", tmp_path)
    with pytest.raises(VmConfigError) as err:
        VmConfig(**kw)
    assert words in str(err.value)


def test_nvdimm_file_checks(tmp_path):
    f = tmp_path / "pmem.img"
    f.write_bytes(b"\0" * (4 << 20))
    with pytest.raises(VmConfigError, match="is 4M, not 1G"):
        VmConfig(nvdimm="1G", nvdimm_file=f, share=tmp_path)
    with pytest.raises(VmConfigError, match="not a regular file"):
        VmConfig(nvdimm="1G", nvdimm_file=tmp_path, share=tmp_path)
    with pytest.raises(VmConfigError, match="not writable"):
        VmConfig(nvdimm="1G", nvdimm_file=tmp_path / "missing" / "x.img", share=tmp_path)
    cfg = VmConfig(nvdimm_file=tmp_path / "new.img", share=tmp_path)   # size from the defaults
    assert cfg.nvdimm == parse_size(defaults.VM_NVDIMM_SIZE)
    assert runner.nvdimm_path(cfg) == tmp_path / "new.img"


def test_unwritable_cache_is_an_error_before_qemu(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(VmError, match="not writable"):
        cache.cache_dir(blocker / "cache")
    cfg = VmConfig(memmap=defaults.MEMMAP_SMALL, share=tmp_path, cache_dir=blocker / "cache",
                   accel="tcg")
    with pytest.raises(VmError, match="PMEMKIT_CACHE_DIR"):
        runner.run(cfg, ["true"])


def test_missing_qemu_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(cache.shutil, "which", lambda name: None)
    monkeypatch.setattr(cache.Path, "exists", lambda self: False)
    with pytest.raises(MissingToolError, match="apt-get install qemu-system-x86"):
        qemu.qemu_binary()
    with pytest.raises(MissingToolError, match="apt-get install qemu-system-x86"):
        runner.run(VmConfig(memmap=defaults.MEMMAP_SMALL, share=tmp_path, accel="tcg"), ["true"])
    with pytest.raises(MissingToolError, match="busybox-static"):
        cache.need_tool("busybox")
    with pytest.raises(MissingToolError, match="install debootstrap"):
        cache.need_tool("debootstrap")


def test_missing_kernel_package_names_the_apt_command(monkeypatch):
    monkeypatch.setattr(defaults, "VM_KERNEL_METAPACKAGE", "linux-image-no-such-flavour")
    with pytest.raises(MissingToolError, match="apt-get update"):
        kernel.resolve_package()


def test_cloud_kernel_refused(tmp_path):
    with pytest.raises(VmError, match="no 9p"):
        kernel.get_kernel("linux-image-6.1.0-1-cloud-amd64", cache_root=tmp_path)


def test_no_command(tmp_path):
    with pytest.raises(VmConfigError, match="no command"):
        runner.run(VmConfig(share=tmp_path), [])


# --- CLI: bad input exits 2 with a message, before QEMU starts -----------------------

@pytest.mark.parametrize("argv, words", [
    (["vm", "run", "--memmap", "4G!12G", "--memory", "8G", "--", "true"], "does not fit"),
    (["vm", "run", "--memmap", "lots", "--", "true"], "memmap"),
    (["vm", "run", "--nvdimm", "1G,labels,bogus", "--", "true"], "cannot parse --nvdimm"),
    (["vm", "run", "--fs", "zfs", "--", "true"], "unknown filesystem"),
    (["vm", "run", "--env", "NOEQUALS", "--", "true"], "NAME=VALUE"),
    (["vm", "run", "--memmap", "512M!1G"], "no command"),
    (["vm", "test", "--memory", "1Q"], "cannot parse guest memory"),
])
def test_cli_bad_input(argv, words, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pmemkit: error:") and words in err


def test_cli_nvdimm_spec(tmp_path):
    from pmemkit.cli.vm import _parse_nvdimm
    assert _parse_nvdimm("2G,labels") == ("2G", True, None)
    assert _parse_nvdimm(f"64M,file={tmp_path}/x.img") == ("64M", False, f"{tmp_path}/x.img")
    assert _parse_nvdimm("labels") == (defaults.VM_NVDIMM_SIZE, True, None)


# --- the QEMU command line ---------------------------------------------------------

class _FakeImage:
    class kernel:
        vmlinuz = Path("/k/vmlinuz")

        @staticmethod
        def boot_image():
            return Path("/k/vmlinux")

    initramfs = Path("/k/initrd")

    class rootfs:
        image = Path("/k/root.ext4")


def test_qemu_argv_memmap(tmp_path):
    cfg = VmConfig(memmap=defaults.MEMMAP_SMALL, share=tmp_path)
    argv = runner.qemu_argv(cfg, _FakeImage, tmp_path / "job", "tcg")
    append = argv[argv.index("-append") + 1]
    assert "memmap=512M!1G" in append.split()
    assert argv[argv.index("-kernel") + 1] == "/k/vmlinux"
    assert argv[argv.index("-m") + 1] == "2560M"
    assert argv[argv.index("-cpu") + 1] == "max" and "accel=tcg" in argv[argv.index("-machine") + 1]
    virtfs = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert any(f"path={tmp_path.resolve()}," in v and "mount_tag=pmemkit-share" in v
               for v in virtfs)
    assert any("mount_tag=pmemkit-job" in v for v in virtfs)
    assert "snapshot=on" in argv[argv.index("-drive") + 1]
    assert "-no-reboot" in argv and "nvdimm" not in " ".join(argv)


def test_qemu_argv_nvdimm(tmp_path):
    cfg = VmConfig(nvdimm="1G", nvdimm_file=tmp_path / "p.img", labels=True, share=False)
    argv = runner.qemu_argv(cfg, _FakeImage, tmp_path / "job", "kvm")
    joined = " ".join(argv)
    assert f"mem-path={tmp_path / 'p.img'},size=1073741824" in joined
    assert "label-size=128K" in joined and "nvdimm=on" in joined
    assert "maxmem=" in argv[argv.index("-m") + 1] and "slots=2" in argv[argv.index("-m") + 1]
    assert argv[argv.index("-cpu") + 1] == "host"
    assert "memmap=" not in joined and "pmemkit-share" not in joined


def _elf_with_notes(notes):
    """A minimal ELF64 with one PT_NOTE segment holding ``notes`` [(name, type, desc)]."""
    import struct
    blob = b""
    for name, ntype, desc in notes:
        n = name + b"\0"
        blob += struct.pack("<III", len(n), len(desc), ntype)
        blob += n + b"\0" * (-len(n) % 4) + desc + b"\0" * (-len(desc) % 4)
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, 64)            # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)        # e_phentsize, e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(blob), len(blob), 4)
    return bytes(header) + phdr + blob


def test_extract_vmlinux_needs_the_pvh_note():
    import lzma
    with_pvh = _elf_with_notes([(b"Xen", 6, b"linux\0"), (b"Xen", 18, b"\0" * 4)])
    without = _elf_with_notes([(b"Xen", 6, b"linux\0")])
    assert kernel.extract_vmlinux(b"MZ-setup-code" + lzma.compress(with_pvh)) == with_pvh
    assert kernel.extract_vmlinux(b"MZ-setup-code" + lzma.compress(without)) is None
    assert kernel.extract_vmlinux(b"no payload here") is None


def test_net_args_bind_loopback_only():
    port = qemu.free_port()
    argv = qemu.net_args([(port, 22)])
    assert argv[1] == f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22"


def test_choose_accel_tcg_and_refusals():
    assert qemu.choose_accel("tcg") == "tcg"
    with pytest.raises(VmConfigError):
        qemu.choose_accel("xen")


# --- the launcher always kills its process group -----------------------------------

def _alive(pids, wait=5.0):
    """The pids still running after ``wait`` s (SIGKILL is delivered asynchronously)."""
    deadline = time.time() + wait
    while True:
        alive = []
        for p in pids:
            try:
                if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.05)


def _group_children(proc):
    deadline = time.time() + 5
    while time.time() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= 2:
            return [k.pid for k in kids]
        time.sleep(0.05)
    raise AssertionError("the test process tree did not start")


def test_launcher_kills_the_whole_group_on_exception():
    pids = []
    with pytest.raises(RuntimeError):
        with qemu.Qemu(["sh", "-c", "sleep 300 & sleep 300 & wait"]) as vm:
            pids = [vm.pid] + _group_children(vm.proc)
            raise RuntimeError("boom")
    assert not _alive(pids)


def test_launcher_wait_timeout_kills():
    with qemu.Qemu(["sh", "-c", "sleep 300 & wait"]) as vm:
        pids = [vm.pid] + [k.pid for k in psutil.Process(vm.pid).children(recursive=True)]
        with pytest.raises(GuestError, match="within 1 s"):
            vm.wait(timeout=1)
        assert not _alive(pids)


def test_atexit_and_sigterm_kill_the_group(tmp_path):
    """A program that never leaves the block: SIGTERM, then interpreter exit, still kill it."""
    pidfile = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import time, psutil
        from pmemkit.vm import qemu
        vm = qemu.Qemu(["sh", "-c", "sleep 300 & sleep 300 & wait"]).start()
        time.sleep(0.5)
        kids = [vm.pid] + [k.pid for k in psutil.Process(vm.pid).children(recursive=True)]
        open({str(pidfile)!r}, "w").write(" ".join(map(str, kids)))
        time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 20
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.time() < deadline:
        time.sleep(0.1)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) >= 3 and _alive(pids, wait=0) == pids
    proc.terminate()
    assert proc.wait(timeout=20) == 128 + 15
    time.sleep(0.3)
    assert not _alive(pids)


@pytest.mark.parametrize("option", ["nvdimm", "persist"])
def test_a_backing_file_that_cannot_be_created_is_an_error_before_the_build(
        tmp_path, monkeypatch, option):
    # a path under a regular file: os.access() on its "directory" says writable (always, as root)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    opts = ({"nvdimm": "1G", "nvdimm_file": blocker / "pmem.img"} if option == "nvdimm" else
            {"memmap": defaults.MEMMAP_SMALL, "persist": blocker / "ram.img"})
    cfg = VmConfig(share=tmp_path, cache_dir=tmp_path / "cache", accel="tcg", **opts)
    monkeypatch.setattr(qemu, "qemu_binary", lambda: "qemu-system-x86_64")

    def no_build(*args, **kwargs):
        raise AssertionError("the guest image was built before the backing file was checked")
    monkeypatch.setattr(runner, "prepare", no_build)
    with pytest.raises(VmConfigError, match="cannot create"):
        runner.run(cfg, ["true"])
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("call", ["run", "powercut-workload", "powercut-check"])
def test_a_command_given_as_a_string_is_refused_before_anything_starts(tmp_path, monkeypatch,
                                                                       call):
    # a string used to become one argument per character, found out only in a booted guest
    monkeypatch.setattr(qemu, "qemu_binary", lambda: pytest.fail("QEMU was looked for"))
    if call == "run":
        with pytest.raises(VmConfigError, match="argv list"):
            runner.run(VmConfig(share=tmp_path, accel="tcg"), "python3 check.py")
        return
    from pmemkit.vm import powercut
    cfg = VmConfig(share=tmp_path, accel="tcg", nvdimm="1G", nvdimm_file=tmp_path / "pm.img")
    workload, check = ["true"], ["true"]
    if call == "powercut-workload":
        workload = "python3 append.py"
    else:
        check = "python3 check.py"
    with pytest.raises(VmConfigError, match="argv list"):
        powercut.run(cfg, workload, check)
