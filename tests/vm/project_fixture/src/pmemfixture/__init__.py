"""A persistent sorted set of small integers on a pmem file (a user's code, for pmemkit's tests)."""

import struct

from intervaltree import IntervalTree

import pmemkit

_SLOT = struct.Struct("<Q")


def save(path, values, size=4096):
    """Write ``values`` sorted into ``path`` (count first) and persist; return the mapping's
    is_pmem."""
    values = sorted({iv.begin for iv in IntervalTree.from_tuples((v, v + 1) for v in values)})
    with pmemkit.map_file(path, size, create=True, sync="auto") as pm:
        pm.write(0, _SLOT.pack(len(values)))
        for i, v in enumerate(values, 1):
            pm.write(i * _SLOT.size, _SLOT.pack(v))
        pm.persist(0, (len(values) + 1) * _SLOT.size)
        return pm.is_pmem


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = _SLOT.unpack_from(data, 0)
    return [_SLOT.unpack_from(data, i * _SLOT.size)[0] for i in range(1, n + 1)]
