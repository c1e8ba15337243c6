"""The mount table: ``/proc/self/mounts`` parsed once per call, and the mount holding a path."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..errors import DiscoveryError
from . import join


class MountEntry(NamedTuple):
    """One line of the mount table (compares equal to the plain 4-tuple)."""

    device: str
    mountpoint: str
    fstype: str
    options: str


_ESCAPE_RE = re.compile(r"\\([0-7]{3})")


def _unescape(text):
    # /proc/mounts writes space, tab, newline and backslash as \040 \011 \012 \134.
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), text)


def read_mounts(root="/"):
    """Every mount in ``ROOT/proc/self/mounts`` (or ``proc/mounts``), in table order.

    An empty list when neither file exists (a fixture tree without mounts);
    :class:`~pmemkit.errors.DiscoveryError` when one exists but cannot be read.
    """
    for rel in ("/proc/self/mounts", "/proc/mounts"):
        path = join(root, rel)
        if os.path.exists(path):
            break
    else:
        return []
    try:
        with open(path) as f:
            text = f.read()
    except OSError as exc:
        raise DiscoveryError(f"cannot read {path}: {exc.strerror}", path=path) from None
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        out.append(MountEntry(_unescape(parts[0]), _unescape(parts[1]), parts[2], parts[3]))
    return out


def mount_of(path, root="/"):
    """The :class:`MountEntry` of the mount holding ``path`` (the longest mount point), or None."""
    real = os.path.realpath(path)
    best = None
    for entry in read_mounts(root):
        mp = entry.mountpoint
        if (real == mp or real.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) >= len(best.mountpoint)):
            best = entry
    return best
