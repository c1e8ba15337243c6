"""Crash-consistency simulation: trace stores, flushes and fences; explore every crash state; check
each.

>>> from pmemkit import crash
>>> report = crash.explore(workload, check, size=4096)      # doctest: +SKIP
>>> print(report)                                           # doctest: +SKIP

See docs/crash.md.
"""

from .api import explore
from .checkers import ExternalChecker, FilesChecker, PersistentChecker
from .executors import replay_state
from .explore import require_explorable, state_space
from .replay import replay
from .report import CrashPoint, Report, Violation
from .trace import MODELS, TracedRegion

__all__ = ["explore", "replay", "replay_state", "require_explorable", "state_space", "Report",
           "Violation", "CrashPoint", "TracedRegion", "ExternalChecker", "FilesChecker",
           "PersistentChecker", "MODELS"]
