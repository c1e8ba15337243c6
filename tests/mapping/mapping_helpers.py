"""Helpers shared by the mapping tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pmemkit import cpu, mapping

#: Every flush method this build and CPU can run, plus the pure-Python msync path.
CPU_METHODS = [m for m in cpu.available_methods() if m != "msync"]
KINDS = ["msync", "msync-python"] + CPU_METHODS


def disable_native(monkeypatch):
    """Make pmemkit behave as if the C extension had not been built."""
    monkeypatch.setattr(mapping, "_native", None)
    monkeypatch.setattr(cpu, "native", lambda: None)


def expected_method(kind):
    return "msync" if kind.startswith("msync") else kind


class Snapshot:
    """What a file looks like: existence, size, content hash, mode, mtime."""

    def __init__(self, path):
        self.path = Path(path)
        self.state = self._take()

    def _take(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if not os.path.isfile(self.path):
            return ("not-a-file", st.st_mode, st.st_mtime_ns)
        return (st.st_size, st.st_mode, st.st_mtime_ns,
                hashlib.sha256(self.path.read_bytes()).hexdigest())

    def assert_untouched(self):
        assert self._take() == self.state, f"{self.path} was changed"


def file_bytes(path, offset, length):
    """Read the file itself (not the mapping) - what a crash-free reader sees."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)
