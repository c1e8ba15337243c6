"""``pmemkit crash LOG --check CMD ...``: explore a pmemcheck store log with an external checker."""

from __future__ import annotations

import argparse
import json
import sys

from . import status


def register(subparsers):
    p = subparsers.add_parser(
        "crash", help="explore the crash states of a pmemcheck store log",
        description="Replay a pmemcheck store log (the input of PMDK's pmreorder), enumerate the crash "
                    "images the persistency model allows at every fence and at the end, and run a checker "
                    "on each distinct image. The checker gets the image file's path as its last argument; "
                    "exit status 0 means consistent (with --persistent: one process, line protocol, see "
                    "docs/crash.md). To trace a C/C++ program instead of reading a log: "
                    "`pmemkit crash run --help`, `pmemkit crash record --help`.",
        formatter_class=status.HelpFormatter,
        epilog=status.epilog("example: pmemkit crash store.log --engine exhaustive --check ./check_pool "
                             "--strict", ""))
    p.add_argument("log", metavar="LOG", help="pmemcheck store log (valgrind --tool=pmemcheck --log-stores=yes)")
    p.add_argument("--model", default="x86", choices=("x86", "x86-line", "eadr"),
                   help="persistency model (default: x86, independent 8-byte units)")
    p.add_argument("--engine", default="auto",
                   help="auto, exhaustive, bounded[:K], random[:N] or prefix (default: auto)")
    p.add_argument("--max-states", type=int, default=None, metavar="N", help="stop after N crash states")
    p.add_argument("--seed", type=int, default=0, help="seed of the random engine (default: 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="checker processes (default: 1)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="check on a Dask cluster (tcp://host:8786; needs pip install 'pmemkit[dask]'); "
                        "the checker must exist at the same path on every worker")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="record finished work in FILE; run again with the same FILE to resume")
    p.add_argument("--failures", metavar="DIR",
                   help="failure database: check the states that failed last time first, store new ones")
    p.add_argument("--stop-at-first", action="store_true", help="stop everything at the first violation")
    p.add_argument("--initial", metavar="FILE", help="the file's contents before the logged run, or 'zeros' (default: zeros)")
    p.add_argument("--persistent", action="store_true",
                   help="start the checker once and send it image paths over stdin (line protocol)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the report")
    p.add_argument("--check", nargs=argparse.REMAINDER, required=True, metavar="CMD",
                   help="the checker program and its arguments (must come last)")
    p.set_defaults(func=cmd_crash)


def cmd_crash(args, out=None):
    from .. import crash
    from ..crash import pmemcheck
    from ..errors import InvalidArgumentError

    out = out or sys.stdout
    if not args.check:
        raise InvalidArgumentError("--check needs a program to run, e.g. --check ./check_pool")
    trace = pmemcheck.read_log(args.log)
    initial = None
    if args.initial and args.initial != "zeros":
        from pathlib import Path
        try:
            initial = Path(args.initial).read_bytes()
        except OSError as exc:
            raise InvalidArgumentError(f"cannot read --initial {args.initial!r}: {exc.strerror}") from None
    size = max(trace.size, len(initial) if initial else 0)
    check = crash.PersistentChecker(args.check) if args.persistent else args.check
    client = _dask_client(args.scheduler) if args.scheduler else None
    try:
        report = crash.explore(trace, check, size=size, initial=initial, model=args.model,
                               engine=args.engine, max_states=args.max_states, seed=args.seed,
                               workers=args.workers, executor=client, checkpoint=args.checkpoint,
                               failures=args.failures, stop_at_first=args.stop_at_first,
                               progress="auto")
    finally:
        if client is not None:
            client.close()
    if args.json:
        json.dump(dict(report.as_dict(), status=int(status.verdict(report.ok, report.complete))),
                  out, indent=2)
        out.write("\n")
    else:
        out.write(f"{report}\n")
    return status.verdict(report.ok, report.complete)


def _dask_client(address):
    from ..errors import CrashError

    try:
        from distributed import Client
    except ImportError:
        raise CrashError("--scheduler needs Dask distributed: pip install 'pmemkit[dask]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise CrashError(f"cannot reach the Dask scheduler at {address}: {exc}; start one with "
                         f"'dask scheduler' and give its address (tcp://host:8786)") from None
