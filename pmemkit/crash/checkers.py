"""Checkers: in-process callables, external programs, and persistent checker processes.

Persistent checker line protocol (one process checks many images)
------------------------------------------------------------------
pmemkit starts the program once, with ``PMEMKIT_CHECK_PROTOCOL=1`` in its
environment, and for every crash image:

1. writes the image to a file (the same path is reused; the file is rewritten
   for each image - read it before replying);
2. sends one line on the program's stdin: the file's path, followed - only when
   the checker was created with ``info=True`` - by a TAB and a JSON object
   ``{"point": 3, "kind": "fence", "marker": "commit", "records": [[key, value], ...]}``;
3. reads one line from the program's stdout: ``0`` (optionally followed by a
   space and any text) means consistent; anything else (say ``1 torn record``)
   means inconsistent, and the line is the message.

When exploration ends pmemkit closes stdin; the program should then exit.
Flush stdout after every reply.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import mmap
import os
import select
import signal
import shutil
import subprocess
import tempfile
import time
import weakref
from typing import NamedTuple

from .. import defaults
from ..errors import CheckerError, CheckFailed, InvalidArgumentError

try:
    from ._dirty import PAGE_SIZE as PAGE
    from ._dirty import sync_sparse
except ImportError:  # pragma: no cover - built by setup.py; without it every image is written whole
    PAGE, sync_sparse = mmap.PAGESIZE, None

#: Seconds an external checker may take on one image before it is considered hung.
CHECK_TIMEOUT = 60


def _argv(argv):
    if isinstance(argv, (str, bytes)):
        raise InvalidArgumentError(
            f"an external checker is an argv list such as ['./check', '--strict'], not a string "
            f"({argv!r}); pmemkit never runs a shell")
    argv = [os.fspath(a) for a in argv]
    if not argv:
        raise InvalidArgumentError("the checker's argv list is empty; give the program to run")
    if shutil.which(argv[0]) is None:
        raise CheckerError(f"checker program {argv[0]!r} was not found or is not executable; "
                         f"give a path or a command on PATH")
    return argv


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _temp_base():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _lock_dir(path, blocking):
    """Open the directory ``path`` and take an exclusive flock on it: the descriptor, or None when
    another live process holds the lock (or the directory is gone). The kernel drops the lock when
    the last process holding the descriptor exits, however it exits (forked workers inherit it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def reap_stale_dirs(base=None, now=None):
    """Remove the image directories of runs that were killed before they could clean up.

    A directory is stale when no process holds its lock (its owner and the owner's workers are
    gone) and it has not changed for :data:`~pmemkit.defaults.CRASH_STALE_TEMP_SECONDS`. Returns
    the paths removed. Called before every new directory is made.
    """
    base = base or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(defaults.CRASH_TEMP_PREFIX):
            continue
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid()
                or now - st.st_mtime < defaults.CRASH_STALE_TEMP_SECONDS):
            continue
        fd = _lock_dir(path, blocking=False)
        if fd is None:
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(path)
    return removed


def _remove_dir(path, lock, owner):
    """Remove the image directory ``path`` and drop its lock, in the process that made it only
    (a forked worker that garbage-collects its copy must not touch the owner's files)."""
    if os.getpid() != owner:
        return
    shutil.rmtree(path, ignore_errors=True)
    if lock is not None:
        try:
            os.close(lock)
        except OSError:
            pass


class ImageChanges(NamedTuple):
    """What changed in an image since the previous one its source handed out.

    Image number ``seq`` of ``source`` (any object, compared by identity) differs from image
    ``seq - 1`` of the same source only in the pages ``pages`` (numbers of
    :data:`PAGE`-byte pages; None: any page may differ). A checker that takes it
    (``takes_changes``) rewrites only those pages of its image file, plus the pages the checker
    program itself may have written; when the image it wrote last is not ``seq - 1`` of
    ``source``, the hint is ignored.
    """

    source: object
    seq: int
    pages: frozenset | None

    def shifted(self, offset, size):
        """The same changes seen in the bytes ``[offset, offset + size)`` of the image (pages
        counted from ``offset``); every page may differ when ``offset`` is not page aligned."""
        if self.pages is None or offset % PAGE:
            return self._replace(pages=None)
        first, end = offset // PAGE, -(-(offset + size) // PAGE)
        return self._replace(pages=frozenset(p - first for p in self.pages if first <= p < end))


def _holes(size):
    """Whether an image file of ``size`` bytes is kept sparse (its holes looked for)."""
    return size >= defaults.CRASH_NOTED_IMAGE_BYTES


class _ImageFile:
    """The file a checker program reads: rewritten only where an image differs from it.

    The file stays mapped and sparse: zero pages are never written into it, so a page that
    never held data is a hole (one that did is zeroed in place when it must be). Given the
    pages an image changed since the previous one (:class:`ImageChanges`), only those pages
    are compared, plus every page that holds data (``SEEK_DATA``): whatever the checker program
    wrote through its own mapping (even zeros, even into a hole) allocated its page, so it is
    found and restored. Without that hint every page is compared. A file replaced, truncated or
    resized behind pmemkit's back is written again (only its non-zero pages). Where the file
    system reports no holes, every page counts as data: slower, never wrong. Below
    :data:`~pmemkit.defaults.CRASH_NOTED_IMAGE_BYTES` every page is compared.

    The file lives in a directory of the process that owns the checker:
    :meth:`prepare` creates it before worker processes are forked, workers write
    ``image-<pid>`` files inside it, and the owner's :meth:`cleanup` removes them
    all, even those of a worker that died. A process that finds no directory of
    its owner makes its own. The owner holds a lock on the directory for as long
    as it (or a forked worker) lives, so a run killed before its cleanup (SIGKILL,
    SIGTERM) leaves a directory nobody holds, which the next run removes
    (:func:`reap_stale_dirs`).
    """

    def __init__(self):
        self.owner = os.getpid()
        self.dir = None
        self.path = None
        self.path_pid = None
        self._map = None
        self._fd = None
        self._nonzero = None    # per page: 1 where the file held data after the last write
        self._last = None       # (source, seq) of the image written last, when it had a hint
        self._ident = None
        self._lock = None
        self._finalizer = None

    def prepare(self):
        if self.dir is None:
            self.owner = os.getpid()
            base = _temp_base()
            reap_stale_dirs(base)
            self.dir = tempfile.mkdtemp(prefix=defaults.CRASH_TEMP_PREFIX, dir=base)
            self._lock = _lock_dir(self.dir, blocking=True)
            # a checker used without close() (called directly, dropped): removed when it is
            # garbage-collected or at interpreter exit
            self._finalizer = weakref.finalize(self, _remove_dir, self.dir, self._lock,
                                               self.owner)

    def write(self, image, changes=None):
        """Make the file hold ``image`` (an :class:`ImageChanges` hint or None); its path."""
        pid = os.getpid()
        if self.path is None or self.path_pid != pid:
            self._map = self._fd = None     # a forked copy of the owner's: not ours to close
            self._last = None
            if self.dir is None or (pid != self.owner and not os.path.isdir(self.dir)):
                self.dir = None
                lock, self._lock = self._lock, None
                if lock is not None and pid != self.owner:
                    os.close(lock)      # a forked copy of the owner's lock: the owner keeps its own
                self.prepare()
            self.path = os.path.join(self.dir, f"image-{pid}")
            self.path_pid = pid
        image = memoryview(image).cast("B")
        pages = None
        if changes is not None and self._last == (changes.source, changes.seq - 1):
            pages = changes.pages
        self._last = None
        m = self._map
        if m is not None and len(m) == image.nbytes and self._same_file():
            sync_sparse(self._fd, m, image, self._nonzero, pages, _holes(image.nbytes))
        else:
            self._create(image)
        if changes is not None:
            self._last = (changes.source, changes.seq)
        return self.path

    def _create(self, image):
        """Write the file afresh: a sparse file holding ``image``'s non-zero pages."""
        self._unmap()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            if not image.nbytes or sync_sparse is None:
                with open(fd, "wb", closefd=False) as f:
                    f.write(image)
                return
            os.ftruncate(fd, image.nbytes)
            m = mmap.mmap(fd, image.nbytes)
            nonzero = bytearray(-(-image.nbytes // PAGE))
            sync_sparse(fd, m, image, nonzero, None, _holes(image.nbytes))
            st = os.fstat(fd)
            self._map, self._fd, self._nonzero = m, fd, nonzero
            self._ident = (st.st_ino, st.st_size)
            fd = None
        finally:
            if fd is not None:
                os.close(fd)

    def _same_file(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_ino, st.st_size) == self._ident

    def _unmap(self):
        m, self._map = self._map, None
        fd, self._fd = self._fd, None
        self._last = None
        if m is not None:
            m.close()
        if fd is not None:
            os.close(fd)

    def cleanup(self):
        pid = os.getpid()
        if self.path_pid == pid:
            self._unmap()
        self._map = self._fd = None
        if self.dir is not None and pid == self.owner:
            self._finalizer()
            self.dir = self._lock = None
        elif self.path is not None and self.path_pid == pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        self.path = self.path_pid = None


class ExternalChecker:
    """Run ``argv + [image_path]`` per image; exit status 0 means consistent (pmreorder's
    convention)."""

    wants_info = False
    #: takes ``changes=`` (:class:`ImageChanges`): the explorer says which pages changed
    takes_changes = True

    def __init__(self, argv, timeout=CHECK_TIMEOUT):
        self.argv = _argv(argv)
        self.timeout = timeout
        self._file = _ImageFile()

    def __call__(self, image, changes=None):
        return self._run([self._file.write(image, changes)])

    def _run(self, paths, env=None):
        """Run the checker on the image file(s) ``paths`` (appended to argv): True, or raise."""
        try:
            proc = subprocess.run(self.argv + list(paths), stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=self.timeout, env=env)
        except subprocess.TimeoutExpired:
            raise CheckerError(
                f"checker {self.argv[0]!r} took more than {self.timeout} s on one image") from None
        except OSError as exc:
            raise CheckerError(f"cannot run checker {self.argv[0]!r}: {exc}") from None
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            tail = f": {out[-1]}" if out else ""
            if proc.returncode < 0:
                raise CheckerError(
                    f"checker {self.argv[0]!r} was killed by "
                    f"{_signal_name(-proc.returncode)}{tail}; "
                    f"a checker must exit 0 (consistent) or non-zero (inconsistent), so this is a "
                    f"checker error, not a verdict")
            raise CheckFailed(f"checker exited with status {proc.returncode}{tail}")
        return True

    def before_fork(self):
        """Called by explore() before it forks worker processes (see :class:`_ImageFile`)."""
        self._file.prepare()

    def close(self):
        self._file.cleanup()

    def __getstate__(self):
        return {"argv": self.argv, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["argv"], state["timeout"])


class FilesChecker(ExternalChecker):
    """An external checker for an image made of several files (a pmemcheck log's pools).

    ``layout`` lists ``(name, offset, size)``: each file's bytes ``image[offset:offset + size]``
    are written to a file of their own and every path is appended to ``argv``, in ``layout``'s
    order (one file: pmreorder's convention). With ``markers=True`` the markers seen so far
    (what the workload recorded under :data:`~pmemkit.defaults.MARKERS_ENV`, joined by ``|``)
    are in the checker's environment as ``PMREORDER_MARKERS``, as pmreorder sets them (the same
    image is then checked again under different markers).
    """

    def __init__(self, argv, layout, timeout=CHECK_TIMEOUT, markers=False):
        super().__init__(argv, timeout)
        self.wants_info = bool(markers)
        self.layout = [(str(n), int(o), int(z)) for n, o, z in layout]
        if not self.layout:
            raise InvalidArgumentError("FilesChecker needs at least one (name, offset, size) file")
        self._files = [_ImageFile() for _ in self.layout]

    def __call__(self, image, info=None, changes=None):
        view = memoryview(image).cast("B")
        paths = [f.write(view[o:o + z], None if changes is None else changes.shifted(o, z))
                 for f, (_, o, z) in zip(self._files, self.layout, strict=True)]
        env = None
        if info is not None:
            env = dict(os.environ)
            env[defaults.MARKERS_ENV] = str(info.state.get(defaults.MARKERS_ENV, ""))
        return self._run(paths, env)

    def before_fork(self):
        for f in self._files:
            f.prepare()

    def close(self):
        for f in self._files:
            f.cleanup()

    def __getstate__(self):
        return {"argv": self.argv, "timeout": self.timeout, "layout": self.layout,
                "markers": self.wants_info}

    def __setstate__(self, state):
        self.__init__(state["argv"], state["layout"], state["timeout"], state["markers"])


class PersistentChecker:
    """A checker process that stays running and checks images over the line protocol above."""

    takes_changes = True

    def __init__(self, argv, info=False, timeout=CHECK_TIMEOUT):
        self.argv = _argv(argv)
        self.wants_info = bool(info)
        self.timeout = timeout
        self._proc = None
        self._pid = None
        self._file = _ImageFile()

    def _start(self):
        env = {**os.environ, defaults.CHECK_PROTOCOL_ENV: "1"}
        # stderr goes to a file: a pipe nobody reads would block a chatty checker
        self._err = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=self._err, env=env, text=True, bufsize=1)
        except OSError as exc:
            self._err.close()
            raise CheckerError(f"cannot start checker {self.argv[0]!r}: {exc}") from None
        self._pid = os.getpid()

    def _stop(self, proc, kill):
        """End ``proc`` (politely unless ``kill``), reap it, close its pipes; return its stderr
        tail."""
        try:
            if kill:
                proc.kill()
            else:
                proc.stdin.close()
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - it would not stop: force it
            proc.kill()
            proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass
        err = ""
        try:
            self._err.seek(0)
            lines = self._err.read().decode(errors="replace").strip().splitlines()
            err = f": {lines[-1]}" if lines else ""
            self._err.close()
        except Exception:  # noqa: BLE001 - best-effort diagnostics
            pass
        return err

    def __call__(self, image, info=None, changes=None):
        if self._proc is None or self._pid != os.getpid():
            self._start()
        path = self._file.write(image, changes)
        line = path
        if self.wants_info and info is not None:
            line += "\t" + json.dumps({"point": info.index, "kind": info.kind,
                                       "marker": info.marker,
                                       "records": [list(r) for r in info.records]}, default=repr)
        proc = self._proc
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self._proc = None
                err = self._stop(proc, kill=True)
                raise CheckerError(f"persistent checker {self.argv[0]!r} did not answer within "
                                 f"{self.timeout} s; it was killed{err}")
            reply = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            self._proc = None
            err = self._stop(proc, kill=True)
            raise CheckerError(f"persistent checker {self.argv[0]!r} exited or closed stdout "
                             f"instead of answering{err}; see the protocol in docs/crash.md")
        reply = reply.rstrip("\n")
        if reply == "0" or reply.startswith("0 "):
            return True
        raise CheckFailed(f"checker said: {reply}")

    def before_fork(self):
        """Called by explore() before it forks worker processes (see :class:`_ImageFile`)."""
        self._file.prepare()

    def close(self):
        proc, self._proc = self._proc, None
        if proc is not None and self._pid == os.getpid():
            self._stop(proc, kill=False)
        self._file.cleanup()

    def __getstate__(self):
        return {"argv": self.argv, "info": self.wants_info, "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["argv"], state["info"], state["timeout"])


def as_checker(check):
    if isinstance(check, (list, tuple)):
        return ExternalChecker(check)
    if callable(check):
        return check
    raise InvalidArgumentError(
        f"check must be a callable (image[, point]) or an argv list, got {type(check).__name__}")


def wants_info(check):
    """True when the checker takes a second argument (the crash point)."""
    flag = getattr(check, "wants_info", None)
    if flag is not None:
        return bool(flag)
    try:
        sig = inspect.signature(check)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None)
    except TypeError:
        return False
    return True


def takes_changes(check):
    """True when the checker takes ``changes=`` (:class:`ImageChanges`): it says so
    (``takes_changes``) and its ``__call__`` (a subclass may override it) has that parameter."""
    if not getattr(check, "takes_changes", False):
        return False
    try:
        return "changes" in inspect.signature(check).parameters
    except (TypeError, ValueError):
        return False
