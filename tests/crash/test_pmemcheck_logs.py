"""Real pmemcheck store logs (tests/crash/data/pmemcheck, recorded with valgrind --tool=pmemcheck
from the C programs in data/pmemcheck/src), explored by `pmemkit crash` with their own checkers.

The expected verdicts are pmreorder's on the same logs (see data/pmemcheck/README.md).
"""

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit.cli import main
from pmemkit.cli.status import Status
from pmemkit.crash import checkers, pmemcheck
from pmemkit.errors import InvalidArgumentError, TraceFormatError

DATA = Path(__file__).parent / "data" / "pmemcheck"
SRC = DATA / "src"
#: where the logs were recorded: the paths REGISTER_FILE names
RECORDED_IN = "/work/ext/logs/"


def _gcc(out, src, *libs):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/bootstrap.sh installs it)")
    r = subprocess.run(["gcc", "-O0", "-g", "-o", str(out), str(src), *libs], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.fixture(scope="module")
def progs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pmemcheck-progs")
    return {"flag": _gcc(d / "flag", SRC / "flag.c", "-lpmem"),
            "two": _gcc(d / "two", SRC / "two.c", "-lpmem"),
            "stack": _gcc(d / "stack", SRC / "stack.c", "-lpmem"),
            "objtx": _gcc(d / "objtx", SRC / "objtx.c", "-lpmemobj", "-lpmem"),
            "objreorder": _gcc(d / "objreorder", SRC / "objreorder.c", "-lpmemobj", "-lpmem")}


@pytest.fixture(scope="module")
def objpool(tmp_path_factory):
    """The libpmemobj pool as it was before objtx_*.log were recorded."""
    path = tmp_path_factory.mktemp("objpool") / "objpool.initial"
    path.write_bytes(gzip.decompress((DATA / "objpool.initial.gz").read_bytes()))
    return path


def crash(capsys, *argv):
    status = main(["crash", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out + err


# --- (a)-(c): the log exactly as pmemcheck writes it -------------------------------------

def test_logs_read_as_pmemcheck_wrote_them():
    quiet = pmemcheck.read_log(DATA / "flag_b.log")            # -q: one ==PID== line
    # no -q: a preamble, |STOP on a line of its own, a summary
    verbose = pmemcheck.read_log(DATA / "flag_b_verbose.log")
    assert (DATA / "flag_b_verbose.log").read_text().startswith("==")
    assert "Number of stores not made persistent" in (DATA / "flag_b_verbose.log").read_text()
    assert quiet.ops == verbose.ops
    assert quiet.stats == {"fence": 85, "store": 6, "flush": 2, "mark": 4}
    assert [f.name for f in quiet.files] == [RECORDED_IN + "pool"]


@pytest.mark.parametrize("log,check,expected", [
    ("flag_g.log", "flag", Status.OK),
    ("flag_b.log", "flag", Status.VIOLATIONS),
    ("flag_b_verbose.log", "flag", Status.VIOLATIONS),
    # the setup persists an inconsistent state on purpose
    ("flag_m.log", "flag", Status.VIOLATIONS),
    ("two_g.log", "two", Status.OK),
    ("two_b.log", "two", Status.VIOLATIONS),
    ("stack.log", "stack", Status.OK),
])
def test_verdicts_on_real_logs(progs, capsys, monkeypatch, tmp_path, log, check, expected):
    # the image files go to a directory of this test's (/dev/shm is shared with other runs)
    base = tmp_path / "images"
    base.mkdir()
    monkeypatch.setattr(checkers, "_temp_base", lambda: str(base))
    status, out = crash(capsys, DATA / log, "--initial", "zeros", "--check", progs[check], "c")
    assert status == expected, out
    assert not list(base.iterdir())         # every image file and directory removed


# --- (d) every registered file ---------------------------------------------------------

def test_second_pool_file_is_explored_and_checked(progs, capsys):
    trace = pmemcheck.read_log(DATA / "two_b.log")
    assert [(f.basename, f.offset, f.size) for f in trace.files] == [("poolA", 0, 4096),
                                                                      ("poolB", 4096, 8192)]
    status, out = crash(capsys, DATA / "two_b.log", "--initial", "zeros", "--check", progs["two"],
                        "c")
    assert status == Status.VIOLATIONS
    assert "valid record with wrong data" in out
    first = out.split("violation 1 of")[1].split("replay")[0]
    assert "via poolB@0x" in first and "via poolA@" not in first


def test_each_file_gets_its_own_initial_image(tmp_path):
    trace = pmemcheck.read_log(DATA / "two_g.log")
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"\x01" * 4096)
    b.write_bytes(b"\x02" * 8192)
    img = trace.initial_image({"poolA": str(a), "poolB": str(b)})
    assert img[:4096] == b"\x01" * 4096 and img[4096:] == b"\x02" * 8192
    with pytest.raises(ValueError, match="one initial image per file"):
        trace.initial_image(str(a))
    with pytest.raises(ValueError, match="does not register"):
        trace.initial_image({"poolA": str(a), "poolB": str(b), "poolC": str(b)})


# --- (e) one file mapped several times, (f) the pool's own content ------------------------

def test_libpmemobj_mappings_are_grouped_by_file():
    trace = pmemcheck.read_log(DATA / "objtx_tx.log")
    text = (DATA / "objtx_tx.log").read_text()
    assert text.count("REGISTER_FILE;" + RECORDED_IN + "objpool;") == 4   # header and pool, twice
    assert [(f.basename, f.offset, f.size) for f in trace.files] == [("objpool", 0, 8 << 20)]
    # the header mapping (0x483c000) is file offset 0, like the pool mapping's first page
    assert any(op[0] == "store" and op[1] < 4096 for op in trace.ops)


def test_32_mib_libpmemobj_pool_with_a_persistent_pmemobj_open_checker(progs, capsys, tmp_path):
    """PMDK's obj_reorder_basic on a 32 MiB pool: the checker opens each image with pmemobj_open
    (one process, line protocol); pmreorder -r ReorderAccumulative says consistent too."""
    trace = pmemcheck.read_log(DATA / "objreorder.log")
    assert [(f.basename, f.offset, f.size) for f in trace.files] == [("objreorder32", 0, 32 << 20)]
    pool = tmp_path / "objreorder32"
    pool.write_bytes(gzip.decompress((DATA / "objreorder32.initial.gz").read_bytes()))
    status, out = crash(capsys, DATA / "objreorder.log", "--initial", pool, "--engine",
                        "ReorderAccumulative", "--json", "--persistent", "--check",
                        progs["objreorder"], "serve")
    assert status == Status.OK, out
    summary = json.loads(out)
    assert summary["complete"] and summary["violations"] == 0
    assert summary["unique_images"] > 100
    # two workers, each with its persistent checker; -x runs the in-process explorer, which
    # sends the workers changed pages only: the same images, the same verdict
    status, out = crash(capsys, DATA / "objreorder.log", "--initial", pool, "--engine",
                        "ReorderAccumulative", "-x", "PMREORDER_MARKER_WRITE=ReorderAccumulative",
                        "--json", "--persistent", "--workers", "2", "--check",
                        progs["objreorder"], "serve")
    assert status == Status.OK, out
    two = json.loads(out)
    assert (two["unique_images"], two["violations"]) == (summary["unique_images"], 0)
    assert pool.read_bytes() == gzip.decompress((DATA / "objreorder32.initial.gz").read_bytes())
    # from zeros there is no pool to open: every image is a violation, reported as such
    status, out = crash(capsys, DATA / "objreorder.log", "--initial", "zeros", "--engine",
                        "prefix", "--persistent", "--stop-at-first", "--check",
                        progs["objreorder"], "serve")
    assert status == Status.VIOLATIONS and "pmemobj_open failed" in out, out


def test_libpmemobj_verdicts_start_from_the_pool_file(progs, objpool, capsys, tmp_path):
    for log, expected in (("objtx_tx.log", Status.OK), ("objtx_bad.log", Status.VIOLATIONS)):
        status, out = crash(capsys, DATA / log, "--initial", objpool, "--check", progs["objtx"],
                            "c")
        assert status == expected, out
    # from zeros a correct program looks broken: that is why the pool's content matters
    status, _ = crash(capsys, DATA / "objtx_tx.log", "--initial", "zeros", "--check",
                      progs["objtx"], "c")
    assert status == Status.VIOLATIONS


def test_without_initial_the_logged_pool_file_is_read(progs, objpool, capsys, tmp_path):
    pool = tmp_path / "objpool"
    log = tmp_path / "objtx.log"
    log.write_text((DATA / "objtx_tx.log").read_text().replace(RECORDED_IN + "objpool", str(pool)))
    status, out = crash(capsys, log, "--check", progs["objtx"], "c")
    assert status == Status.USAGE and "does not exist here" in out and "--initial" in out
    shutil.copy(objpool, pool)
    before = pool.read_bytes()
    status, out = crash(capsys, log, "--check", progs["objtx"], "c")
    assert status == Status.OK, out
    assert pool.read_bytes() == before          # the user's pool is never written


def test_a_pool_left_as_the_run_ended_is_refused(tmp_path, capsys, progs):
    pool = tmp_path / "pool"
    log = tmp_path / "flag.log"
    log.write_text((DATA / "flag_g.log").read_text().replace(RECORDED_IN + "pool", str(pool)))
    final = bytearray(4096)
    final[0:16] = bytes.fromhex("01000000010000000100000001000000")
    pool.write_bytes(bytes(final))
    status, out = crash(capsys, log, "--check", progs["flag"], "c")
    assert status == Status.USAGE and "as the run left it" in out


# --- (g) call stacks and a replay a CLI user can run -------------------------------------

def test_violation_shows_the_stores_call_stack_and_a_cli_replay(progs, capsys, tmp_path):
    status, out = crash(capsys, DATA / "flag_b.log", "--initial", "zeros", "--check", progs["flag"],
                        "c")
    assert status == Status.VIOLATIONS
    assert "via pool@0xc from write_bad (flag.c:46) < main (flag.c:88)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("replay: pmemkit crash"))
    argv = line.split("replay: pmemkit ", 1)[1]
    import shlex
    args = shlex.split(argv)
    args[args.index("DIR")] = str(tmp_path / "out")
    assert main(args) == Status.OK
    image = tmp_path / "out" / "pool"
    assert subprocess.run([progs["flag"], "c", str(image)], capture_output=True).returncode == 1


# --- item 8: what is refused -------------------------------------------------------------

def test_truncated_real_log_is_refused(capsys, tmp_path):
    log = tmp_path / "killed.log"
    log.write_bytes(gzip.decompress((DATA / "objtx_killed.log.gz").read_bytes()))
    assert "STOP" not in log.read_text()
    status, out = crash(capsys, log, "--initial", "zeros", "--check", "true")
    assert status == Status.USAGE and "truncated" in out


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace("STORE;0x520000c;0x1;0x4", "STORE;0x520000c;1;0x4"), "0x-prefixed"),
    (lambda t: t.replace("STORE;0x520000c;0x1;0x4", "STORE;0x5200ffc;0x1;0x8"), "past the end"),
    (lambda t: t.replace("STORE;0x520000c;0x1;0x4", "STORE;0x9900000;0x1;0x4"), "outside every"),
    (lambda t: t.replace(";0x5200000;0x1000;0x0|", ";0x5200000;0x10000000000;0x0|"), "up to"),
    (lambda t: t.replace("CHANGE.END|UNUSED.BEGIN|UNUSED.END",
                         "UNUSED.BEGIN|CHANGE.END|UNUSED.END"),
     "crossed markers"),
    (lambda t: t.replace("UNUSED.BEGIN|", ""), "never opened"),
    (lambda t: t + t, "2 store logs"),
    (lambda t: t.replace("START|", "START|STORE;0x5200000;0x1;0x8|FLUSH;0x5200000;0x40|"),
     "before the REGISTER_FILE"),
])
def test_damaged_real_logs_are_refused(edit, match):
    text = edit((DATA / "flag_b.log").read_text())
    with pytest.raises(TraceFormatError, match=match):
        pmemcheck.parse_log(text)


def test_cli_refusals_are_input_errors_with_a_short_message(capsys, tmp_path):
    huge = tmp_path / "huge.log"
    huge.write_text((DATA / "flag_b.log").read_text().replace(";0x5200000;0x1000;0x0|",
                                                             ";0x5200000;0x10000000000;0x0|"))
    status, out = crash(capsys, huge, "--initial", "zeros", "--check", "true")
    assert status == Status.USAGE and "Traceback" not in out and "MemoryError" not in out
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(bytes(range(256)) * 64)
    status, out = crash(capsys, garbage, "--check", "true")
    assert status == Status.USAGE and "not a pmemcheck store log" in out and len(out) < 300
    text = tmp_path / "text.log"
    text.write_text("hello\nworld\n")
    status, out = crash(capsys, text, "--check", "true")
    assert status == Status.USAGE and "not a pmemcheck store log" in out


# --- pmreorder compatibility -------------------------------------------------------------

def test_setup_section_left_unchecked_like_pmreorder(progs, capsys, tmp_path):
    """PMDK's pmreorder_simple 'm': pmem_memset_persist persists an inconsistent state on purpose;
    with the library's markers (PMREORDER_EMIT_LOG=1) and NoReorderNoCheck for that section it
    passes."""
    log = DATA / "flag_m_libmarkers.log"
    assert "pmem_memset_persist.BEGIN" in log.read_text()
    base = ["--initial", "zeros"]
    status, out = crash(capsys, log, *base, "--check", progs["flag"], "c")
    assert status == Status.VIOLATIONS
    status, out = crash(capsys, log, *base, "-x",
                        "pmem_memset_persist=NoReorderNoCheck,CHANGE=ReorderFull",
                        "--check", progs["flag"], "c")
    assert status == Status.OK, out
    assert "left unchecked on purpose" in out
    conf = tmp_path / "pmreorder.conf"
    conf.write_text(json.dumps({"pmem_memset_persist": "NoReorderNoCheck", "CHANGE": "ReorderFull",
                                "UNUSED": "ReorderFull"}))
    assert crash(capsys, log, *base, "-x", conf, "--check", progs["flag"], "c")[0] == Status.OK
    # the bug inside a ReorderFull section is still found
    assert crash(capsys, DATA / "flag_b.log", *base, "-x", "CHANGE=ReorderFull", "--engine",
                 "NoReorderNoCheck", "--check", progs["flag"], "c")[0] == Status.VIOLATIONS


def test_no_reorder_do_check_checks_each_barrier_in_order(progs, capsys):
    # in order, flag_b's stores are never torn at a barrier: pmreorder's NoReorderDoCheck passes it;
    # checking one order of many is not a complete check, so the status says incomplete
    status, out = crash(capsys, DATA / "flag_b.log", "--initial", "zeros", "--engine",
                        "NoReorderDoCheck",
                        "--check", progs["flag"], "c")
    assert status == Status.INCOMPLETE, out
    assert "in-order" in out


def test_checker_gets_pmreorder_markers(capsys, tmp_path):
    seen = tmp_path / "seen"
    checker = tmp_path / "check.py"
    checker.write_text("import os, sys\nopen(sys.argv[1], "
                       "'a').write(os.environ.get('PMREORDER_MARKERS', "
                       "'UNSET') + '\\n')\n")
    status, out = crash(capsys, DATA / "stack.log", "--initial", "zeros", "--engine", "in-order",
                        "--check", sys.executable, checker, seen)
    lines = set(seen.read_text().splitlines())
    assert "OUTER.BEGIN|INNER.BEGIN" in lines
    assert "OUTER.BEGIN|INNER.BEGIN|INNER.END|OUTER.END" in lines
    assert "UNSET" not in lines


def test_unknown_section_engine_is_a_usage_error(capsys):
    status, out = crash(capsys, DATA / "flag_b.log", "--initial", "zeros", "-x",
                        "CHANGE=ReorderSideways",
                        "--check", "true")
    assert status == Status.USAGE and "ReorderSideways" in out
    # pmreorder's default engine checks nothing: without -x that is refused, never an OK
    status, out = crash(capsys, DATA / "flag_b.log", "--initial", "zeros", "--engine",
                        "NoReorderNoCheck", "--check", "true")
    assert status == Status.USAGE and "checks nothing" in out


def test_section_engine_for_a_marker_the_log_never_opens_is_noted(progs, capsys):
    status, out = crash(capsys, DATA / "flag_g.log", "--initial", "zeros", "-x",
                        "CHNAGE=ReorderFull", "--check", progs["flag"], "c")
    assert status == Status.OK and "note: -x names CHNAGE, which opens no section" in out


def test_log_paths_that_cannot_be_used_are_typed_errors(tmp_path):
    def workload(pm):
        pm.write(0, b"A" * 8)
        pm.persist(0, 8)
    trace = pmemcheck.record(workload, 4096)
    with pytest.raises(InvalidArgumentError, match="cannot write the store log"):
        pmemcheck.write_log(trace, tmp_path / "missing-dir" / "store.log")
    assert not (tmp_path / "missing-dir").exists()
    with pytest.raises(InvalidArgumentError, match="must be a path"):
        pmemcheck.read_log(5)


def test_a_missing_section_file_is_named_as_such(tmp_path):
    with pytest.raises(InvalidArgumentError, match="not found"):
        pmemcheck.parse_sections(str(tmp_path / "sections.json"))
    assert pmemcheck.parse_sections("A=ReorderFull") == {"A": "ReorderFull"}
