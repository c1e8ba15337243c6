"""``memmap=`` on the kernel command line: split it as the kernel does, parse every item."""

from __future__ import annotations

from ..errors import InvalidArgumentError
from ..units import parse_memmap
from .model import MemmapArg


def split_cmdline(text):
    """Split a kernel command line the way the kernel does (double quotes group)."""
    args, cur, quoted, has = [], [], False, False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            has = True
        elif ch.isspace() and not quoted:
            if has:
                args.append("".join(cur))
            cur, has = [], False
        else:
            cur.append(ch)
            has = True
    if has:
        args.append("".join(cur))
    return args


def parse_cmdline_memmaps(cmdline):
    """Every ``memmap=`` item on a kernel command line, parsed and validated.

    Arguments after ``--`` belong to init and are ignored. A ``memmap=`` value
    may hold several comma-separated items (the kernel accepts that); items
    without ``!`` reserve memory of other kinds and are listed as ``"other"``.
    Invalid pmem items and overlapping ranges are reported in ``error``.
    """
    out = []
    accepted = []
    for arg in split_cmdline(cmdline):
        if arg == "--":
            break
        if not arg.startswith("memmap="):
            continue
        for item in arg[len("memmap="):].split(","):
            text = f"memmap={item}"
            if "!" not in item:
                out.append(MemmapArg(text, "other", None, None))
                continue
            try:
                mm = parse_memmap(item)
            except InvalidArgumentError as exc:
                out.append(MemmapArg(text, "pmem", None, str(exc)))
                continue
            clash = next((a for a in accepted if mm.start < a.end and a.start < mm.end), None)
            if clash is not None:
                why = f"{text} overlaps memmap={clash}; pmem ranges must not overlap"
                out.append(MemmapArg(text, "pmem", mm, why))
                continue
            accepted.append(mm)
            out.append(MemmapArg(text, "pmem", mm, None))
    return out
