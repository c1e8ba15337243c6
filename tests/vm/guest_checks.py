"""Run INSIDE a pmemkit guest (tests/vm/test_vm_boot.py): report what the guest offers as JSON.

Prints one JSON object on stdout, a marker on stderr, and exits with the status given by
``--exit N`` (to check that the status comes back). Checks made here are facts, not asserts:
the host-side test asserts on them.
"""

import json
import mmap
import os
import sys

MAP_SHARED_VALIDATE = 0x03
MAP_SYNC = 0x80000


def map_sync_works(directory):
    path = os.path.join(directory, "map-sync-probe")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 4 * 4096)
        m = mmap.mmap(fd, 4 * 4096, flags=MAP_SHARED_VALIDATE | MAP_SYNC,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
        m[:5] = b"hello"
        m.close()
        return "ok"
    except OSError as exc:
        return f"errno {exc.errno}"
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    exit_status = int(sys.argv[sys.argv.index("--exit") + 1]) if "--exit" in sys.argv else 0
    import pmemkit
    from pmemkit import defaults

    dax_dirs = [d for d in os.environ.get(defaults.DAX_DIRS_ENV, "").split(os.pathsep) if d]
    mounts = {}
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts = line.split()[:4]
            mounts[mnt] = {"dev": dev, "fstype": fstype, "opts": opts.split(",")}
    report = {
        "devices": sorted(n for n in os.listdir("/dev") if n.startswith("pmem")),
        "pmem0_bytes": int(open("/sys/block/pmem0/size").read()) * 512
        if os.path.exists("/sys/block/pmem0/size") else None,
        "pmem0_dax": open("/sys/block/pmem0/queue/dax").read().strip()
        if os.path.exists("/sys/block/pmem0/queue/dax") else None,
        "dax_dirs": dax_dirs,
        "mounts": {d: mounts.get(d) for d in defaults.MOUNT_POINTS.values()},
        "map_sync": {d: map_sync_works(d) for d in dax_dirs},
        "pmemkit_file": pmemkit.__file__,
        "python": sys.version.split()[0],
        "cwd": os.getcwd(),
        "require_dax": os.environ.get(defaults.REQUIRE_DAX_ENV),
    }
    is_pmem = {}
    for d in dax_dirs:
        m = pmemkit.map_file(os.path.join(d, "pmemkit-probe"), 1 << 20, create=True, sync="require")
        m.write(0, b"persist me")
        m.persist(0, 10)
        is_pmem[d] = {"is_pmem": m.is_pmem, "flush_method": m.flush_method}
        m.close()
    report["map_file"] = is_pmem
    import numpy
    report["numpy"] = numpy.__version__
    print(json.dumps(report))
    sys.stdout.flush()
    print("guest-checks: stderr marker", file=sys.stderr)
    sys.exit(exit_status)


if __name__ == "__main__":
    main()
