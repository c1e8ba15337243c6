"""statx(2) through libc's ``syscall``: the ``STATX_ATTR_DAX`` attribute of a file."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct

from ..errors import DiscoveryError

#: statx(2): STATX_ATTR_DAX is reported in stx_attributes when stx_attributes_mask has it.
STATX_ATTR_DAX = 0x00200000
_STATX_BASIC_STATS = 0x000007FF
_AT_FDCWD = -100
_STATX_NR = {"x86_64": 332, "aarch64": 291, "riscv64": 291, "ppc64le": 383, "ppc64": 383,
             "s390x": 379, "i686": 383, "i386": 383, "armv7l": 397}
_libc = None


def statx_attributes(path):
    """``(stx_attributes, stx_attributes_mask)`` of ``path``, or ``None`` without statx.

    Raises :class:`~pmemkit.errors.DiscoveryError` when ``path`` cannot be examined.
    """
    global _libc
    nr = _STATX_NR.get(platform.machine())
    if nr is None:
        return None
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    buf = ctypes.create_string_buffer(256)
    syscall = _libc.syscall
    syscall.restype = ctypes.c_long
    rc = syscall(ctypes.c_long(nr), ctypes.c_int(_AT_FDCWD), ctypes.c_char_p(os.fsencode(path)),
                 ctypes.c_int(0), ctypes.c_uint(_STATX_BASIC_STATS), buf)
    if rc != 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            return None
        raise DiscoveryError(f"cannot statx {os.fspath(path)!r}: {os.strerror(err)}",
                             path=os.fspath(path))
    attributes, = struct.unpack_from("=Q", buf.raw, 8)
    attributes_mask, = struct.unpack_from("=Q", buf.raw, 56)
    return attributes, attributes_mask


def is_dax(path):
    """Whether the kernel accesses ``path`` with DAX (statx ``STATX_ATTR_DAX``).

    Returns ``None`` where the kernel cannot tell (no statx, or a kernel before
    5.8 that does not report the attribute). Raises :class:`~pmemkit.errors.DiscoveryError`
    if ``path`` cannot be examined (missing, no permission).
    """
    raw = statx_attributes(path)
    if raw is None:
        return None
    attributes, mask = raw
    if not mask & STATX_ATTR_DAX:
        return None
    return bool(attributes & STATX_ATTR_DAX)
