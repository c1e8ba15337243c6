"""``pmemkit`` - the command line, a thin layer over the library.

Each sub-command family lives in its own module here and exposes
``register(subparsers)``, which adds its parsers and sets ``func`` (called with
the parsed arguments, returning the exit status). Nothing below this package
prints to the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from ..errors import PmemError
from . import crash_run
from .status import Status
from .status import for_error as status_for_error

#: Sub-command modules, in the order ``pmemkit --help`` lists them.
COMMAND_MODULES = ("core", "crash", "btt", "vm")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pmemkit",
        description="Persistent-memory emulation, mappings, crash simulation and BTT.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _own_parser(argv):
    """``pmemkit crash run|record ... -- PROGRAM``: a command whose parser is its own
    (cli/crash_run.py)."""
    if argv[:1] == ["crash"] and argv[1:2] and argv[1] in crash_run.SUBCOMMANDS:
        return lambda: crash_run.main(argv[1], argv[2:])
    return None


def _terminated(signum, frame):
    """SIGTERM (``timeout``, a CI job cancelled) ends the command like Ctrl-C: cleanup runs (temp
    files, checker processes). A forked worker that inherited this handler just dies."""
    if os.getpid() != _MAIN_PID[0]:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


_MAIN_PID = [None]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    own = _own_parser(argv)
    args = None if own else build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        _MAIN_PID[0] = os.getpid()
        signal.signal(signal.SIGTERM, _terminated)
    try:
        status = own() if own else args.func(args)
    except PmemError as exc:
        print(f"pmemkit: error: {exc}", file=sys.stderr)
        return int(status_for_error(exc))
    except KeyboardInterrupt:
        print("pmemkit: interrupted", file=sys.stderr)
        return int(Status.INTERRUPTED)
    except BrokenPipeError:
        # the reader went away (e.g. `pmemkit info | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
