"""``pmemkit crash run|record ... -- PROGRAM [ARGS...]``: crash-test an unmodified C/C++ program.

``run`` traces the program under pmemkit's LD_PRELOAD interposer, checks the trace is
complete, explores every crash image of its pool file and runs the checker on each;
``record`` writes the trace as a pmemcheck store log (pmreorder's input) instead.
Everything before ``--`` is pmemkit's, everything after it is the program's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InvalidArgumentError, TraceIncompleteError
from . import status
from .explore import add_explore_options, explore_checker, explore_engines, section_notes

SUBCOMMANDS = ("run", "record")


def _parser(name):
    prog = f"pmemkit crash {name}"
    if name == "run":
        p = argparse.ArgumentParser(
            prog=prog, formatter_class=status.HelpFormatter,
            usage=f"{prog} [options] [--check CMD ...] -- PROGRAM [ARGS ...]",
            description="Run PROGRAM under pmemkit's LD_PRELOAD interposer (stores, flushes and "
                        "fences of libpmem, libpmem2, libpmemobj or plain mmap + msync are "
                        "traced), check that the initial pool image plus every traced store equals "
                        "the file the program left behind, then enumerate every crash image the "
                        "persistency model allows and run the checker on each. The checker gets "
                        "the image file's path as its last argument; exit status 0 means "
                        "consistent (with --persistent: one process, line protocol with the crash "
                        "point, markers and pmemkit_record() records; see docs/crash-c.md).",
            epilog=status.epilog("example: pmemkit crash run --check ./check_pool -- ./my_program "
                                 "pool.obj", ""))
        add_explore_options(p)
    else:
        p = argparse.ArgumentParser(
            prog=prog, formatter_class=status.HelpFormatter,
            usage=f"{prog} -o LOG [--initial-out FILE] -- PROGRAM [ARGS ...]",
            description="Run PROGRAM under pmemkit's LD_PRELOAD interposer and write its pool's "
                        "trace as a pmemcheck store log (the input of PMDK's pmreorder and of "
                        "`pmemkit crash LOG`). The log has no place for the pool's contents before "
                        "the run: --initial-out saves them (give them back with `pmemkit crash LOG "
                        "--initial FILE`).",
            epilog=status.epilog("example: pmemkit crash record -o store.log --initial-out "
                                 "pool.initial -- ./my_program pool.obj", ""))
        p.add_argument("-o", "--output", required=True, metavar="LOG",
                       help="the store log to write")
        p.add_argument("--initial-out", metavar="FILE",
                       help="write the pool's contents before the run here")
    p.add_argument("--timeout", type=status.seconds, default=None, metavar="SECONDS",
                   help="kill the program after this long (default: no limit)")
    if name == "run":
        p.add_argument("--check", nargs=argparse.REMAINDER, required=True, metavar="CMD",
                       help="the checker program and its arguments (last before --)")
    return p


def main(name, argv, out=None):
    """Parse and run ``pmemkit crash NAME ARGV``; returns the exit status."""
    argv = list(argv)
    if "--" not in argv:
        if any(a in ("-h", "--help") for a in argv):
            _parser(name).parse_args(["--help"])
        raise InvalidArgumentError(
            f"pmemkit crash {name}: put -- before the program, e.g. pmemkit crash {name} "
            f"{'--check ./check_pool ' if name == 'run' else '-o store.log '}-- ./my_program "
            "pool.obj")
    cut = argv.index("--")
    args = _parser(name).parse_args(argv[:cut])
    args.program = argv[cut + 1:]
    if not args.program:
        raise InvalidArgumentError(f"pmemkit crash {name}: give the program to run after --")
    out = out or sys.stdout
    return cmd_run(args, out) if name == "run" else cmd_record(args, out)


def _trace(args, out):
    from ..crash import native

    prog = native.run(args.program, timeout=args.timeout)
    t = prog.trace
    pool = t.pool()
    out.write(f"traced {' '.join(args.program)}: {prog.describe_exit()}; pool {pool.path} "
              f"({len(prog.final)} bytes): {pool.stores} store(s), {t.flushes} flush(es), "
              f"{t.fences} fence(s), {len(t.threads)} thread(s), {len(t.records)} record(s)\n")
    try:
        work = prog.workload()
    except TraceIncompleteError as exc:
        out.write(f"pmemkit: {exc}\n")
        raise
    out.write(f"trace complete: the initial image plus the {pool.stores} traced store(s) is the "
              f"file the program left behind\n")
    if work.flushes_kept_pending:
        out.write(f"note: {work.flushes_kept_pending} flush(es) stay pending across another "
                  f"thread's fence (a fence orders only its own thread's flushes: see "
                  f"docs/crash-c.md)\n")
    if work.flushes_shared:
        out.write(f"note: {work.flushes_shared} flush(es) of one thread were made durable by "
                  f"another thread's fence (stores to their lines came after them: see "
                  f"docs/crash-c.md)\n")
    return prog, work


def covers_the_model(report, work):
    """Whether ``report`` explored every crash state the model allows for the traced program.

    A flush of one thread that another thread's fence made durable (``work.flushes_shared``:
    stores to its lines followed it, so it could not be kept pending) leaves out the states in
    which that flush had not completed: the run is then incomplete, never OK.
    """
    return report.complete and not work.flushes_shared


def cmd_run(args, out):
    from .. import crash

    engine, sections = explore_engines(args)    # a bad option is an error before the program runs
    try:
        prog, work = _trace(args, out)
    except TraceIncompleteError:
        return status.Status.INCOMPLETE
    t = prog.trace
    traced = {"argv": args.program, "returncode": prog.returncode, "pool": t.pool().path,
              "stores": t.pool().stores, "flushes": t.flushes, "fences": t.fences,
              "threads": len(t.threads), "records": len(t.records)}
    check = explore_checker(args, work)
    report = crash.explore(work, check, size=work.size, initial=work.initial, model=args.model,
                           engine=engine, max_states=args.max_states, seed=args.seed,
                           workers=args.workers, sections=sections)
    notes = section_notes(sections, work)
    complete = covers_the_model(report, work)
    if report.complete and not complete:
        notes.append(f"INCOMPLETE: {work.flushes_shared} flush(es) were made durable by another "
                     f"thread's fence, which x86 does not promise; the crash states in which they "
                     f"are not yet durable were not explored")
    verdict = status.verdict(report.ok, complete)
    if args.json:
        json.dump(dict(report.as_dict(), complete=complete, status=int(verdict), notes=notes,
                       program=traced), out, indent=2)
        out.write("\n")
    else:
        for n in notes:
            out.write(f"note: {n}\n")
        out.write(f"{report}\n")
    return verdict


def cmd_record(args, out):
    from ..crash import pmemcheck

    for option, where in (("-o", args.output), ("--initial-out", args.initial_out)):
        if where is not None and not Path(where).absolute().parent.is_dir():
            raise InvalidArgumentError(f"{option} {where}: its directory does not exist; give a "
                                       f"path in an existing directory (checked before the run)")
    try:
        prog, work = _trace(args, out)
    except TraceIncompleteError:
        return status.Status.INCOMPLETE
    path = Path(args.output)
    try:
        # the pool's full path, as pmemcheck writes it: pmreorder opens that file
        pmemcheck.write_log(work.exportable(), path, name=prog.trace.pool().path)
        if args.initial_out:
            Path(args.initial_out).write_bytes(work.initial)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {exc.filename!r}: {exc.strerror}") from None
    init = f" --initial {args.initial_out}" if args.initial_out else ""
    out.write(f"wrote {path} ({work.stats}); explore it with: pmemkit crash {path}{init} --check "
              "CMD\n")
    return status.Status.OK
