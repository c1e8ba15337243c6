"""pmemcheck logs, external and persistent checkers, the CLI and the pytest fixture."""

import sys
import textwrap

import pytest

from pmemkit import crash
from pmemkit.cli import main
from pmemkit.crash import pmemcheck
from pmemkit.errors import CrashError, TraceFormatError

pytest_plugins = ["pytester"]

FLAG_CHECK = """
import sys
def bad(path):
    d = open(path, "rb").read()
    return d[64] == 1 and d[0:8] != b"A" * 8
"""


def buggy(pm):
    pm.write(0, b"A" * 8)
    pm.write(64, b"\x01" + bytes(7))
    pm.persist(64, 8)
    pm.persist(0, 8)


def fixed(pm):
    pm.memcpy_persist(0, b"A" * 8)
    pm.memcpy_persist(64, b"\x01" + bytes(7))


@pytest.fixture
def one_shot(tmp_path):
    path = tmp_path / "check.py"
    path.write_text(FLAG_CHECK + "sys.exit(1 if bad(sys.argv[-1]) else 0)\n")
    return [sys.executable, str(path)]


@pytest.fixture
def persistent(tmp_path):
    path = tmp_path / "pcheck.py"
    path.write_text(FLAG_CHECK + textwrap.dedent("""
        assert __import__("os").environ["PMEMKIT_CHECK_PROTOCOL"] == "1"
        for line in sys.stdin:
            path = line.rstrip("\\n").split("\\t")[0]
            print("1 flag without data" if bad(path) else "0", flush=True)
    """))
    return [sys.executable, str(path)]


def test_log_round_trip_preserves_the_verdict(tmp_path, one_shot):
    log = tmp_path / "store.log"
    pmemcheck.write_log(pmemcheck.record(buggy, 4096), log)
    text = log.read_text()
    assert text.startswith("START|REGISTER_FILE;") and "|STORE;0x7f0000000040;0x1;0x8|" in text
    trace = pmemcheck.read_log(log)
    assert trace.size == 4096 and trace.stats == {"store": 2, "flush": 2, "fence": 2}
    direct = crash.explore(buggy, one_shot, progress=None)
    via_log = crash.explore(trace, one_shot, progress=None)
    assert direct.violation_count == via_log.violation_count == 1
    assert direct.violations[0].image == via_log.violations[0].image


def test_parse_real_style_log_with_markers():
    text = ("START|REGISTER_FILE;/mnt/pmem/pool;0x5000000;0x100;0x0|STORE;0x5000010;0xdeadbeef;0x4|"
            "FLUSH;0x5000000;0x40|FENCE|TX.BEGIN|STORE;0x50000f8;0x0102030405060708;"
            "0x8|TX.END|STOP")
    t = pmemcheck.parse_log(text)
    assert t.size == 0x100 and t.name == "pool"
    assert t.ops == [("store", 0x10, bytes.fromhex("efbeadde")), ("flush", 0, 64), ("fence",),
                     ("mark", "TX.BEGIN"), ("store", 0xF8, bytes.fromhex("0807060504030201")),
                     ("mark", "TX.END")]


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("START|STORE;0xzz;0x1;0x8|STOP", "hexadecimal"),
    ("START|STORE;0x10;0x1|STOP", "addr;value;size"),
    ("START|WHATEVER|STOP", "unknown entry"),
    ("START|STORE;0x10;0x10000;0x1|STOP", "does not fit"),
    ("START|FENCE|STOP", "nothing to replay"),
])
def test_bad_logs_raise_trace_format_error(text, match):
    with pytest.raises(TraceFormatError, match=match):
        pmemcheck.parse_log(text)


def test_persistent_checker_agrees_with_one_shot(one_shot, persistent):
    a = crash.explore(buggy, one_shot, progress=None)
    b = crash.explore(buggy, crash.PersistentChecker(persistent), progress=None)
    c = crash.explore(buggy, crash.PersistentChecker(persistent), workers=2, progress=None)
    assert a.violation_count == b.violation_count == c.violation_count == 1
    assert "flag without data" in b.violations[0].message
    assert crash.explore(fixed, crash.PersistentChecker(persistent), progress=None).ok


def test_persistent_checker_that_dies_is_an_error(tmp_path):
    path = tmp_path / "dies.py"
    path.write_text("import sys; sys.stdin.readline(); sys.stderr.write('boom\\n')\n")
    with pytest.raises(CrashError, match="boom"):
        crash.explore(buggy, crash.PersistentChecker([sys.executable, str(path)]), progress=None)


def test_cli_explores_a_log(tmp_path, one_shot, persistent, capsys):
    log = tmp_path / "store.log"
    pmemcheck.write_log(pmemcheck.record(buggy, 4096), log)
    assert main(["crash", str(log), "--initial", "zeros", "--engine", "exhaustive", "--check",
                 *one_shot]) == 1
    out = capsys.readouterr().out
    assert "FAILED - 1 violation" in out and "checker exited with status 1" in out
    assert main(["crash", str(log), "--initial", "zeros", "--persistent", "--workers", "2",
                 "--check", *persistent]) == 1
    good = tmp_path / "good.log"
    pmemcheck.write_log(pmemcheck.record(fixed, 4096), good)
    assert main(["crash", str(good), "--initial", "zeros", "--json", "--check", *one_shot]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.log"
    bad.write_text("START|NOPE|STOP")
    assert main(["crash", str(bad), "--check", "true"]) == 2
    assert "unknown entry" in capsys.readouterr().err
    assert main(["crash", str(tmp_path / "missing.log"), "--check", "true"]) == 2
    assert "cannot read store log" in capsys.readouterr().err


def test_fixture_failure_prints_the_report(pytester):
    pytester.makepyfile(textwrap.dedent("""
        def workload(pm):
            pm.write(0, b"A" * 8)
            pm.write(64, b"\\x01" + bytes(7))
            pm.persist(64, 8)
            pm.persist(0, 8)

        def check(img):
            assert img[64] == 0 or bytes(img[:8]) == b"A" * 8, "flag without data"

        def test_consistent(crash_explore):
            crash_explore(workload, check)

        def test_caught(crash_explore):
            crash_explore(workload, check, expect_violations=True)
    """))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*crash-consistency violations:*", "*flag without data*",
                                 "*crash.replay(workload, point=0*"])


def test_persistent_checker_with_info_gets_point_json(tmp_path):
    path = tmp_path / "info.py"
    log = tmp_path / "lines.txt"
    path.write_text(textwrap.dedent(f"""
        import json, sys
        with open({str(log)!r}, "a") as out:
            for line in sys.stdin:
                p, info = line.rstrip("\\n").split("\\t")
                out.write(info + "\\n")
                print("0", flush=True)
    """))

    def workload(pm):
        pm.mark("m")
        pm.memcpy_persist(0, b"x" * 8)
        pm.record("k", 1)

    r = crash.explore(workload, crash.PersistentChecker([sys.executable, str(path)], info=True),
                      progress=None)
    assert r.ok
    import json
    infos = [json.loads(x) for x in log.read_text().splitlines()]
    assert {"point": 1, "kind": "end", "marker": "m", "records": [["k", 1]]} in infos


def test_persistent_checker_that_hangs_is_killed_and_reported(tmp_path):
    """A checker that never answers: CrashError after its timeout, the process reaped, stderr
    quoted."""
    import psutil

    path = tmp_path / "hang.py"
    path.write_text("import sys, time\n"
                    "sys.stderr.write('x' * 200000 + '\\nlast words\\n'); sys.stderr.flush()\n"
                    "time.sleep(600)\n")
    checker = crash.PersistentChecker([sys.executable, str(path)], timeout=2)
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(CrashError, match="did not answer within 2 s.*last words"):
        crash.explore(fixed, checker, progress=None)
    assert {p.pid for p in psutil.Process().children()} <= before


def test_fixture_does_not_pass_an_incomplete_exploration(pytester):
    pytester.makepyfile(textwrap.dedent("""
        def workload(pm):
            for i in range(4):
                pm.write(8 * i, b"A" * 8)
            pm.persist(0, 32)

        def check(img):
            return True

        def test_stopped_early(crash_explore):
            crash_explore(workload, check, max_states=2)

        def test_sample_allowed(crash_explore):
            report = crash_explore(workload, check, max_states=2, allow_incomplete=True)
            assert not report.complete

        def test_complete(crash_explore):
            assert crash_explore(workload, check).complete
    """))
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*exploration was incomplete*"])
