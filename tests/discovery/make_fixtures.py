"""Regenerate the fixture sysfs/procfs trees under ``fixtures/``.

Run ``python tests/discovery/make_fixtures.py`` after changing it; the trees are
committed, so the tests read exactly what is in git.

Most trees are converted from ``dumps/*.dump``, captured from a real Linux 6.1
guest by ``capture/capture.sh`` (memmap= pmem and a QEMU NVDIMM, walked through
the namespace modes): devices under ``sys/devices/...``, relative symlinks in
``sys/bus/nd/devices``, ``sys/class/block``, ``sys/block`` and
``sys/bus/dax/devices``, the kernel's own attribute spellings (namespace ``mode``
reads ``raw``, ``safe`` (sector), ``memory`` (fsdax) or ``dax`` (devdax); regions
without a persistence flag have no ``persistence_domain`` file). Device nodes
under ``dev/`` are empty regular files. ``none``, ``container`` and
``malformed`` are written by hand below.
"""

from __future__ import annotations

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

GiB = 1 << 30
MiB = 1 << 20

CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse "
    "sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc "
    "cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes "
    "xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms "
    "invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw "
    "avx512vl xsaveopt xsavec xgetbv1 xsaves")
CPUINFO = ("processor\t: 0\n"
           "vendor_id\t: GenuineIntel\n"
           "model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\n"
           f"flags\t\t: {CPU_FLAGS}\n")

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
                   numa_node="0", force_raw="0",
                   modalias="nd:t4" if devtype == "nd_namespace_io" else "nd:t5")
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


E820 = "sys/devices/platform/e820_pmem/ndbus0"

#: Captured fixtures: dump file -> states in it (each becomes a tree of the same name).
DUMPS = os.path.join(HERE, "dumps")


def from_dumps():
    """Trees from the real kernel: capture/capture.sh booted Linux 6.1 under QEMU with
    memmap= pmem and a QEMU NVDIMM and dumped every state to ``dumps/``."""
    names = []
    for dump in sorted(os.listdir(DUMPS)):
        if not dump.endswith(".dump"):
            continue
        tree = None
        with open(os.path.join(DUMPS, dump)) as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith("=== STATE "):
                    tree = Tree(line[len("=== STATE "):])
                    names.append(os.path.basename(tree.root))
                elif line.startswith("=== END"):
                    tree = None
                elif tree is None:
                    continue
                elif line.startswith("LINK "):
                    path, target = line[len("LINK "):].split(" -> ", 1)
                    link = os.path.join(tree.root, path.lstrip("/"))
                    os.makedirs(os.path.dirname(link), exist_ok=True)
                    if not os.path.lexists(link):
                        os.symlink(target, link)
                elif line.startswith(("ATTR ", "FILE ")):
                    path, value = line[5:].split("=", 1)
                    text = value.replace("|", "\n")
                    full = os.path.join(tree.root, path.lstrip("/"))
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    with open(full, "w") as out:
                        out.write(text)
                elif line.startswith("DEV "):
                    tree.write(line[len("DEV "):].lstrip("/"), "")
    return names


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
    t.bus(E820, "e820")
    r = t.region(E820, "region0", "lots", 1 * GiB, "")
    ns = t.namespace(r, "namespace0.0", "quantum", 512 * MiB, 1 * GiB, "nd_namespace_io")
    with open(os.path.join(t.root, ns, "holder"), "wb") as f:
        f.write(b"\xff\xfe\x00")
    t.blockdev(ns, "pmem0", 512 * MiB, 0)
    with open(os.path.join(t.root, ns, "block/pmem0/size"), "w") as f:
        f.write("0xZZ\n")


def main():
    from_dumps()
    for make in (none_grub, container, malformed):
        make()
    print(f"fixtures written under {FIXTURES}", file=sys.stderr)


if __name__ == "__main__":
    main()
