"""explore() leaves nothing behind, refuses nonsense arguments, and is quiet unless asked."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from pmemkit import crash, defaults
from pmemkit.crash import checkers
from pmemkit.errors import CrashError, InvalidArgumentError

CHECKER = textwrap.dedent("""\
    import sys
    data = open(sys.argv[-1], "rb").read()
    sys.exit(1 if data[0] == 0xFF else 0)
""")

PERSISTENT = textwrap.dedent("""\
    import sys
    for line in sys.stdin:
        data = open(line.rstrip("\\n").split("\\t")[0], "rb").read()
        if data[1] == 0xEE:
            sys.exit(3)                      # dies instead of answering
        print("1 bad" if data[0] == 0xFF else "0", flush=True)
""")


@pytest.fixture
def tempdirs(tmp_path, monkeypatch):
    """The places image files go (/dev/shm, else the temp dir), redirected to a private pair so
    that other programs' files cannot blur the before/after listing."""
    shm, tmp = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    tmp.mkdir()
    monkeypatch.setattr(checkers, "_temp_base", lambda: str(shm))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return shm, tmp


def _entries(dirs):
    return {(str(d), n) for d in dirs for n in os.listdir(d)}


@pytest.fixture
def programs(tmp_path):
    ext = tmp_path / "check.py"
    ext.write_text(CHECKER)
    per = tmp_path / "persist.py"
    per.write_text(PERSISTENT)
    return [sys.executable, str(ext)], [sys.executable, str(per)]


def _workload(first=0x01, second=0x02):
    def workload(pm):
        for i in range(6):
            pm.write(i * 64, bytes([first if i == 0 else 0x10 + i]) * 8)
            pm.flush(i * 64, 8)
        pm.write(1, bytes([second]))
        pm.persist(0, 64)
    return workload


class _DyingChecker(crash.ExternalChecker):
    """Kills the worker process it runs in after writing the image file."""

    def __call__(self, image):
        super().__call__(image)
        if os.getpid() != PARENT:
            os._exit(3)
        return True


PARENT = os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_no_temp_file_outlives_a_run(programs, tempdirs, workers):
    external, persistent = programs
    before = _entries(tempdirs)
    assert before == set()
    # success, violation, with an external and a persistent checker
    assert crash.explore(_workload(), external, workers=workers).ok
    assert not crash.explore(_workload(first=0xFF), external, workers=workers).ok
    assert crash.explore(_workload(), crash.PersistentChecker(persistent), workers=workers).ok
    assert not crash.explore(_workload(first=0xFF), crash.PersistentChecker(persistent),
                             workers=workers).ok
    # the checker crashes
    with pytest.raises(CrashError):
        crash.explore(_workload(second=0xEE), crash.PersistentChecker(persistent), workers=workers)

    # Ctrl-C in the middle of the workload
    def interrupted(pm):
        _workload()(pm)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crash.explore(interrupted, external, workers=workers)
    with pytest.raises(KeyboardInterrupt):
        crash.explore(interrupted, crash.PersistentChecker(persistent), workers=workers)
    if workers > 1:     # a worker process dies
        with pytest.raises(CrashError, match="worker process died"):
            crash.explore(_workload(), _DyingChecker(external[:]), workers=workers)
    assert _entries(tempdirs) == before


def test_worker_death_in_a_subprocess_leaves_nothing(tmp_path, programs, tempdirs):
    """The same with the checker's worker killed by a signal, in a process of its own."""
    external, _ = programs
    shm, tmp = tempdirs
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""\
        import os, signal, tempfile
        from pmemkit import crash
        from pmemkit.crash import checkers
        from pmemkit.errors import CrashError
        checkers._temp_base = lambda: {str(shm)!r}
        tempfile.tempdir = {str(tmp)!r}

        class Killer(crash.ExternalChecker):
            def __call__(self, image):
                super().__call__(image)
                os.kill(os.getpid(), signal.SIGKILL)

        def workload(pm):
            for i in range(6):
                pm.write(i * 64, b"\\x01" * 8)
            pm.persist(0, 512)

        try:
            crash.explore(workload, Killer({external!r}), workers=2)
        except CrashError as exc:
            print("refused:", exc)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert "refused: a worker process died" in out.stdout, out.stderr
    assert _entries(tempdirs) == set()


def test_a_checker_never_closed_leaves_nothing(tmp_path, programs, tempdirs):
    """A checker called directly and dropped without close(), in this process and in one that
    simply exits: its directory goes with it."""
    external, persistent = programs
    check = crash.ExternalChecker(external)
    assert check(bytes(64))
    assert _entries(tempdirs)
    del check
    assert _entries(tempdirs) == set()
    shm, tmp = tempdirs
    script = tmp_path / "unclosed.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, tempfile
        from pmemkit import crash
        from pmemkit.crash import checkers
        checkers._temp_base = lambda: {str(shm)!r}
        tempfile.tempdir = {str(tmp)!r}
        keep = [crash.ExternalChecker({external!r}), crash.PersistentChecker({persistent!r})]
        assert all(c(bytes(64)) for c in keep)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert _entries(tempdirs) == set()


KILLED_RUN = textwrap.dedent("""\
    import os, signal, sys, tempfile
    from pmemkit import crash
    from pmemkit.crash import checkers
    checkers._temp_base = lambda: sys.argv[1]
    tempfile.tempdir = sys.argv[2]
    how, argv = sys.argv[3], sys.argv[4:]

    class Killer(crash.ExternalChecker):
        def __call__(self, image):
            super().__call__(image)
            if os.getpid() != PARENT:                      # a worker: note its pid
                with open(os.path.join(sys.argv[2], "worker.pid"), "w") as f:
                    f.write(str(os.getpid()))
            os.kill(PARENT, getattr(signal, how))          # the explorer itself is killed
            signal.pause()

    PARENT = os.getpid()

    def workload(pm):
        pm.write(0, b"\\x01" * 8)
        pm.persist(0, 8)

    crash.explore(workload, Killer(argv), workers=int(os.environ.get("WORKERS", "1")))
""")


@pytest.mark.parametrize("how, workers", [("SIGKILL", 1), ("SIGTERM", 1), ("SIGKILL", 2)])
def test_a_killed_run_leaves_a_directory_the_next_run_removes(tmp_path, programs, tempdirs, how,
                                                              workers):
    """A run killed before its cleanup can remove nothing itself; its directory is unlocked, so
    the next run (here: one with an external checker) removes it. Live runs' directories stay."""
    external, persistent = programs
    shm, tmp = tempdirs
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    out = subprocess.run([sys.executable, str(script), str(shm), str(tmp), how, *external],
                         capture_output=True, text=True, timeout=120, start_new_session=True,
                         env=dict(os.environ, WORKERS=str(workers)))
    assert out.returncode == -getattr(signal, how), out.stderr
    if workers > 1:     # its worker processes end with it (they would wait for work for ever)
        worker = int((tmp / "worker.pid").read_text())
        (tmp / "worker.pid").unlink()
        try:
            for _ in range(100):
                os.kill(worker, 0)
                time.sleep(0.1)
            os.killpg(os.getpgid(worker), signal.SIGKILL)   # its process group: every worker
            pytest.fail(f"worker process {worker} outlived the explorer that started it")
        except ProcessLookupError:
            pass
    left = os.listdir(shm)
    assert len(left) == 1 and left[0].startswith(defaults.CRASH_TEMP_PREFIX)
    stale = shm / left[0]
    for _ in range(100):    # every process of the killed run is gone: its lock with them
        fd = checkers._lock_dir(str(stale), blocking=False)
        if fd is not None:
            os.close(fd)
            break
        time.sleep(0.1)
    else:
        pytest.fail("the killed run's directory is still locked")
    # a run in progress (its checker prepared, as explore() does) holds its directory
    live = crash.PersistentChecker(persistent)
    live.before_fork()
    try:
        live_dir = live._file.dir
        old = os.stat(stale).st_mtime - defaults.CRASH_STALE_TEMP_SECONDS - 1
        os.utime(live_dir, (old, old))
        assert crash.explore(_workload(), external).ok          # only young directories: kept
        assert stale.exists()
        os.utime(stale, (old, old))
        assert crash.explore(_workload(), external).ok
        assert not stale.exists()                                # unlocked and old: removed
        assert os.path.isdir(live_dir)                           # locked by this process: kept
        assert checkers.reap_stale_dirs(str(shm), now=old + 10 ** 6) == []
    finally:
        live.close()
    assert _entries(tempdirs) == set()


@pytest.mark.parametrize("kwargs", [
    {"samples": 0}, {"engine": "random:0"}, {"k": 0}, {"engine": "bounded", "k": 0},
    {"workers": True}, {"max_states": True}, {"seed": True}, {"progress": 42},
    {"progress": lambda *a: None}, {"on_states": 42}, {"size": 2 ** 40}, {"size": "big"},
])
def test_nonsense_arguments_are_refused(kwargs):
    calls = []
    with pytest.raises(InvalidArgumentError):
        crash.explore(lambda pm: pm.persist(0, 8), lambda img: calls.append(1), **kwargs)
    assert not calls


def test_unpicklable_record_with_workers_says_what_to_do():
    def workload(pm):
        pm.record("key", lambda: None)
        pm.write(0, b"x")
        pm.persist(0, 1)

    with pytest.raises(InvalidArgumentError, match="picklable"):
        crash.explore(workload, lambda img, point: True, workers=2)
    assert crash.explore(workload, lambda img, point: True, workers=1).ok


def test_explore_is_quiet_by_default(capfd):
    calls = []
    crash.explore(_workload(), lambda img: True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    crash.explore(_workload(), lambda img: True, on_states=lambda *a: calls.append(a))
    assert calls and calls[-1][0] > 0


def test_library_works_without_tqdm(tmp_path):
    """tqdm is optional: explore() runs without it; progress=True says how to get a bar."""
    blocker = tmp_path / "tqdm.py"
    blocker.write_text("raise ImportError('no tqdm here')\n")
    code = textwrap.dedent("""\
        import sys
        from pmemkit import crash
        from pmemkit.errors import InvalidArgumentError
        w = lambda pm: pm.write(0, b"x") or pm.persist(0, 1)
        assert crash.explore(w, lambda img: True).ok
        assert crash.explore(w, lambda img: True, progress="auto").ok
        try:
            crash.explore(w, lambda img: True, progress=True)
        except InvalidArgumentError as exc:
            print("refused:", exc)
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused: progress=True draws a bar with tqdm" in out.stdout
