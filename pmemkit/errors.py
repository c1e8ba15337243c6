"""One exception hierarchy for pmemkit.

Every module raises from here, so a caller can catch :class:`PmemError` for
"anything pmemkit refused", or a precise child for one kind of user error.
Each class also derives from the built-in exception a Python programmer would
expect (``ValueError`` for bad arguments, ``OSError`` for the environment), so
code written against the standard library keeps working.

Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class PmemError(Exception):
    """Base class of every error pmemkit raises on purpose.

    Like pyudev's errors, it carries what the raising code knew as typed fields, None when
    unknown: ``path`` (the file, device or directory), ``lba`` (a BTT block), ``offset`` (a byte
    offset in a region or image). The message says the same in words.
    """

    def __init__(self, *args, path=None, lba=None, offset=None):
        super().__init__(*args)
        self.path = path
        self.lba = lba
        self.offset = offset


# --- arguments ---------------------------------------------------------------

class InvalidArgumentError(PmemError, ValueError):
    """An argument has the wrong type, size or value (e.g. a size that does not parse)."""


class OutOfRangeError(InvalidArgumentError, IndexError):
    """An offset/length (or LBA) falls outside the object it addresses, or is negative."""


# --- mappings ----------------------------------------------------------------

class MappingError(PmemError, OSError):
    """A file could not be mapped as asked (missing, directory, read-only, too small...)."""


class ClosedMappingError(PmemError, ValueError):
    """A mapping (or BTT, or traced region) was used after ``close()``."""


class ReadOnlyError(PmemError, OSError):
    """A store, flush or persist was attempted on memory opened read-only (``writable=False``)."""


class NotPmemError(MappingError):
    """Persistent-memory semantics (MAP_SYNC / DAX) were required but are not available."""


class UnsupportedFlushError(PmemError, RuntimeError):
    """A flush method was requested that this CPU or this build cannot perform."""


# --- discovery ---------------------------------------------------------------

class DiscoveryError(PmemError, OSError):
    """The machine's sysfs/procfs could not be read or parsed."""


# --- VM harness --------------------------------------------------------------

class VmError(PmemError, RuntimeError):
    """Base class of VM-harness errors."""


class VmConfigError(VmError, InvalidArgumentError):
    """A VM option is invalid (memmap range that does not fit, unknown filesystem, ...)."""


class MissingToolError(VmError):
    """A host tool or package the harness needs (qemu-system, a kernel, debootstrap...) is
    missing."""


class GuestError(VmError):
    """The guest failed to boot, timed out, or could not set up emulated pmem."""


class GuestLayerError(VmError):
    """A project's guest layer could not be built: a Debian package that does not exist
    (``packages``), a pip requirement that failed to install (``requirement``, with pip's output
    in the message), or pmemkit's native extension that cannot be made for the guest's Python."""

    def __init__(self, message, *, packages=(), requirement=None):
        super().__init__(message)
        self.packages = tuple(packages)
        self.requirement = requirement


# --- crash simulator ---------------------------------------------------------

class CrashError(PmemError):
    """Base class of crash-simulator errors (bad trace, bad log, bad checker)."""


class TraceFormatError(CrashError, InvalidArgumentError):
    """A pmemcheck/pmreorder store log (or a pmemkit trace) could not be parsed."""


class CheckerError(CrashError):
    """An external checker failed instead of giving a verdict: not found, killed by a signal,
    timed out, or it broke the line protocol. Not a violation: nothing was learned about the
    image."""


class InterposeError(CrashError):
    """A program cannot be traced by pmemkit's interposer (statically linked, no persistence calls
    reached it, several pool files, a forked child wrote the pool): refused, no verdict."""


class ProgramTimeoutError(InterposeError):
    """The traced program did not finish within the time given and was killed: no verdict."""


class TraceIncompleteError(InterposeError):
    """The initial image plus the traced stores is not the file the program left behind."""


class StateSpaceTooLarge(CrashError, InvalidArgumentError):
    """An exhaustive exploration was asked of more crash states than can be checked.

    ``count`` is the number of states, ``limit`` the most an exhaustive run accepts.
    """

    def __init__(self, message, *, count=None, limit=None):
        super().__init__(message)
        self.count = count
        self.limit = limit


class CheckpointError(CrashError, InvalidArgumentError):
    """A ``--checkpoint`` file or failure database belongs to another run, or cannot be read."""


# --- control flow inside the crash simulator ------------------------------------
# These never reach a caller of pmemkit: they carry a verdict or stop a run.

class CheckFailed(Exception):
    """A checker adapter's verdict "inconsistent"; its text is the whole message.

    Raised by pmemkit's external and persistent checkers (and usable by any
    checker); :func:`pmemkit.crash.explore` records it as a violation.
    """


class StateLimitReached(Exception):
    """``max_states`` crash states were visited: exploration stops, the report is incomplete."""


class ReplayPointReached(Exception):
    """:func:`pmemkit.crash.replay` has built its image: the rest of the workload is skipped."""


class RangeDone(Exception):
    """An executor's task has checked the last state of its range: enumeration stops there."""


# --- BTT ---------------------------------------------------------------------

class BttError(PmemError):
    """Base class of BTT errors."""


class BttCorruptError(BttError, OSError):
    """The on-media BTT is damaged (bad signature, checksum, offsets, map or flog)."""


class BttIOError(BttError, OSError):
    """A block read failed the way the kernel returns EIO (e.g. an error-flagged block)."""


class BttReadOnlyError(BttError, ReadOnlyError):
    """A write was attempted on a BTT (or arena) that was opened read-only."""
