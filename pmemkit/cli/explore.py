"""The exploration options `pmemkit crash LOG` and `pmemkit crash run` share, and what they mean:
the engine, the per-marker-section engines (pmreorder's ``-x``) and the checker."""

from __future__ import annotations

from .. import defaults
from . import status


def add_explore_options(p):
    """The exploration options `pmemkit crash LOG` and `pmemkit crash run` share."""
    add = p.add_argument
    add("--model", default="x86", choices=defaults.CRASH_MODELS,
        help="persistency model (default: x86, independent 8-byte units)")
    add("--engine", default="auto",
        help="auto, exhaustive, bounded[:K], random[:N], prefix or in-order; pmreorder's engine "
             "names work too (default: auto)")
    add("-x", "--sections", metavar="MARKER=ENGINE,...|FILE",
        help="an engine per marker section (MARKER.BEGIN to MARKER.END), as pmreorder's -x: "
             "MARKER=ENGINE pairs or a JSON file {\"MARKER\": \"ENGINE\"}; library markers "
             "(pmem_memset_persist, with PMREORDER_EMIT_LOG=1) work; engine 'none' "
             "(NoReorderNoCheck) leaves a section unchecked")
    add("--max-states", type=status.count, default=None, metavar="N",
        help="stop after N crash states")
    add("--seed", type=int, default=0, help="seed of the random engine (default: 0)")
    add("--workers", type=status.count, default=1, metavar="N",
        help="checker processes (default: 1)")
    add("--persistent", action="store_true",
        help="start the checker once and send it image paths over stdin (line protocol)")
    add("--json", action="store_true", help="print a JSON summary instead of the report")


def explore_engines(args):
    """``(engine, sections)`` for ``explore()`` from the shared options (checked before any work).

    ``-x`` gives each marker section its engine (pmreorder's rule: the innermost configured open
    section wins, else ``--engine``); engine ``none`` leaves a section unchecked.
    """
    from ..crash import pmemcheck
    from ..errors import InvalidArgumentError

    if not args.check:
        raise InvalidArgumentError("--check needs a program to run, e.g. --check ./check_pool")
    engine = pmemcheck.engine_name(args.engine)
    sections = None
    if args.sections:
        sections = pmemcheck.Sections(pmemcheck.parse_sections(args.sections), args.engine)
    elif engine is None:
        raise InvalidArgumentError(f"--engine {args.engine} checks nothing; give -x MARKER=ENGINE "
                                   "for the sections to check, or another engine")
    return engine or "auto", sections


def explore_checker(args, trace):
    """The checker of the shared options for ``trace``: a one-shot checker gets the markers seen
    so far in ``PMREORDER_MARKERS`` when the trace has markers. Crossed markers are refused."""
    from .. import crash
    from ..crash import pmemcheck
    from ..errors import InvalidArgumentError

    pmemcheck.check_markers(trace.markers)
    if not args.persistent:
        return crash.FilesChecker(args.check, trace.layout(), markers=bool(trace.markers))
    if len(trace.files) > 1:
        raise InvalidArgumentError(
            f"the log registers {len(trace.files)} files; --persistent sends one image path per "
            "line: use a one-shot checker, which gets every file's path")
    return crash.PersistentChecker(args.check, info=True)


def section_notes(sections, trace):
    """Notes on ``-x`` markers that open no section in ``trace`` (a typo is likely)."""
    if sections is None:
        return []
    return [f"-x names {m}, which opens no section in this trace" for m in sections.unused(trace)]
