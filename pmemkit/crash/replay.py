"""Rebuild exactly one crash image from a violation's point and choice."""

from __future__ import annotations

from ..errors import CrashError, InvalidArgumentError, ReplayPointReached
from .model import spaces
from .trace import UNIT, TracedRegion


def replay(workload, point=None, choice=None, *, model="x86", view=None, size=None, initial=None,
           store_points=False, space=0):
    """Re-run ``workload`` and return the crash image (bytes) at ``point`` with ``choice``.

    ``point`` may be a :class:`~pmemkit.crash.Violation` (its point, choice, model
    and size are used). Otherwise give the crash point index and the choice dict
    ``{dimension: alternative}`` printed in the report, and the same ``model``,
    ``size`` and ``initial`` as the exploration. ``view="prefix"`` for violations
    found by the prefix engine.
    """
    from .explore import _load_initial

    if hasattr(point, "choice") and hasattr(point, "point"):
        v = point
        point, choice, model, view, space = v.point.index, v.choice, v.model, v.view, v.space
        store_points = v.store_points
        size = v.size if size is None else size
    if not isinstance(point, int) or point < 0:
        raise InvalidArgumentError("point must be a crash point index (int >= 0) or a Violation, "
                                   f"got {point!r}")
    choice = dict(choice or {})
    initial = _load_initial(initial)
    if size is None:
        from .. import defaults
        size = len(initial) if initial is not None else defaults.CRASH_DEFAULT_SIZE
    view = view or model
    out = {}
    counter = [0]

    def on_point(state):
        i = counter[0]
        counter[0] += 1
        if i != point:
            return
        found = spaces(state, view)
        if not 0 <= space < len(found):
            raise InvalidArgumentError(
                f"space {space} does not exist at crash point {point} ({len(found)} space(s))")
        img = bytearray(state.durable)
        for u, val in found[space].base:
            img[u * UNIT:u * UNIT + UNIT] = val
        dims = found[space].dims
        for j, a in choice.items():
            if not 0 <= j < len(dims) or not 1 <= a <= len(dims[j]):
                raise InvalidArgumentError(
                    f"choice {choice!r} does not fit crash point {point} ({len(dims)} "
                    "dimension(s)); was the workload, model or initial image different?")
            for u, val in dims[j][a - 1].patch:
                img[u * UNIT:u * UNIT + UNIT] = val
        out["image"] = bytes(img[:size])
        raise ReplayPointReached

    region = TracedRegion(size, initial, model=model, on_crash_point=on_point,
                          store_points=store_points, keep_trace=False)
    try:
        workload(region)
        region.finish()
    except ReplayPointReached:
        pass
    finally:
        region.close()
    if "image" not in out:
        raise CrashError(f"the workload has only {counter[0]} crash point(s); point {point} does "
                         "not exist")
    return out["image"]
