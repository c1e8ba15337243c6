"""The playbook parses, and the role passes ansible-lint's production profile."""

import subprocess

from sandbox_util import ANSIBLE_DIR, PLAYBOOK, ansible_env, tool


def test_syntax_check(tmp_path):
    proc = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i",
                           "inventory.example.ini",
                           str(PLAYBOOK)], cwd=ANSIBLE_DIR, env=ansible_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile(tmp_path):
    env = ansible_env(tmp_path)
    env["HOME"] = str(tmp_path)  # ansible-lint caches under ~/.cache; keep the run self-contained
    proc = subprocess.run([tool("ansible-lint"), "--offline", "--profile", "production",
                           "--nocolor",
                           "site.yml", "roles/pmem"], cwd=ANSIBLE_DIR, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Profile 'production' was required, and it passed" in out, out
