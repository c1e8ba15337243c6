"""Shared helpers of the sandbox tests: running ansible-playbook and reading its recap."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
PLAYBOOK = ANSIBLE_DIR / "site.yml"
BIN = Path(sys.executable).parent


def tool(name):
    """A tool from this Python's environment (the test extra installs ansible-core and
    ansible-lint)."""
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' "
                    "(scripts/bootstrap.sh does)")
    return found


def ansible_env(tmp_path):
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_STDOUT_CALLBACK": "default",
    })
    return env


def write_inventory(path, hosts):
    """A YAML inventory (JSON is YAML) with ``hosts`` (name -> vars) in group ``pmem``."""
    Path(path).write_text(json.dumps({"pmem": {"hosts": hosts}}, indent=1))
    return Path(path)


def run_playbook(tmp_path, inventory, extra_vars=None, args=(), timeout=2700):
    argv = [tool("ansible-playbook"), "-i", str(inventory), str(PLAYBOOK), *args]
    if extra_vars:
        argv += ["--extra-vars", json.dumps(extra_vars)]
    proc = subprocess.run(argv, cwd=ANSIBLE_DIR, env=ansible_env(tmp_path),
                          stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    return proc


def source_snapshot(dest):
    """A copy of the pmemkit source tree for the role to build its wheel from: both playbook
    runs of a test see the same source, whatever changes in the working tree meanwhile."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "site", "__pycache__",
                                    "*.egg-info",
                                    ".pytest_cache", ".hypothesis", ".vagrant", "tests",
                                    "benchmarks")
    return Path(shutil.copytree(REPO, dest, ignore=ignore))


def recap(output, host):
    """``{'ok': n, 'changed': n, 'failed': n, ...}`` from the PLAY RECAP line of ``host``."""
    m = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", output, re.MULTILINE)
    assert m, f"no PLAY RECAP line for {host}:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
