"""Kernel interop (Linux nd_btt in the VM harness guest): the kernel is the oracle.

Three guest boots on a QEMU NVDIMM whose backing file pmemkit reads and writes
while the guest is down:

1. label-less namespace, BTT 1.1 (info block at 4 KiB) made by pmemkit: the kernel
   attaches it as /dev/pmem0s, reads pmemkit's sectors, writes its own; pmemkit
   reads the kernel's sectors back from the backing file.
2. labelled namespace: ndctl creates a BTT 2.0 (info block at 0); the kernel writes
   sectors; pmemkit finds the BTT in the backing file and reads them.
3. the same labelled namespace after pmemkit wrote sectors into it: the kernel
   reads them identically.
"""

import hashlib
import inspect
import json

import pytest

from pmemkit.btt import Btt, locate

pytestmark = pytest.mark.vm

NVDIMM = 64 << 20

GUEST = r'''
import hashlib, json, os, subprocess, sys, time
spec = json.loads(sys.argv[1])
for argv in spec.get("setup", []):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(argv)} failed: {r.stdout} {r.stderr}")
for _ in range(200):
    if os.path.exists("/dev/pmem0s"):
        break
    time.sleep(0.1)
fd = os.open("/dev/pmem0s", os.O_RDWR)
n = int(open("/sys/block/pmem0s/queue/logical_block_size").read())
res = {"lbasize": n, "nblocks": os.lseek(fd, 0, 2) // n, "mismatch": []}
for lba, tag in spec["verify"]:
    got = os.pread(fd, n, lba * n)
    want = sector(tag, lba, n) if tag else bytes(n)
    if got != want:
        res["mismatch"].append(lba)
for lba, tag in spec["write"]:
    os.pwrite(fd, sector(tag, lba, n), lba * n)
os.fsync(fd)
os.close(fd)
print("RESULT " + json.dumps(res))
'''


def sector(tag, lba, n):
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{tag}:{lba}:{i}".encode()).digest()
        i += 1
    return out[:n]


#: The guest script gets the same sector() as the host, so both sides derive identical data.
GUEST_WITH_SECTOR = GUEST.replace("fd = os.open(", inspect.getsource(sector) + "fd = os.open(", 1)


# The region of a labelled 64 MiB NVDIMM is 64 MiB - 128 KiB, not a multiple of the
# region's 16 MiB alignment, so the namespace is created here with an aligned size;
# v1.2 labels make ndctl write a BTT 2.0 (v1.1 labels give 1.1).
LABELLED_SETUP = [["ndctl", "disable-region", "all"],
                  ["ndctl", "init-labels", "-f", "-V", "1.2", "all"],
                  ["ndctl", "enable-region", "all"],
                  ["ndctl", "create-namespace", "-r", "region0", "--mode=sector", "-s", "48M"]]


def boot(nv, labels, verify, write, mode="sector", setup=()):
    from pmemkit import vm

    cfg = vm.VmConfig(nvdimm=NVDIMM, nvdimm_file=nv, labels=labels, mode=mode, fs=(),
                      share=False)
    spec = json.dumps({"verify": verify, "write": write, "setup": list(setup)})
    res = vm.run(cfg, ["python3", "-c", GUEST_WITH_SECTOR, spec])
    assert res.returncode == 0, (res.output, res.error_output, res.setup_log, res.console[-3000:])
    line = [ln for ln in res.output.splitlines() if ln.startswith("RESULT ")]
    assert line, res.output
    return json.loads(line[0][7:]), res


def test_labelless_btt_1_1_made_by_pmemkit_is_attached_by_the_kernel(tmp_path):
    nv = tmp_path / "nv.img"
    with open(nv, "wb") as f:
        f.truncate(NVDIMM)
    # label-less namespace = the whole NVDIMM; Linux reads a 1.1 BTT at 4 KiB into it
    b = Btt.create(str(nv), lbasize=4096, version="1.1", offset=4096, size=NVDIMM - 4096)
    nlba = b.nlba
    ours = [(0, "py"), (7, "py"), (nlba - 1, "py")]
    for lba, tag in ours:
        b.write(lba, sector(tag, lba, 4096))
    b.set_zero(7)
    b.close()
    theirs = [(3, "kernel"), (7, "kernel"), (100, "kernel")]
    res, _ = boot(nv, False, [(0, "py"), (7, None), (nlba - 1, "py"), (5, None)], theirs)
    assert res["lbasize"] == 4096 and res["nblocks"] == nlba
    assert res["mismatch"] == []
    assert locate(str(nv)) == [4096]
    b = Btt.open(str(nv), 4096)
    assert b.version == "1.1"
    for lba, tag in theirs + [(0, "py"), (nlba - 1, "py")]:
        assert b.read(lba) == sector(tag, lba, 4096), lba
    assert b.check() == []
    b.close()


def test_labelled_btt_2_0_both_ways(tmp_path):
    nv = tmp_path / "nv-labels.img"
    theirs = [(0, "k2"), (1, "k2"), (500, "k2")]
    # the harness leaves the label-less raw view alone; the guest labels the DIMM and makes
    # a sector namespace itself (ndctl writes a BTT 2.0)
    res, _ = boot(nv, True, [], theirs, mode="raw", setup=LABELLED_SETUP)
    found = locate(str(nv), limit=NVDIMM)
    assert found, "no BTT info block in the backing file"
    b = Btt.open(str(nv), found[0])
    assert b.version == "2.0" and b.lbasize == res["lbasize"]
    assert b.nlba == res["nblocks"]
    for lba, tag in theirs:
        assert b.read(lba) == sector(tag, lba, b.lbasize), lba
    assert b.read(2) == bytes(b.lbasize)
    assert b.check() == []
    ours = [(1, "p2"), (2, "p2"), (b.nlba - 1, "p2")]
    for lba, tag in ours:
        b.write(lba, sector(tag, lba, b.lbasize))
    b.close()
    res, _ = boot(nv, True, ours + [(0, "k2"), (500, "k2")], [])
    assert res["mismatch"] == []
