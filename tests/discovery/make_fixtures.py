"""Regenerate the fixture sysfs/procfs trees under ``fixtures/``.

Run ``python tests/discovery/make_fixtures.py`` after changing it; the trees are
committed, so the tests read exactly what is in git. The layouts follow the
kernel's (Linux 6.1): devices live under ``sys/devices/...``, and
``sys/bus/nd/devices``, ``sys/class/block``, ``sys/block`` and
``sys/bus/dax/devices`` hold relative symlinks to them. Attribute values use the
kernel's own spellings (namespace ``mode`` reads ``raw``, ``safe`` (sector),
``memory`` (fsdax) or ``dax`` (devdax); ``persistence_domain`` is empty for
memmap regions). Device nodes under ``dev/`` are empty regular files.
"""

from __future__ import annotations

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

GiB = 1 << 30
MiB = 1 << 20

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves
"""

# An older CPU: CLFLUSH only.
CPUINFO_OLD = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM)2 Duo CPU
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht
"""

BASE_MOUNTS = [
    "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0",
    "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0",
    "devtmpfs /dev devtmpfs rw,nosuid,relatime,size=4012345k,nr_inodes=1003086,mode=755 0 0",
    "/dev/vda1 / ext4 rw,relatime,errors=remount-ro 0 0",
    "tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=806412k,mode=755 0 0",
]

GRUB = """GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
"""


class Tree:
    def __init__(self, name):
        self.root = os.path.join(FIXTURES, name)
        if os.path.exists(self.root):
            shutil.rmtree(self.root)
        os.makedirs(self.root)

    def write(self, rel, text):
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text if text.endswith("\n") or text == "" else text + "\n")

    def attrs(self, rel, **values):
        for key, value in values.items():
            self.write(f"{rel}/{key.replace('__', '/')}", str(value))

    def link(self, rel, target_rel):
        """Symlink ``rel`` -> ``target_rel`` (both relative to the tree root), relatively."""
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        target = os.path.relpath(os.path.join(self.root, target_rel), os.path.dirname(path))
        os.symlink(target, path)

    def proc(self, cmdline, mounts=(), ram=8 * GiB, cpuinfo=CPUINFO, kernel="6.1.0-27-amd64",
             grub=True):
        self.write("proc/cmdline", cmdline)
        self.write("proc/mounts", "\n".join(BASE_MOUNTS + list(mounts)))
        self.write("proc/meminfo", f"MemTotal:       {ram // 1024} kB\n"
                                   f"MemFree:        {ram // 2048} kB\n")
        self.write("proc/cpuinfo", cpuinfo)
        self.write("proc/sys/kernel/osrelease", kernel)
        if grub:
            self.write("etc/default/grub", GRUB)

    def bus(self, path, provider):
        self.attrs(path, provider=provider, devtype="nvdimm_bus", wait_probe="1")
        name = os.path.basename(path)
        self.link(f"sys/bus/nd/devices/{name}", path)

    def region(self, bus, name, size, start, domain, deep_flush=None, mappings=0):
        path = f"{bus}/{name}"
        idx = name[len("region"):]
        values = dict(size=size, resource=hex(start), persistence_domain=domain,
                      devtype="nd_pmem", nstype="4" if mappings == 0 else "5",
                      mappings=mappings, read_only="0", align=hex(16 * MiB), numa_node="0",
                      available_size="0", init_namespaces="1/1",
                      namespace_seed=f"namespace{idx}.0" if mappings == 0 else f"namespace{idx}.1",
                      pfn_seed=f"pfn{idx}.0", btt_seed=f"btt{idx}.0", dax_seed=f"dax{idx}.0",
                      modalias="nd:t2")
        if deep_flush is not None:
            values["deep_flush"] = deep_flush
        self.attrs(path, **values)
        self.link(f"sys/bus/nd/devices/{name}", path)
        return path

    def namespace(self, region_path, name, mode, size, start, devtype, holder=""):
        path = f"{region_path}/{name}"
        self.attrs(path, mode=mode, size=size, resource=hex(start), devtype=devtype,
                   nstype="4" if devtype == "nd_namespace_io" else "5", holder=holder,
                   numa_node="0", force_raw="0", modalias="nd:t4" if devtype == "nd_namespace_io" else "nd:t5")
        self.link(f"sys/bus/nd/devices/{name}", path)
        return path

    def claim(self, region_path, name, namespace="", **extra):
        path = f"{region_path}/{name}"
        kind = name.rstrip("0123456789.")
        self.attrs(path, namespace=namespace, devtype=f"nd_{kind}", **extra)
        self.link(f"sys/bus/nd/devices/{name}", path)
        return path

    def blockdev(self, parent_path, name, size, dax):
        path = f"{parent_path}/block/{name}"
        self.attrs(path, size=size // 512, ro="0", removable="0",
                   dev="259:0", queue__dax=dax, queue__logical_block_size="512")
        self.link(f"sys/class/block/{name}", path)
        self.link(f"sys/block/{name}", path)
        self.write(f"dev/{name}", "")
        return path

    def daxdev(self, parent_path, name, size):
        path = f"{parent_path}/{name}"
        self.attrs(path, size=size, align=str(2 * MiB), target_node="0", dev="252:0",
                   resource=hex(0x240000000), numa_node="0")
        self.link(f"sys/bus/dax/devices/{name}", path)
        self.write(f"dev/{name}", "")
        return path


E820 = "sys/devices/platform/e820_pmem/ndbus0"
NFIT = "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0012:00/ndbus0"


def memmap_raw():
    """memmap=512M!1G at boot: one e820 region, its label-less namespace in raw mode."""
    t = Tree("memmap-raw")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=UUID=3a1e6c4f-8d2b-4c1e-9f0a-1b2c3d4e5f60 "
           "ro console=ttyS0 memmap=512M!1G quiet", ram=4 * GiB)
    t.bus(E820, "e820_pmem")
    r = t.region(E820, "region0", 512 * MiB, 1 * GiB, "")
    ns = t.namespace(r, "namespace0.0", "raw", 512 * MiB, 1 * GiB, "nd_namespace_io")
    t.blockdev(ns, "pmem0", 512 * MiB, 0)
    t.claim(r, "pfn0.0", mode="none", align=str(2 * MiB))
    t.claim(r, "btt0.0", sector_size="4096")
    t.claim(r, "dax0.0", mode="none", align=str(2 * MiB))


def memmap_fsdax_mounted():
    """Two memmap ranges in fsdax mode: ext4 mounted dax=always, xfs dax=inode; one bad memmap."""
    t = Tree("memmap-fsdax-mounted")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro "
           "memmap=2G!4G memmap=2G!6G memmap=1Q!9G console=ttyS0",
           mounts=["/dev/pmem0 /mnt/pmem-ext4 ext4 rw,relatime,dax=always 0 0",
                   "/dev/pmem1 /mnt/pmem-xfs xfs rw,relatime,attr2,dax=inode,inode64,logbufs=8,"
                   "logbsize=32k,noquota 0 0"],
           ram=16 * GiB)
    t.bus(E820, "e820_pmem")
    for i, start in enumerate((4 * GiB, 6 * GiB)):
        r = t.region(E820, f"region{i}", 2 * GiB, start, "")
        ns = t.namespace(r, f"namespace{i}.0", "memory", 2 * GiB, start, "nd_namespace_io",
                         holder=f"pfn{i}.1")
        pfn = t.claim(r, f"pfn{i}.1", namespace=f"namespace{i}.0", mode="ram",
                      align=str(2 * MiB), uuid="b8b4d1b6-6f7c-4a1f-9c39-8cc0f0c2e5a1")
        t.blockdev(pfn, f"pmem{i}", 2 * GiB - 2 * MiB, 1)
        t.claim(r, f"pfn{i}.0", mode="none")
        t.claim(r, f"btt{i}.0", sector_size="4096")
        t.claim(r, f"dax{i}.0", mode="none")


def nvdimm_fsdax():
    """A QEMU/ACPI NVDIMM with labels, namespace in fsdax mode, not mounted."""
    t = Tree("nvdimm-fsdax")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro console=ttyS0",
           ram=8 * GiB)
    t.bus(NFIT, "ACPI.NFIT")
    t.attrs(f"{NFIT}/nmem0", devtype="nvdimm", dev="nmem0", state="idle")
    t.link("sys/bus/nd/devices/nmem0", f"{NFIT}/nmem0")
    size = 1 * GiB - 128 * 1024
    r = t.region(NFIT, "region0", size, 0x240000000, "memory_controller", deep_flush="1",
                 mappings=1)
    t.write(f"{r}/mapping0", f"nmem0,0,{size},0")
    ns = t.namespace(r, "namespace0.0", "memory", size, 0x240000000, "nd_namespace_pmem",
                     holder="pfn0.0")
    t.write(f"{ns}/uuid", "2f5c0e1a-4b3d-4c8e-9a7f-6d5e4c3b2a10")
    pfn = t.claim(r, "pfn0.0", namespace="namespace0.0", mode="pmem", align=str(2 * MiB))
    t.blockdev(pfn, "pmem0", size - 16 * MiB, 1)
    t.namespace(r, "namespace0.1", "raw", 0, 0, "nd_namespace_pmem")   # idle seed
    t.claim(r, "pfn0.1", mode="none")
    t.claim(r, "btt0.0", sector_size="4096")
    t.claim(r, "dax0.0", mode="none")


def nvdimm_sector():
    """An NVDIMM namespace in sector mode (BTT): /dev/pmem0s, mounted ext4 (no DAX possible)."""
    t = Tree("nvdimm-sector")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro console=ttyS0",
           mounts=["/dev/pmem0s /mnt/blk ext4 rw,relatime 0 0"], ram=8 * GiB)
    t.bus(NFIT, "ACPI.NFIT")
    size = 1 * GiB - 128 * 1024
    r = t.region(NFIT, "region0", size, 0x240000000, "memory_controller", deep_flush="1",
                 mappings=1)
    ns = t.namespace(r, "namespace0.0", "safe", size, 0x240000000, "nd_namespace_pmem",
                     holder="btt0.0")
    t.write(f"{ns}/sector_size", "4096")
    btt = t.claim(r, "btt0.0", namespace="namespace0.0", sector_size="4096",
                  uuid="1c9e3b5a-7d2f-4e6a-8b1c-0f9e8d7c6b5a", size=str(size - 8 * MiB))
    t.blockdev(btt, "pmem0s", size - 8 * MiB, 0)
    t.namespace(r, "namespace0.1", "raw", 0, 0, "nd_namespace_pmem")
    t.claim(r, "btt0.1", sector_size="4096")
    t.claim(r, "pfn0.0", mode="none")
    t.claim(r, "dax0.0", mode="none")


def devdax_eadr():
    """Device DAX on an eADR platform (persistence_domain cpu_cache): /dev/dax0.0."""
    t = Tree("devdax")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro", ram=32 * GiB,
           cpuinfo=CPUINFO_OLD)
    t.bus(NFIT, "ACPI.NFIT")
    size = 4 * GiB
    r = t.region(NFIT, "region0", size, 0x240000000, "cpu_cache", deep_flush="1", mappings=1)
    t.namespace(r, "namespace0.0", "dax", size, 0x240000000, "nd_namespace_pmem",
                holder="dax0.0")
    nd_dax = t.claim(r, "dax0.0", namespace="namespace0.0", mode="pmem", align=str(2 * MiB))
    t.daxdev(nd_dax, "dax0.0", size - 32 * MiB)
    t.namespace(r, "namespace0.1", "raw", 0, 0, "nd_namespace_pmem")
    t.claim(r, "dax0.1", mode="none")
    t.claim(r, "pfn0.0", mode="none")
    t.claim(r, "btt0.0", sector_size="4096")


def none_grub():
    """An ordinary Debian machine with GRUB and 24 GiB of RAM: no pmem, no memmap."""
    t = Tree("none")
    t.proc("BOOT_IMAGE=/boot/vmlinuz-6.1.0-27-amd64 root=/dev/vda1 ro quiet", ram=24 * GiB)
    os.makedirs(os.path.join(t.root, "sys/bus/nd/devices"))
    t.write("sys/bus/nd/devices/.gitkeep", "")


def container():
    """A container or microVM: kernel command line set by the host, no boot loader, no pmem."""
    t = Tree("container")
    t.proc("console=ttyS0 reboot=k panic=1 rdinit=/init -- --some-init-arg memmap=1G!1G",
           ram=24 * GiB, grub=False, kernel="6.8.0-fc")


def malformed():
    """Damaged sysfs: non-numeric sizes, an unknown mode, a binary attribute."""
    t = Tree("malformed")
    t.proc("root=/dev/vda1 memmap=512M!1G", ram=4 * GiB)
    t.bus(E820, "e820_pmem")
    r = t.region(E820, "region0", "lots", 1 * GiB, "")
    ns = t.namespace(r, "namespace0.0", "quantum", 512 * MiB, 1 * GiB, "nd_namespace_io")
    with open(os.path.join(t.root, ns, "holder"), "wb") as f:
        f.write(b"\xff\xfe\x00")
    t.blockdev(ns, "pmem0", 512 * MiB, 0)
    with open(os.path.join(t.root, ns, "block/pmem0/size"), "w") as f:
        f.write("0xZZ\n")


def main():
    for make in (memmap_raw, memmap_fsdax_mounted, nvdimm_fsdax, nvdimm_sector, devdax_eadr,
                 none_grub, container, malformed):
        make()
    print(f"fixtures written under {FIXTURES}", file=sys.stderr)


if __name__ == "__main__":
    main()
