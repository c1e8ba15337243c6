"""sysfs readers: nd regions' persistence domain, device-DAX size and deep flush."""

from __future__ import annotations

import glob
import os
import re

from . import join

_REGION_RE = re.compile(r"region\d+")


def read_attr(path):
    """The text of a sysfs attribute, stripped; ``None`` when it does not exist.

    Raises ``OSError`` when it exists but cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None


def has_eadr(root="/"):
    """True when every nd region's ``persistence_domain`` reads ``cpu_cache`` (eADR).

    False when there are no regions or one cannot be read. A glob and a few small reads.
    """
    files = glob.glob(join(root, "/sys/bus/nd/devices/region*/persistence_domain"))
    if not files:
        return False
    try:
        return all(read_attr(path) == "cpu_cache" for path in files)
    except OSError:
        return False


def char_device_dir(st, root="/"):
    """``/sys/dev/char/MAJOR:MINOR`` of the character device ``st`` (an ``os.stat`` result)."""
    return join(root, f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")


def devdax_size(st, root="/"):
    """Size in bytes of the device-DAX device ``st``.

    Raises ``OSError`` (or ``ValueError``) when the device has no readable size:
    it is a character device but not device DAX.
    """
    text = read_attr(os.path.join(char_device_dir(st, root), "size"))
    if text is None:
        raise FileNotFoundError(f"no size attribute in {char_device_dir(st, root)}")
    return int(text)


def devdax_deep_flush_file(st, root="/"):
    """``.../regionN/deep_flush`` of the nd region holding device-DAX ``st``, or ``None``."""
    real = os.path.realpath(char_device_dir(st, root))
    while real not in ("/", ""):
        if _REGION_RE.fullmatch(os.path.basename(real)):
            candidate = os.path.join(real, "deep_flush")
            return candidate if os.path.exists(candidate) else None
        real = os.path.dirname(real)
    return None
