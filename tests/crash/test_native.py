"""`pmemkit crash run/record` on real C programs built with gcc against Debian's PMDK.

The programs (tests/crash/native/*.c) are built once per session; each test runs one under
the LD_PRELOAD interposer (a subprocess) and checks the verdict of the whole command.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.cli import main
from pmemkit.cli.status import Status
from pmemkit.crash import native, pmemcheck
from pmemkit.errors import InterposeError, InvalidArgumentError, TraceFormatError

HERE = Path(__file__).parent / "native"
ROOT = Path(__file__).resolve().parents[2]

#: commit_flag modes and whether a correct harness finds a violation
COMMIT_MODES = {
    "correct": False, "correct-memcpy": False, "flag-first": True, "payload-unflushed": True,
    "flush-no-drain": True, "unpersisted-unmap": True, "unpersisted-return": True,
    "unpersisted-exit": True,
}

CHECK_COMMIT = r'''
import json, sys
want = bytes((i * 7 + 1) & 0xff for i in range(64))
for line in sys.stdin:
    path, _, info = line.rstrip("\n").partition("\t")
    info = json.loads(info) if info else {}
    img = open(path, "rb").read()
    flag = int.from_bytes(img[4096:4104], "little")
    committed = any(k == "committed" for k, v in info.get("records", []))
    if flag == 1 and img[:64] != want:
        print("1 flag set but payload incomplete", flush=True)
    elif committed and flag != 1:
        print("1 committed but the flag is not durable", flush=True)
    else:
        print("0", flush=True)
'''


#: sections.c's invariant a == b; with --markers, like PMDK's pmreorder_stack checker, it reads
#: PMREORDER_MARKERS and accepts any image inside the (deliberately inconsistent) SETUP section
CHECK_SECTIONS = r'''
import os, sys
img = open(sys.argv[-1], "rb").read()
a, b = int.from_bytes(img[0:8], "little"), int.from_bytes(img[8:16], "little")
markers = os.environ.get("PMREORDER_MARKERS", "").split("|")
in_setup = "SETUP.BEGIN" in markers and "SETUP.END" not in markers
sys.exit(0 if a == b or ("--markers" in sys.argv and in_setup) else 1)
'''


def _gcc(out, *args):
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(out), *map(str, args)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def progs(tmp_path_factory):
    d = tmp_path_factory.mktemp("native-progs")
    cf = HERE / "commit_flag.c"
    built = {
        "commit_flag": _gcc(d / "commit_flag", cf, "-lpmem", "-lpmem2", "-ldl"),
        "obj_tx": _gcc(d / "obj_tx", HERE / "obj_tx.c", "-lpmemobj"),
        "procs": _gcc(d / "procs", HERE / "procs.c", "-pthread", "-lpmem"),
        "copies": _gcc(d / "copies", HERE / "copies.c", "-lpmem"),
        "sections": _gcc(d / "sections", HERE / "sections.c", "-lpmem", "-ldl"),
        # libpmem linked in statically: its flushes never reach the interposer
        "static_libpmem": _gcc(d / "static_libpmem", "-DNO_PMEM2", cf,
                               "/usr/lib/x86_64-linux-gnu/libpmem.a", "-lndctl", "-ldaxctl", "-ldl",
                               "-pthread"),
        # the same, exporting its libpmem symbols: seen ahead of the interposer's own
        "static_libpmem_exported": _gcc(d / "static_libpmem_exported", "-rdynamic", "-DNO_PMEM2",
                                        cf, "/usr/lib/x86_64-linux-gnu/libpmem.a", "-lndctl",
                                        "-ldaxctl", "-ldl", "-pthread"),
        # everything static: LD_PRELOAD cannot reach it at all
        "static": _gcc(d / "static", "-static", "-DNO_PMEM2", "-DNO_LIBPMEM", cf),
    }
    checker = d / "check_commit.py"
    checker.write_text(CHECK_COMMIT)
    built["check_commit"] = checker
    built["check_sections"] = d / "check_sections.py"
    built["check_sections"].write_text(CHECK_SECTIONS)
    return built


def _run(capsys, *argv):
    status = main(["crash", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out + err


@pytest.mark.parametrize("backend", ["pmem", "pmem2", "msync"])
@pytest.mark.parametrize("mode", list(COMMIT_MODES))
def test_commit_flag(progs, tmp_path, capsys, backend, mode):
    pool = tmp_path / "pool"
    status, out = _run(capsys, "run", "--engine", "exhaustive", "--persistent", "--check",
                       sys.executable, progs["check_commit"], "--", progs["commit_flag"], backend,
                       mode,
                       pool)
    # msync flushes and waits in one call: "flush without drain" cannot happen with it
    bug = COMMIT_MODES[mode] and not (backend == "msync" and mode == "flush-no-drain")
    assert status == (Status.VIOLATIONS if bug else Status.OK), out
    assert "traced" in out and "exit status 0" in out
    if mode == "flag-first":        # pmemkit_mark() from C, found with dlsym
        assert "last marker 'payload'" in out
    assert not list(tmp_path.glob("pmemkit-*"))


@pytest.fixture(scope="session")
def obj_pool(progs, tmp_path_factory):
    pool = tmp_path_factory.mktemp("obj") / "pool.obj"
    subprocess.run([progs["obj_tx"], "create", pool], check=True)
    return pool


@pytest.mark.parametrize("model", ["x86", "x86-line", "eadr"])
@pytest.mark.parametrize("mode", ["correct", "buggy"])
def test_libpmemobj_transactions(progs, obj_pool, tmp_path, capsys, mode, model):
    pool = tmp_path / "pool.obj"
    shutil.copyfile(obj_pool, pool)
    n = 2 if model == "eadr" else 1     # eadr has the fewest images; one transaction shows the bug
    status, out = _run(capsys, "run", "--model", model, "--engine", "exhaustive", "--check",
                       progs["obj_tx"], "check", "--", progs["obj_tx"], "run", mode, pool, n)
    assert status == (Status.VIOLATIONS if mode == "buggy" else Status.OK), out
    # transaction boundaries appear as markers without source changes
    if mode == "buggy":
        assert "marker 'pmemobj_tx_" in out


def test_libpmemobj_trace_ignores_runtime_area_and_is_complete(progs, obj_pool, tmp_path):
    pool = tmp_path / "pool.obj"
    shutil.copyfile(obj_pool, pool)
    prog = native.run([progs["obj_tx"], "run", "correct", pool, 1])
    t = prog.trace
    assert prog.returncode == 0 and t.end == ("exit", 0)
    assert t.ignored_range(prog.final) == (native.PMEMOBJ_RUNTIME_START, 0x2000)
    work = prog.workload()          # verifies initial + stores == final file
    marks = [op[1] for op in work.ops if op[0] == "mark"]
    assert marks.count("pmemobj_tx_begin") == 1 and "pmemobj_tx_end" in marks
    lo, hi = t.ignored_range(prog.final)
    assert not [op for op in work.ops if op[0] == "store" and lo <= op[1] < hi]
    # without the ignored area the run-time stores of pmemobj_open would be in the trace
    assert any(op[0] == "store" and lo <= op[3] < hi for op in t.ops)


@pytest.mark.parametrize("mode", ["correct", "flag-first", "payload-unflushed", "flush-no-drain"])
def test_record_round_trip_same_verdict(progs, tmp_path, capsys, mode):
    """crash record writes a pmemcheck log; `pmemkit crash LOG` gives the verdict crash run
    gives."""
    check = [sys.executable, progs["check_commit"]]     # images only: no records in a log
    pool = tmp_path / "pool"
    s_run, out = _run(capsys, "run", "--engine", "exhaustive", "--persistent", "--check", *check,
                      "--",
                      progs["commit_flag"], "pmem", mode, pool)
    pool.unlink()
    log = tmp_path / "store.log"
    s_rec, out2 = _run(capsys, "record", "-o", log, "--initial-out", tmp_path / "initial", "--",
                       progs["commit_flag"], "pmem", mode, pool)
    assert s_rec == Status.OK, out2
    assert log.read_text().startswith("START|REGISTER_FILE;")
    s_log, out3 = _run(capsys, log, "--engine", "exhaustive", "--initial", tmp_path / "initial",
                       "--persistent", "--check", *check)
    assert s_run == s_log == (Status.OK if mode == "correct" else Status.VIOLATIONS), (out, out3)


@pytest.mark.parametrize("mode", ["correct", "buggy"])
def test_libpmemobj_record_round_trip_same_verdict(progs, obj_pool, tmp_path, capsys, mode):
    pool = tmp_path / "pool.obj"
    shutil.copyfile(obj_pool, pool)
    check = [progs["obj_tx"], "check"]
    s_run, out = _run(capsys, "run", "--model", "eadr", "--engine", "exhaustive", "--check", *check,
                      "--", progs["obj_tx"], "run", mode, pool, 1)
    shutil.copyfile(obj_pool, pool)
    log = tmp_path / "store.log"
    s_rec, out2 = _run(capsys, "record", "-o", log, "--initial-out", tmp_path / "initial", "--",
                       progs["obj_tx"], "run", mode, pool, 1)
    assert s_rec == Status.OK, out2
    assert f"REGISTER_FILE;{pool};" in log.read_text()       # the full path, as pmemcheck writes it
    s_log, out3 = _run(capsys, log, "--model", "eadr", "--engine", "exhaustive", "--initial",
                       tmp_path / "initial", "--check", *check)
    assert s_run == s_log == (Status.OK if mode == "correct" else Status.VIOLATIONS), (out, out3)


#: libpmem's copy and set functions and whether the call ends with a fence
COPY_FUNCTIONS = {"pmem_memmove_persist": True, "pmem_memcpy_persist": True,
                  "pmem_memmove_nodrain": False, "pmem_memcpy_nodrain": False,
                  "pmem_memset_persist": True, "pmem_memset_nodrain": False,
                  "pmem_memmove": False, "pmem_memcpy": True, "pmem_memset": False}


@pytest.mark.parametrize("function", list(COPY_FUNCTIONS))
def test_every_libpmem_copy_is_one_flushed_store(progs, tmp_path, function):
    # copies.c: the function writes 100 bytes at offset 64 (pmem_memmove and pmem_memset with
    # PMEM_F_MEM_NODRAIN, pmem_memcpy with flags 0)
    prog = native.run([progs["copies"], function, tmp_path / "pool"])
    assert prog.returncode == 0
    work = prog.workload()           # the traced store rebuilds the file the program left
    assert prog.final[64:164] == b"S" * 100
    assert work.stats.get("store") == 1 and work.stats.get("flush") == 1
    assert work.stats.get("fence", 0) == int(COPY_FUNCTIONS[function])


def test_record_log_matches_trace(progs, tmp_path, capsys):
    pool = tmp_path / "pool"
    log = tmp_path / "store.log"
    assert _run(capsys, "record", "-o", log, "--", progs["commit_flag"], "pmem", "correct",
                pool)[0] == 0
    pool.unlink()
    work = native.run([progs["commit_flag"], "pmem", "correct", pool]).workload()
    back = pmemcheck.read_log(log)
    rebuilt = bytearray(back.size)
    for op in back.ops:
        if op[0] == "store":
            rebuilt[op[1]:op[1] + len(op[2])] = op[2]
    assert bytes(rebuilt) == pool.read_bytes()
    assert back.stats["fence"] == work.stats["fence"] and back.stats["flush"] == work.stats["flush"]


def test_statically_linked_program_refused(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["static"], "msync", "correct",
                       tmp_path / "pool")
    assert status == Status.USAGE and "statically linked" in out
    assert not (tmp_path / "pool").exists()        # refused before running


def test_static_libpmem_refused(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["static_libpmem"], "pmem",
                       "correct", tmp_path / "pool")
    assert status == Status.USAGE, out
    assert "no flush, fence or msync reached pmemkit" in out and "crash exploration" not in out


def test_exported_static_libpmem_named(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["static_libpmem_exported"],
                       "pmem", "correct", tmp_path / "pool")
    assert status == Status.USAGE, out
    assert "ahead of pmemkit's interposer" in out and "crash exploration" not in out


def test_forked_child_writing_the_pool_refused(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["procs"], "fork-child-writes",
                       tmp_path / "pool")
    assert status == Status.USAGE and "forked child" in out


def test_killed_program_incomplete_names_bytes(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["procs"], "killed",
                       tmp_path / "pool")
    assert status == Status.INCOMPLETE, out
    assert "killed by SIGKILL" in out and "[0x80, 0x8a)" in out


def test_threads_each_persisting(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--json", "--check", "true", "--", progs["procs"], "threads",
                       tmp_path / "pool")
    assert status == Status.OK, out
    assert "3 thread(s)" in out and "201 fence(s)" in out
    summary = json.loads(out[out.index("{"):])
    assert summary["complete"] is True
    assert summary["program"]["threads"] == 3 and summary["program"]["fences"] == 201


def test_only_the_launched_process_records(progs, tmp_path, capsys):
    """A program a shell starts (without exec) inherits LD_PRELOAD but does not record."""
    pool = tmp_path / "pool"
    prog = progs["procs"]
    status, out = _run(capsys, "run", "--check", "true", "--", "sh", "-c",
                       f"{prog} threads {pool}; true")
    assert status == Status.USAGE and "stored nothing" in out
    status, out = _run(capsys, "run", "--check", "true", "--", "sh", "-c",
                       f"exec {prog} threads {pool}")
    assert status == Status.OK, out


def test_system_calls_reading_into_the_pool(progs, tmp_path, capsys):
    """read(2)/readv(2) into write-protected pool pages would fail with EFAULT: pages are opened."""
    status, out = _run(capsys, "run", "--check", "true", "--", progs["procs"], "read-into-pool",
                       tmp_path / "pool")
    assert status == Status.OK, out
    assert "exit status 0" in out and "trace complete" in out


def test_msync_async_is_not_a_persistence_point(progs, tmp_path):
    prog = native.run([progs["procs"], "msync-async", tmp_path / "pool"])
    work = prog.workload()
    # only the pmem_persist of "parent" is a flush and a fence; the MS_ASYNC store stays pending
    assert work.stats["fence"] == 1 and work.stats["flush"] == 1
    assert work.ops[-1][0] == "store" and work.ops[-1][2].startswith(b"async")


@pytest.mark.parametrize("run", range(3))
def test_stress_threads_trace_is_complete(progs, tmp_path, run):
    """Four threads storing, flushing and fencing at random: the trace rebuilds the file exactly
    (write tracking, hot pages going quiet and faulting again, concurrent faults)."""
    prog = native.run([progs["procs"], "stress", tmp_path / "pool"])
    assert prog.returncode == 0 and prog.trace.end == ("exit", 0)
    work = prog.workload()          # raises TraceIncompleteError if a store was missed
    assert len(prog.trace.threads) == 5 and work.stats["store"] > 1000


def test_fence_in_another_thread_is_noted(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", "true", "--", progs["procs"], "cross-thread-fence",
                       tmp_path / "pool")
    assert status == Status.OK, out
    assert "note: 1 flush(es) stay pending across another thread's fence" in out
    # the thread's flush moved after the main thread's fence: never fenced, still pending at the end
    prog = native.run([progs["procs"], "cross-thread-fence", tmp_path / "pool2"])
    kinds = [op[0] for op in prog.workload().ops]
    assert kinds[-2:] == ["fence", "flush"]


def test_fence_orders_only_its_own_threads_flushes():
    a, b = 1, 2
    store, flush = ("store", 0, b"x" * 8), ("flush", 0, 8)
    ops, moved, shared = native._own_thread_fences([(store, a), (flush, a), (("fence",), b),
                                                     (("fence",), a)])
    assert (moved, shared) == (1, 0)
    assert ops == [store, ("fence",), flush, ("fence",)]     # durable at a's own fence only
    # a later store to the flushed line: moving the flush would cover it, so it stays
    later = ("store", 8, b"y" * 8)
    ops, moved, shared = native._own_thread_fences([(store, a), (flush, a), (later, b),
                                                     (("fence",), b)])
    assert (moved, shared) == (0, 1) and ops == [store, flush, later, ("fence",)]


def test_program_with_its_own_segv_handler(progs, tmp_path, capsys):
    """The program's SIGSEGV handler gets its own faults; pool pages still fault to pmemkit."""
    status, out = _run(capsys, "run", "--check", "true", "--", progs["procs"], "own-segv-handler",
                       tmp_path / "pool")
    assert status == Status.OK, out
    assert "exit status 0" in out and "3 store(s)" in out
    assert (tmp_path / "pool").read_bytes()[8192:8201] == b"recovered"


def test_usage_errors(capsys):
    status, out = _run(capsys, "run", "--check", "true", "./prog")
    assert status == Status.USAGE and "put -- before the program" in out
    status, out = _run(capsys, "run", "--check", "true", "--", "/nonexistent/prog")
    assert status == Status.USAGE and "program not found" in out


def test_truncated_trace_is_a_format_error():
    rec = native.HEADER.pack(native.T_HELLO, 0, 1, 1, 42)
    assert native.parse_trace(rec).pids == [42]
    with pytest.raises(TraceFormatError, match="inside a record header"):
        native.parse_trace(rec + b"\0" * 5)
    with pytest.raises(TraceFormatError, match="never opened"):
        native.parse_trace(native.HEADER.pack(native.T_STORE, 3, 1, 0, 8) + b"\0" * 8)
    with pytest.raises(InterposeError, match="stored nothing"):
        native.parse_trace(rec).pool()


def test_c_constants_pinned_to_python():
    src = (ROOT / "pmemkit" / "_interpose.c").read_text()
    assert f'#define TRACE_ENV "{defaults.INTERPOSE_TRACE_ENV}"' in src
    assert f'#define OWNER_ENV "{defaults.INTERPOSE_OWNER_ENV}"' in src
    assert f'#define EMIT_LOG_ENV "{defaults.EMIT_LOG_ENV}"' in src
    enum = re.search(r"enum \{\s*(T_HELLO.*?)\};", src, re.DOTALL).group(1)
    for name, value in re.findall(r"(T_\w+) = (\d+)", enum):
        assert getattr(native, name) == int(value), name
    assert native.HEADER.size == 24


def test_a_program_given_as_a_string_is_refused():
    # it used to run letter by letter: "program not found: 't'"
    with pytest.raises(InvalidArgumentError, match="argv list"):
        native.run("true")


def _sections_json(tmp_path):
    config = tmp_path / "sections.json"
    config.write_text(json.dumps({"SETUP": "NoReorderNoCheck", "WORK": "ReorderFull"}))
    return config


@pytest.mark.parametrize("sections", [None, "SETUP=none", "json"])
def test_setup_section_left_unchecked(progs, tmp_path, capsys, sections):
    """sections.c persists an inconsistent state inside SETUP (as pmreorder_simple does): a
    violation, unless -x SETUP=none (NoReorderNoCheck) leaves that section unchecked."""
    pool = tmp_path / "pool"
    x = [] if sections is None else ["-x", _sections_json(tmp_path) if sections == "json"
                                     else sections]
    status, out = _run(capsys, "run", "--engine", "exhaustive", *x, "--check", sys.executable,
                       progs["check_sections"], "--", progs["sections"], "setup", pool)
    if sections is None:
        assert status == Status.VIOLATIONS and "last marker 'SETUP.BEGIN'" in out, out
    else:
        assert status == Status.OK, out
        assert "left unchecked on purpose" in out and "-x names" not in out


def test_unknown_section_is_noted_and_bad_engine_refused_before_the_run(progs, tmp_path, capsys):
    pool = tmp_path / "pool"
    status, out = _run(capsys, "run", "-x", "SETPU=none", "--check", sys.executable,
                       progs["check_sections"], "--", progs["sections"], "setup", pool)
    assert status == Status.VIOLATIONS and "note: -x names SETPU, which opens no section" in out
    pool.unlink()
    status, out = _run(capsys, "run", "-x", "SETUP=Bogus", "--check", "true", "--",
                       progs["sections"], "setup", pool)
    assert status == Status.USAGE and "unknown engine 'Bogus'" in out and not pool.exists()
    status, out = _run(capsys, "run", "--engine", "none", "--check", "true", "--",
                       progs["sections"], "setup", pool)
    assert status == Status.USAGE and "checks nothing" in out and not pool.exists()


def test_pmreorder_markers_reach_the_checker(progs, tmp_path, capsys):
    """A one-shot checker gets the markers seen so far in PMREORDER_MARKERS, as pmreorder sets
    them: the checker that accepts images inside SETUP passes without -x."""
    pool = tmp_path / "pool"
    status, out = _run(capsys, "run", "--engine", "exhaustive", "--check", sys.executable,
                       progs["check_sections"], "--markers", "--", progs["sections"], "setup",
                       pool)
    assert status == Status.OK, out


def test_crossed_markers_refused(progs, tmp_path, capsys):
    status, out = _run(capsys, "run", "--check", sys.executable, progs["check_sections"], "--",
                       progs["sections"], "crossed", tmp_path / "pool")
    assert status == Status.USAGE and "crossed markers: SETUP.END while WORK.BEGIN" in out, out


def _run_then_record(capsys, tmp_path, progs, mode, opts, check):
    """``sections MODE POOL`` under `crash run`, then recorded with `crash record` and its log
    explored with the same options: (run's status, log's status, the log's text, both outputs)."""
    pool = tmp_path / "pool"
    s_run, out = _run(capsys, "run", "--engine", "exhaustive", *opts, "--check", *check, "--",
                      progs["sections"], mode, pool)
    pool.unlink()
    log = tmp_path / "store.log"
    s_rec, out2 = _run(capsys, "record", "-o", log, "--initial-out", tmp_path / "initial", "--",
                       progs["sections"], mode, pool)
    assert s_rec == Status.OK, out2
    s_log, out3 = _run(capsys, log, "--engine", "exhaustive", *opts, "--initial",
                       tmp_path / "initial", "--check", *check)
    return s_run, s_log, log.read_text(), (out, out3)


@pytest.mark.parametrize("x", [[], ["-x", "SETUP=none"], ["-x", "json"],
                               ["--markers"]])
def test_record_round_trip_sections_same_verdict(progs, tmp_path, capsys, x):
    """A log written by crash record, read back with -x (or a PMREORDER_MARKERS checker), gives
    the verdict crash run gives."""
    if x[1:] == ["json"]:
        x = ["-x", str(_sections_json(tmp_path))]
    opts, check = (x, []) if x[:1] == ["-x"] else ([], x)
    check = [sys.executable, progs["check_sections"], *check]
    s_run, s_log, text, outs = _run_then_record(capsys, tmp_path, progs, "setup", opts, check)
    assert "|SETUP.BEGIN|" in text and "|SETUP.END|" in text
    assert s_run == s_log == (Status.OK if x else Status.VIOLATIONS), outs


@pytest.mark.parametrize("emit_log", [True, False])
def test_library_markers_with_pmreorder_emit_log(progs, tmp_path, capsys, monkeypatch, emit_log):
    """With PMREORDER_EMIT_LOG=1 (PMDK's switch) libpmem's copy and set functions are sections
    pmem_memset_persist.BEGIN/END, as pmemcheck logs them: -x can leave them unchecked, in crash
    run and in a log written by crash record alike."""
    if emit_log:
        monkeypatch.setenv(defaults.EMIT_LOG_ENV, "1")
    else:
        monkeypatch.delenv(defaults.EMIT_LOG_ENV, raising=False)
    x = ["-x", "pmem_memset_persist=NoReorderNoCheck"]
    check = [sys.executable, progs["check_sections"]]
    s_run, s_log, text, outs = _run_then_record(capsys, tmp_path, progs, "memset", x, check)
    assert ("|pmem_memset_persist.BEGIN|" in text) == emit_log
    assert s_run == s_log == (Status.OK if emit_log else Status.VIOLATIONS), outs
    if not emit_log:
        assert "-x names pmem_memset_persist, which opens no section" in outs[0]


@pytest.mark.parametrize("x", [[], ["-x", "SETUP=none"]])
def test_in_order_engine(progs, tmp_path, capsys, x):
    """pmreorder's NoReorderDoCheck (in-order): one image per crash point, every pending store
    durable in program order; it still sees SETUP's inconsistent state unless -x skips it, and
    never calls a run complete."""
    status, out = _run(capsys, "run", "--engine", "NoReorderDoCheck", *x, "--check",
                       sys.executable, progs["check_sections"], "--", progs["sections"], "setup",
                       tmp_path / "pool")
    assert status == (Status.INCOMPLETE if x else Status.VIOLATIONS), out
    assert "engine in-order" in out


def test_a_flush_made_durable_by_another_threads_fence_is_never_ok():
    """Such a flush leaves states unexplored: the run is incomplete (exit 3), never OK."""
    from types import SimpleNamespace

    from pmemkit.cli.crash_run import covers_the_model

    done = SimpleNamespace(complete=True)
    assert covers_the_model(done, SimpleNamespace(flushes_shared=0))
    assert not covers_the_model(done, SimpleNamespace(flushes_shared=1))
    assert not covers_the_model(SimpleNamespace(complete=False), SimpleNamespace(flushes_shared=0))
