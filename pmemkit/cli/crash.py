"""``pmemkit crash LOG --check CMD ...``: explore a pmemcheck store log with an external checker."""

from __future__ import annotations

import argparse
import json
import sys

from . import status
from .explore import add_explore_options, explore_checker, explore_engines, section_notes


def register(subparsers):
    p = subparsers.add_parser(
        "crash", help="explore the crash states of a store log, or of a C program (crash run)",
        description="Replay a pmemcheck store log (the input of PMDK's pmreorder), enumerate the "
                    "crash images the persistency model allows at every fence and at the end, and "
                    "run a checker on each distinct image. The checker gets the image files' paths "
                    "(one per registered pool file) as its last arguments; exit status 0 means "
                    "consistent (with --persistent: one process, line protocol, see "
                    "docs/crash.md). "
                    "Logs, pool files and pmreorder's options: docs/pmemcheck.md. To trace a C/C++ "
                    "program instead of reading a log: `pmemkit crash run --help`, "
                    "`pmemkit crash record --help`.",
        formatter_class=status.HelpFormatter,
        epilog=status.epilog("example: pmemkit crash store.log --engine exhaustive "
                             "--check ./check_pool --strict", ""))
    add = p.add_argument
    add("log", metavar="LOG",
        help="pmemcheck store log, as valgrind --tool=pmemcheck --log-stores=yes --log-file=LOG "
             "wrote it (with or without -q, stack traces and summary)")
    add_explore_options(p)
    add("--scheduler", metavar="ADDRESS",
        help="check on a Dask cluster (tcp://host:8786; needs pip install 'pmemkit[dask]'); "
             "the checker must exist at the same path on every worker")
    add("--checkpoint", metavar="FILE",
        help="record finished work in FILE; run again with the same FILE to resume")
    add("--failures", metavar="DIR",
        help="failure database: check the states that failed last time first, store new ones")
    add("--stop-at-first", action="store_true", help="stop everything at the first violation")
    add("--initial", action="append", default=[], metavar="[NAME=]FILE|zeros",
        help="a registered file's contents before the logged run (NAME=FILE for one of several "
             "files), or 'zeros'; default: each file the log names is read from its path, which "
             "must hold the pool as it was before the run (as pmreorder requires)")
    add("--replay", type=int, metavar="POINT",
        help="write the crash image of POINT (with --choice) to --output instead of exploring")
    add("--choice", default="{}", metavar="JSON", help="with --replay: the violation's choice")
    add("--view", default=None, help="with --replay: the violation's view (default: the model)")
    add("--space", type=int, default=0, help="with --replay: the violation's space (default: 0)")
    add("--output", metavar="DIR", help="with --replay: directory to write the image file(s) to")
    add("--check", nargs=argparse.REMAINDER, default=None, metavar="CMD",
        help="the checker program and its arguments (must come last); it gets every registered "
             "file's image path, in the log's order, as its last arguments")
    p.set_defaults(func=cmd_crash)


def _initial(args, trace):
    from ..errors import InvalidArgumentError

    if not args.initial:
        return None
    if args.initial == ["zeros"]:
        return "zeros"
    named, plain = {}, []
    for item in args.initial:
        name, eq, path = item.partition("=")
        if eq and name in {f.name for f in trace.files} | {f.basename for f in trace.files}:
            named[name] = path
        else:
            plain.append(item)
    if plain and (named or len(plain) > 1):
        raise InvalidArgumentError(
            f"--initial {plain[0]!r}: with several --initial give NAME=FILE, NAME being a file the "
            "log "
            f"registers ({', '.join(f.basename for f in trace.files) or 'none'})")
    if plain:
        return plain[0]
    return named


def _replay_command(args, v):
    import shlex

    parts = ["pmemkit", "crash", args.log, "--model", args.model]
    for item in args.initial:
        parts += ["--initial", item]
    choice = json.dumps({str(k): a for k, a in v.choice.items()})
    parts += ["--replay", str(v.point.index), "--choice", choice]
    if v.view != v.model:
        parts += ["--view", v.view]
    if v.space:
        parts += ["--space", str(v.space)]
    parts += ["--output", "DIR"]
    return " ".join(shlex.quote(p) for p in parts)


def cmd_crash(args, out=None):
    from .. import crash
    from ..crash import pmemcheck

    out = out or sys.stdout
    trace = pmemcheck.read_log(args.log)
    initial = trace.initial_image(_initial(args, trace))
    if args.replay is not None:
        return _cmd_replay(args, trace, initial, out)
    engine, sections = explore_engines(args)
    check = explore_checker(args, trace)
    client = _dask_client(args.scheduler) if args.scheduler else None
    try:
        report = crash.explore(trace, check, size=trace.size, initial=initial, model=args.model,
                               engine=engine, max_states=args.max_states, seed=args.seed,
                               workers=args.workers, executor=client, checkpoint=args.checkpoint,
                               failures=args.failures, stop_at_first=args.stop_at_first,
                               progress="auto", sections=sections)
    finally:
        if client is not None:
            client.close()
    pmemcheck.describe_stores(report, trace)
    for v in report.violations:
        v.command = _replay_command(args, v)
    notes = list(trace.notes) + section_notes(sections, trace)
    verdict = status.verdict(report.ok, report.complete)
    if args.json:
        json.dump(dict(report.as_dict(), status=int(verdict), notes=notes,
                       files=[{"name": f.name, "offset": f.offset, "size": f.size}
                              for f in trace.files]),
                  out, indent=2)
        out.write("\n")
    else:
        if len(trace.files) > 1:
            out.write("files (image offsets in the report): " + ", ".join(
                f"{f.name} at [{f.offset:#x}, {f.offset + f.size:#x})" for f in trace.files) + "\n")
        for n in notes:
            out.write(f"note: {n}\n")
        out.write(f"{report}\n")
    return verdict


def _dask_client(address):
    from ..errors import CrashError

    try:
        from distributed import Client
    except ImportError:
        raise CrashError(
            "--scheduler needs Dask distributed: pip install 'pmemkit[dask]'") from None
    try:
        return Client(address, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise CrashError(f"cannot reach the Dask scheduler at {address}: {exc}; start one with "
                         f"'dask scheduler' and give its address (tcp://host:8786)") from None


def _cmd_replay(args, trace, initial, out):
    import os

    from .. import crash
    from ..errors import InvalidArgumentError

    if not args.output:
        raise InvalidArgumentError("--replay needs --output DIR (where to write the image file(s))")
    try:
        choice = {int(k): int(a) for k, a in json.loads(args.choice).items()}
    except (ValueError, TypeError, AttributeError):
        raise InvalidArgumentError(
            f"--choice must be the JSON object the report printed, got {args.choice!r}") from None
    image = crash.replay(trace, args.replay, choice, model=args.model, view=args.view,
                         size=trace.size,
                         initial=initial, space=args.space)
    try:
        os.makedirs(args.output, exist_ok=True)
        for f, data in trace.split(image):
            path = os.path.join(args.output, f.basename)
            with open(path, "wb") as fh:
                fh.write(data)
            out.write(f"wrote {path} ({len(data)} bytes, the crash image of {f.name})\n")
    except OSError as exc:
        raise InvalidArgumentError(f"--output {args.output}: cannot write the image there "
                                   f"({exc.strerror or exc}); give a writable directory") from None
    return status.Status.OK
