"""``explore``: check its arguments, then run the exploration in this process
(:mod:`pmemkit.crash.explore`) or in two phases on an executor
(:mod:`pmemkit.crash.executors`)."""

from __future__ import annotations

import time

from .. import defaults
from ..errors import InvalidArgumentError
from .engines import EngineSpec
from .executors import explore_on_executor
from .explore import _Explorer, _load_initial, _new_region, _positive_int, _warnings, image_base
from .report import SAMPLED_WARNING, Report, skipped_warning
from .trace import MODELS


def explore(workload, check, size=None, initial=None, model="x86", engine="auto",
            max_states=None, seed=0, workers=1, *, store_points=False, k=None, samples=None,
            progress=False, on_states=None, executor=None, checkpoint=None, failures=None,
            stop_at_first=False, sections=None):
    """Run ``workload(pm)`` on a traced region; check every crash image the model allows.

    ``check(image)`` or ``check(image, point)`` (a :class:`CrashPoint`) returns
    False or raises for an inconsistent image; an argv list runs a program with
    the image file's path appended (exit 0 = consistent); a
    :class:`PersistentChecker` checks many images in one process.

    ``size`` defaults to ``len(initial)`` or 4096. ``engine`` is ``"auto"``,
    ``"exhaustive"``, ``"bounded"`` (``k``), ``"random"`` (``samples``) or
    ``"prefix"``; ``"bounded:3"``/``"random:500"`` also work. ``store_points``
    adds a crash point after every store.

    Quiet by default: ``progress=True`` draws a tqdm bar on stderr (tqdm must be
    installed), ``progress="auto"`` only when stderr is a terminal and tqdm is
    there (what the CLI asks for). ``on_states(states, unique_images,
    crash_points)`` is called at most ten times a second while exploring.

    ``executor`` (any :class:`concurrent.futures.Executor`, or a
    ``distributed.Client``) checks ranges of crash states in parallel, on this
    machine or a cluster (:mod:`pmemkit.crash.executors`); ``checkpoint`` (a file)
    makes the run resumable; ``failures`` (a directory) checks the states that
    failed last time first; ``stop_at_first`` stops everything at the first
    violation. Any of these, and ``workers > 1``, runs the two-phase exploration, with
    ``workers`` processes when no executor is given: workers rebuild their images from
    the trace, no image is sent to them.

    ``sections(point)`` (optional) picks the engine of each crash point from its
    :class:`CrashPoint` (e.g. by the marker section it is in): an engine name as
    above, ``"in-order"`` (only the image with every pending store durable), or
    None to leave the point unchecked (counted in the report's warnings).
    """
    if sections is not None and not callable(sections):
        raise InvalidArgumentError(
            f"sections must be a callable (CrashPoint) -> engine name, got {sections!r}")
    if not callable(workload):
        raise InvalidArgumentError(
            f"workload must be callable (it receives the region), got {workload!r}")
    if model not in MODELS:
        raise InvalidArgumentError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    spec = EngineSpec.parse(engine, k, samples)
    if max_states is not None and not _positive_int(max_states):
        raise InvalidArgumentError(
            f"max_states must be a positive integer or None, got {max_states!r}")
    if not _positive_int(workers):
        raise InvalidArgumentError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InvalidArgumentError(f"seed must be an integer, got {seed!r}")
    if progress not in (None, False, True, "auto"):
        raise InvalidArgumentError(
            f"progress must be False (quiet), True (a bar on stderr) or 'auto' (a bar on a "
            f"terminal), got {progress!r}; to be called back, pass on_states=callable")
    if on_states is not None and not callable(on_states):
        raise InvalidArgumentError(
            f"on_states must be a callable (states, unique_images, crash_points), "
            f"got {on_states!r}")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise InvalidArgumentError(
            f"executor must be a concurrent.futures.Executor or a distributed.Client, got "
            f"{type(executor).__name__}")
    initial = _load_initial(initial)
    if size is None:
        size = len(initial) if initial is not None else defaults.CRASH_DEFAULT_SIZE
    if (executor is not None or checkpoint is not None or failures is not None or stop_at_first
            or workers > 1):
        return explore_on_executor(
            workload, check, size=size, initial=initial, model=model, spec=spec,
            max_states=max_states, seed=seed, store_points=store_points, workers=workers,
            executor=executor, checkpoint=checkpoint, failures=failures,
            stop_at_first=bool(stop_at_first), on_states=on_states, sections=sections)
    ex = _Explorer(check, size, model, spec, max_states, seed, progress, on_states)
    ex.store_points = bool(store_points)
    ex.base = image_base(initial, size)
    ex.sections = sections
    t0 = time.perf_counter()
    region = _new_region(size, initial, model, ex.on_point, store_points)
    ex.start_progress()
    try:
        try:
            workload(region)
            region.finish()
        finally:
            ex.close()
        elapsed = time.perf_counter() - t0
        warnings = _warnings(ex.last_state, region.clean_flushes)
    finally:
        ex.last_state = None
        region.close()
    stopped = not ex.complete
    if stopped:
        warnings.append(
            f"stopped after max_states={max_states} crash states: the verdict is incomplete")
    if ex.skipped:
        warnings.append(skipped_warning(ex.skipped))
    if ex.sampled and not stopped:
        warnings.append(SAMPLED_WARNING)
    return Report(violations=ex.violations, states_checked=ex.states, unique_images=ex.unique,
                  crash_points=ex.points, warnings=warnings, model=model, engine=str(spec),
                  engines=dict(ex.engines), seed=seed,
                  complete=ex.complete and not ex.sampled,
                  violation_count=ex.violation_count, elapsed=elapsed, states_possible=ex.possible,
                  states_covered=ex.covered, stopped=stopped)
