"""SSH to a guest booted from a disk image: a key per run, a free loopback port, waiting for sshd.

The guest's sshd is reached through QEMU user networking with ``hostfwd`` bound to 127.0.0.1
only (:func:`pmemkit.vm.qemu.net_args`); the key is handed to the guest through fw_cfg
(:func:`pmemkit.sandbox.disk.seed_args`).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import GuestError
from ..vm import cache

#: Options for a throwaway guest: its host key is new every build, so it is neither checked nor
#: stored.
SSH_OPTIONS = (
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
    "-o", "ServerAliveInterval=15",
    "-o", "IdentitiesOnly=yes",
)


def generate_key(directory):
    """A new ed25519 key pair (no passphrase) in ``directory``: returns the private key's path."""
    path = Path(directory) / "id_ed25519"
    cache.run([cache.need_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
               "pmemkit-sandbox", "-f", path],
              "ssh-keygen")
    return path


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach a guest's sshd."""

    port: int
    key: Path
    user: str = "root"
    host: str = "127.0.0.1"

    def argv(self, *command):
        """``ssh`` argv running ``command`` (an argv, quoted for the remote shell) on the guest."""
        base = [cache.need_tool("ssh"), *SSH_OPTIONS, "-i", str(self.key), "-p", str(self.port),
                f"{self.user}@{self.host}"]
        return base + ([shlex.join(str(c) for c in command)] if command else [])

    def run(self, *command, check=True, timeout=300):
        """Run ``command`` on the guest; :class:`GuestError` on failure when ``check``."""
        proc = subprocess.run(self.argv(*command), stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise GuestError(f"{shlex.join(map(str, command))} failed on the guest (exit "
                             f"{proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def ansible_host_vars(self):
        """Inventory variables for Ansible to reach this guest the same way."""
        return {
            "ansible_host": self.host, "ansible_port": self.port, "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o "
                                       "UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o "
                                       "ServerAliveInterval=10 -o ServerAliveCountMax=3",
        }

    def wait(self, timeout, alive=None, log=None):
        """Wait until sshd answers (a command runs). ``alive()`` false, or the timeout, raises
        :class:`GuestError` with the tail of ``log`` (the guest's serial console)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise GuestError("the guest stopped before sshd answered" + _tail(log))
            try:
                if self.run("true", check=False, timeout=30).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(2)
        raise GuestError(f"sshd in the guest did not answer within {timeout:.0f} s" + _tail(log))


def _tail(log, lines=30):
    if not log or not Path(log).exists():
        return ""
    text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    return "; serial console:\n" + "\n".join(text)
