"""Run INSIDE a pmemkit guest (tests/vm/test_vm_powercut.py): an append-only log on a DAX file.

``append PATH``: open (or create) the log and append records forever, each one persisted
before the 8-byte count that commits it, printing ``committed N`` after each commit.
``check PATH``: verify the header and every committed record; print ``found N``; exit 1 when
anything is wrong. Written against pmemkit's public API only.
"""

import os
import struct
import sys
import zlib

import pmemkit

MAGIC = b"PCUTLOG1"
SIZE = 8 << 20
RECORD = 64
FIRST = 64


def record(seq):
    body = struct.pack("<QQ", seq, zlib.crc32(struct.pack("<Q", seq)))
    return body + bytes(RECORD - len(body))


def append(path):
    fresh = not os.path.exists(path)
    m = pmemkit.map_file(path, SIZE, create=fresh, sync="require")
    if fresh:
        m.write(0, MAGIC + bytes(8))
        m.persist(0, 16)
        for p in (path, os.path.dirname(path)):     # the file itself must survive a cut
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
    count, = struct.unpack("<Q", m.read(8, 8))
    print(f"start {count}", flush=True)
    while FIRST + (count + 1) * RECORD <= SIZE:
        at = FIRST + count * RECORD
        m.write(at, record(count + 1))
        m.persist(at, RECORD)
        count += 1
        m.write(8, struct.pack("<Q", count))        # the commit: one aligned 8-byte store
        m.persist(8, 8)
        print(f"committed {count}", flush=True)
    m.close()


def check(path):
    if not os.path.exists(path):
        print("found 0 (no log)")
        return 0
    m = pmemkit.map_file(path, sync="require")
    head = m.read(0, 16)
    if head[:8] != MAGIC:
        print(f"bad magic {head[:8]!r}")
        return 1
    count, = struct.unpack("<Q", head[8:16])
    for i in range(count):
        if m.read(FIRST + i * RECORD, RECORD) != record(i + 1):
            print(f"record {i + 1} of {count} is damaged")
            return 1
    print(f"found {count}")
    m.close()
    return 0


if __name__ == "__main__":
    action, target = sys.argv[1], sys.argv[2]
    sys.exit(append(target) if action == "append" else check(target))
