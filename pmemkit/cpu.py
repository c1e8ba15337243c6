"""CPU cache-flush features: CLFLUSH, CLFLUSHOPT, CLWB (and the vector units for copies).

The native extension reads them with ``cpuid``; without it they come from the
``flags`` line of ``/proc/cpuinfo``. :func:`best_flush_method` names the
instruction libpmem would pick: CLWB > CLFLUSHOPT > CLFLUSH.
"""

from __future__ import annotations

from functools import cache

from ._linux import cpuinfo

#: Flush instructions, best first (libpmem's order of preference).
FLUSH_INSTRUCTIONS = ("clwb", "clflushopt", "clflush")
#: Every flush method a mapping can use.
FLUSH_METHODS = FLUSH_INSTRUCTIONS + ("none", "msync")

_FEATURES = ("clflush", "clflushopt", "clwb", "sse2", "avx", "avx2", "avx512f")


def native():
    """The native extension module ``pmemkit._flush``, or ``None`` when it was not built.

    The one answer to "is the extension built" (``pmemkit doctor`` and the mappings ask it).
    """
    try:
        from . import _flush
    except ImportError:
        return None
    return _flush


@cache
def features():
    """``{"clwb": bool, "clflushopt": bool, "clflush": bool, "sse2": ..., "avx": ..., ...}``.

    From ``cpuid`` (native extension) when available, else from /proc/cpuinfo.
    """
    mod = native()
    if mod is not None:
        return dict(mod.cpu_features())
    flags = cpuinfo.cpu_flags() or frozenset()
    return {name: name in flags for name in _FEATURES}


def feature_source():
    """``"cpuid"`` or ``"/proc/cpuinfo"``: where :func:`features` got its answer."""
    return "cpuid" if native() is not None else "/proc/cpuinfo"


def flush_instructions():
    """The flush instructions this CPU has, best first."""
    feats = features()
    return [name for name in FLUSH_INSTRUCTIONS if feats.get(name)]


def best_flush_method():
    """The best cache-line flush the CPU offers *and this build can issue*.

    ``"clwb"``, ``"clflushopt"`` or ``"clflush"``; ``"msync"`` when the native
    extension is missing (no instruction can be issued from pure Python) or the CPU
    has none of them.
    """
    if native() is None:
        return "msync"
    have = flush_instructions()
    return have[0] if have else "msync"


def available_methods():
    """Every flush method a mapping can be forced to here (see ``PMEMKIT_FLUSH``)."""
    mod = native()
    if mod is None:
        return ["msync"]
    return list(mod.methods())
