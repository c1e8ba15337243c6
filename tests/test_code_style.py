"""The code's habits, checked: ruff with the configuration in pyproject.toml, and no backslash
line continuations (ruff has no rule for them)."""

import io
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The trees the lint covers (the same list as the docs' contributing section).
LINTED = ("pmemkit", "tests", "benchmarks", "scripts")


def _ruff():
    """``ruff`` from this Python's environment (the test extra installs it), else from PATH."""
    here = Path(sys.executable).parent / "ruff"
    return str(here) if here.exists() else shutil.which("ruff")


def python_files():
    return sorted(p for d in LINTED for p in (ROOT / d).rglob("*.py")
                  if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def backslash_continuations(source):
    """Line numbers that end in a backslash continuing the statement (not inside a string)."""
    inside_strings = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.start[0] != tok.end[0]:
            inside_strings.update(range(tok.start[0], tok.end[0]))
    found = []
    for number, line in enumerate(source.splitlines(), 1):
        code = line.rstrip()
        if (code.endswith("\\") and number not in inside_strings
                and not code.lstrip().startswith("#")):
            found.append(number)
    return found


def test_ruff_is_clean():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed: pip install -e '.[test]' installs it")
    proc = subprocess.run([ruff, "check", "--no-cache", *LINTED], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_backslash_line_continuations():
    found = [f"{path.relative_to(ROOT)}:{n}" for path in python_files()
             for n in backslash_continuations(path.read_text())]
    assert not found, ("backslash line continuations (use brackets instead):\n" + "\n".join(found))


def test_the_backslash_check_sees_what_it_should():
    src = ('x = 1 + \\\n    2\ns = """a \\\nb"""\nt = "a\\\\"\n# a comment \\\n')
    assert backslash_continuations(src) == [1]
