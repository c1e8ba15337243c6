"""ctypes access to Debian's libpmemblk.so.1 (the oracle for interop tests and benchmarks)."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess


def load():
    """The libpmemblk library, or ``None`` when it is not installed."""
    for name in ("libpmemblk.so.1", ctypes.util.find_library("pmemblk")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        vp, sz, ll = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_longlong
        lib.pmemblk_open.restype = vp
        lib.pmemblk_open.argtypes = [ctypes.c_char_p, sz]
        lib.pmemblk_create.restype = vp
        lib.pmemblk_create.argtypes = [ctypes.c_char_p, sz, sz, ctypes.c_uint]
        lib.pmemblk_close.argtypes = [vp]
        lib.pmemblk_nblock.restype = sz
        lib.pmemblk_nblock.argtypes = [vp]
        lib.pmemblk_bsize.restype = sz
        lib.pmemblk_bsize.argtypes = [vp]
        for fn in ("pmemblk_read", "pmemblk_write"):
            getattr(lib, fn).argtypes = [vp, vp, ll]
        for fn in ("pmemblk_set_zero", "pmemblk_set_error"):
            getattr(lib, fn).argtypes = [vp, ll]
        lib.pmemblk_errormsg.restype = ctypes.c_char_p
        return lib
    return None


class Pool:
    """A libpmemblk pool opened through the C library."""

    def __init__(self, lib, path, bsize):
        self.lib = lib
        self.bsize = bsize
        self.p = lib.pmemblk_open(str(path).encode(), bsize)
        if not self.p:
            raise OSError(ctypes.get_errno(), f"pmemblk_open({path}): "
                          f"{lib.pmemblk_errormsg().decode()}")
        self.nblock = lib.pmemblk_nblock(self.p)

    def read(self, lba):
        buf = ctypes.create_string_buffer(self.bsize)
        if self.lib.pmemblk_read(self.p, buf, lba) != 0:
            raise OSError(ctypes.get_errno(), f"pmemblk_read({lba}) failed")
        return buf.raw

    def write(self, lba, data):
        buf = ctypes.create_string_buffer(bytes(data), self.bsize)
        if self.lib.pmemblk_write(self.p, buf, lba) != 0:
            raise OSError(ctypes.get_errno(), f"pmemblk_write({lba}) failed")

    def set_zero(self, lba):
        assert self.lib.pmemblk_set_zero(self.p, lba) == 0

    def set_error(self, lba):
        assert self.lib.pmemblk_set_error(self.p, lba) == 0

    def close(self):
        if self.p:
            self.lib.pmemblk_close(self.p)
            self.p = None


def run_pmempool(*args):
    """Run Debian's pmempool with ``args``; the CompletedProcess (text output)."""
    return subprocess.run(["pmempool", *map(str, args)], capture_output=True, text=True)
