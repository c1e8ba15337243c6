"""The exit statuses of every ``pmemkit`` command that gives a verdict: one table, one home.

``pmemkit crash`` (and ``crash run``/``record``), ``pmemkit btt check``,
``pmemkit btt crash-suite`` and ``pmemkit vm powercut`` exit with these codes; each
prints :data:`EPILOG` at the end of its ``--help`` and docs/exit-status.md shows the
same table (a test pins them equal). The argparse helpers these commands share
(the formatter, the ``count`` and ``seconds`` types) live here too.
"""

from __future__ import annotations

import argparse
import enum

from ..errors import CheckerError, PmemError, ProgramTimeoutError, VmConfigError, VmError


class Status(enum.IntEnum):
    """Exit status of a verdict-giving command."""

    #: Everything was checked and nothing is wrong.
    OK = 0
    #: At least one violation (an inconsistent crash image, a damaged structure) was found.
    VIOLATIONS = 1
    #: Bad arguments or bad input (unreadable or malformed log, image or option): no verdict.
    USAGE = 2
    #: Nothing wrong was found, but not everything was checked (a limit or sampling cut the
    #: search short): not an OK.
    INCOMPLETE = 3
    #: The checker, the guest or another tool failed (crashed, killed by a signal, timed out,
    #: missing): no verdict.
    TOOL_ERROR = 4
    #: Interrupted (Ctrl-C).
    INTERRUPTED = 130


#: What each status means, in the order ``--help`` and the docs list them.
MEANINGS = (
    (Status.OK, "OK: everything was checked and nothing is wrong"),
    (Status.VIOLATIONS, "violations found (the report says which)"),
    (Status.USAGE, "usage or input error (bad option, unreadable or malformed input): no verdict"),
    (Status.INCOMPLETE, "no violation found, but the check was cut short or sampled: not an OK"),
    (Status.TOOL_ERROR, "the checker or another tool failed (crash, signal, timeout): no verdict"),
    (Status.INTERRUPTED, "interrupted"),
)


def _rows(codes):
    return "\n".join(f"  {int(code):<4} {text}" for code, text in MEANINGS if code in codes)


#: The table as it ends each verdict-giving command's ``--help``.
EPILOG = "exit status:\n" + _rows(Status)


#: The end of ``pmemkit vm run`` and ``pmemkit vm test``'s ``--help``: the guest command gives the
#: verdict, pmemkit's own failures use the table's codes.
PASSTHROUGH_EPILOG = (
    "exit status:\n"
    "  the guest command's own exit status, except when pmemkit fails first:\n"
    + _rows((Status.USAGE, Status.TOOL_ERROR, Status.INTERRUPTED)))


def verdict(ok, complete=True):
    """The status of a finished check: violations win, then incompleteness."""
    if not ok:
        return Status.VIOLATIONS
    return Status.OK if complete else Status.INCOMPLETE


def for_error(exc):
    """The status of a run that ended with the :class:`~pmemkit.errors.PmemError` ``exc``."""
    if isinstance(exc, (CheckerError, ProgramTimeoutError)):
        return Status.TOOL_ERROR
    if isinstance(exc, VmError) and not isinstance(exc, VmConfigError):
        return Status.TOOL_ERROR
    if isinstance(exc, PmemError):
        return Status.USAGE
    raise TypeError(f"not a pmemkit error: {exc!r}")  # pragma: no cover - programming error


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that multi-line text (the status table) keeps its lines."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def count(text, minimum=1):
    """An argparse type: an integer of at least ``minimum`` (anything else is a usage error)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small: give at least {minimum}")
    return value


def seconds(text):
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def epilog(*before):
    """``--help`` epilog: any lines of ``before`` (examples), then the exit-status table."""
    return "\n".join([*before, EPILOG]) if before else EPILOG
