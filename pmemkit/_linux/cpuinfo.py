"""``/proc/cpuinfo``: the CPU's feature flags, parsed once for the running machine."""

from __future__ import annotations

import re
from functools import cache

from . import join

_FLAGS_RE = re.compile(r"^flags\s*:(.*)$", re.MULTILINE)


def _parse(path):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    m = _FLAGS_RE.search(text)
    return frozenset(m.group(1).split()) if m else None


@cache
def _live_flags():
    return _parse("/proc/cpuinfo")


def cpu_flags(root="/"):
    """The ``flags`` of the first CPU in ``ROOT/proc/cpuinfo`` as a frozenset.

    ``None`` when the file or its flags line is missing; ``OSError`` when it cannot be
    read. The running machine's (``root="/"``) is read once per process.
    """
    if root == "/":
        return _live_flags()
    return _parse(join(root, "/proc/cpuinfo"))
