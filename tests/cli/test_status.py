"""The one exit-status table: its docs page, every verdict command's --help, and the codes used."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit.cli import main, status
from pmemkit.crash import pmemcheck

DOCS = Path(__file__).resolve().parents[2] / "docs" / "exit-status.md"
VERDICT_COMMANDS = (["crash"], ["crash", "run"], ["crash", "record"], ["btt", "check"],
                    ["btt", "crash-suite"], ["vm", "powercut"])


def test_docs_table_is_the_code_table():
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|$", DOCS.read_text(), re.M)
    assert [(int(c), t) for c, t in rows] == [(int(c), t) for c, t in status.MEANINGS]


def _help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", VERDICT_COMMANDS, ids=" ".join)
def test_every_verdict_command_prints_the_table(argv, capsys):
    assert status.EPILOG in _help(argv, capsys)


@pytest.mark.parametrize("argv", (["vm", "run"], ["vm", "test"]), ids=" ".join)
def test_guest_commands_say_their_status_is_the_guests(argv, capsys):
    out = _help(argv, capsys)
    assert status.PASSTHROUGH_EPILOG in out
    assert "  4    the checker or another tool failed" in out


def test_verdict_precedence():
    assert status.verdict(True, True) is status.Status.OK
    assert status.verdict(True, False) is status.Status.INCOMPLETE
    assert status.verdict(False, False) is status.Status.VIOLATIONS


def _log(tmp_path):
    def buggy(pm):
        pm.write(0, b"A" * 8)
        pm.write(64, b"\x01" + bytes(7))
        pm.persist(64, 8)
        pm.persist(0, 8)
    log = tmp_path / "store.log"
    pmemcheck.write_log(pmemcheck.record(buggy, 4096), log)
    return log


def test_max_states_stop_is_incomplete_not_ok(tmp_path, capsys):
    log = _log(tmp_path)
    # the checker accepts everything: stopped early, nothing found -> incomplete (3), never 0
    argv = ["crash", str(log), "--initial", "zeros", "--max-states", "1", "--check", "true"]
    assert main(argv) == 3
    assert "incomplete" in capsys.readouterr().out


def test_checker_killed_by_a_signal_is_a_checker_error(tmp_path, capsys):
    log = _log(tmp_path)
    killer = tmp_path / "killer.py"
    killer.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    rc = main(["crash", str(log), "--initial", "zeros", "--check", sys.executable, str(killer)])
    assert rc == status.Status.TOOL_ERROR
    err = capsys.readouterr().err
    assert "SIGSEGV" in err and "checker error" in err



@pytest.mark.parametrize("option", (["--engine", "zz"], ["--workers", "0"], ["--max-states", "-1"],
                                    ["--timeout", "0"]), ids=" ".join)
def test_crash_run_refuses_bad_options_before_running_the_program(option, tmp_path):
    ran = tmp_path / "ran"
    program = [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"]
    res = subprocess.run([sys.executable, "-m", "pmemkit", "crash", "run", *option, "--check",
                          "true", "--", *program], capture_output=True, text=True, check=False)
    assert res.returncode == status.Status.USAGE, res.stderr
    assert option[0].lstrip("-").split("-")[0] in res.stderr
    assert not ran.exists()


@pytest.mark.parametrize("option", (["-o", "{d}/missing/store.log"],
                                    ["-o", "{d}/store.log", "--initial-out", "{d}/missing/init"]),
                         ids=("output", "initial-out"))
def test_crash_record_refuses_an_output_in_a_missing_directory_before_running(option, tmp_path):
    ran = tmp_path / "ran"
    program = [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"]
    option = [o.format(d=tmp_path) for o in option]
    res = subprocess.run([sys.executable, "-m", "pmemkit", "crash", "record", *option, "--",
                          *program], capture_output=True, text=True, check=False)
    assert res.returncode == status.Status.USAGE, res.stderr
    assert "directory does not exist" in res.stderr
    assert not ran.exists()


def test_crash_run_program_killed_by_its_timeout_is_no_verdict(tmp_path):
    # the program never finished: nothing was checked, and the input was not wrong either
    res = subprocess.run([sys.executable, "-m", "pmemkit", "crash", "run", "--timeout", "0.5",
                          "--check", "true", "--", "sleep", "30"], capture_output=True, text=True,
                         check=False, timeout=60)
    assert res.returncode == status.Status.TOOL_ERROR, res.stderr
    assert "did not finish within" in res.stderr


def test_replay_to_an_unwritable_output_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["crash", str(_log(tmp_path)), "--initial", "zeros", "--replay", "0",
            "--output", str(blocker / "images"), "--check", "true"]
    assert main(argv) == status.Status.USAGE
    assert "cannot write the image" in capsys.readouterr().err
    assert blocker.read_text() == "x"
