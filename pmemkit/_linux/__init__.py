"""Facts about this Linux machine, read under a root directory.

The ground floor of pmemkit (as psutil's ``_pslinux`` and libpmem2's ``*_linux.c``):
readers of sysfs (:mod:`.sysfs`), the mount table (:mod:`.mounts`), ``statx``
(:mod:`.statx`) and ``/proc/cpuinfo`` (:mod:`.cpuinfo`). Each reader takes the root
of the tree to read (``"/"`` for the running machine, a fixture directory in tests),
returns plain values and raises on what it cannot read; none of them imports
anything above :mod:`pmemkit.errors`, and none builds discovery's ``Problem`` reports:
interpreting the facts is the job of the layers above.
"""

import os


def join(root, path):
    """``path`` (absolute, as on the running machine) inside the tree at ``root``."""
    return os.path.join(root, path.lstrip("/"))
