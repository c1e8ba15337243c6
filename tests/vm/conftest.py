"""Shared fixtures of the VM harness tests: no QEMU may outlive a test."""

from __future__ import annotations

import os
import time

import psutil
import pytest

#: A user's project (run in the guest by test_vm_project.py), not tests of pmemkit.
collect_ignore = ["project_fixture"]


def _qemus_of_ours(since):
    """QEMU processes this test process started (children), or that a job of ours launched."""
    me = psutil.Process()
    found = [p for p in me.children(recursive=True) if "qemu" in p.name()]
    for p in psutil.process_iter(["name", "cmdline", "create_time", "ppid"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if ("qemu-system" in (p.info["name"] or "") and p.info["create_time"] >= since - 1
                    and ("pmemkit-vm-" in cmd or "pmemkit-kvm-probe" in cmd)
                    and p.info["ppid"] in (os.getpid(), 1)):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(autouse=True)
def no_qemu_left():
    since = time.time()
    yield
    left = _qemus_of_ours(since)
    for p in left:  # do not leak them into the next test either
        p.kill()
    assert not left, f"QEMU processes outlived the test: {[p.pid for p in left]}"
