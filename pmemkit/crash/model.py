"""Persistency models: which images a crash at a given point can leave.

The images of a crash point form a union of *spaces*. A space is a *base*
patch laid over the durable image plus a list of independent *dimensions*;
each dimension is a list of *alternatives* besides "nothing more became
durable here" (alternative 0, the base). An alternative is a patch - ``(unit,
8-byte value)`` pairs to lay over the base - with its fingerprint delta and the
stores it makes durable. Every combination of one alternative per dimension is
a crash image the model allows; inside one space distinct combinations give
distinct images, because each dimension's alternatives are deduplicated (by
fingerprint) and dimensions touch disjoint units.

The events of a *group* (stores whose order was not observed: writes through
``buffer``/``array()`` views between two looks, or :meth:`TracedRegion.unordered`;
one event per changed unit) happened in some unknown order, so a prefix of the
program order may hold any subset of a group's events.

* ``x86`` - one dimension per pending 8-byte unit; its alternatives are the
  distinct values the unit held after each pending store (8-byte power-fail
  atomicity, units independent: the order of stores does not matter).
* ``x86-line`` - one dimension per cache line; alternatives are the line after
  each program-order prefix of its pending stores, a group's events in the line
  in any subset (a line is written back as a snapshot).
* ``eadr`` - the program-order prefixes of all pending stores (caches are
  persistent; stores drain in TSO order); a group is any subset of its events on
  top of everything before it. Without groups this is one space of one dimension.
* ``prefix`` (the ``prefix`` engine, any model): as ``eadr``.
* ``x86-end`` (explored besides ``x86`` when ``x86`` cannot be explored
  completely): the ``x86`` images seen from the fully persisted side - a base of
  every unit's final value, and per unit the other values it can hold, so the
  bounded engine's ``k`` counts units that did *not* become durable.
"""

from __future__ import annotations

from itertools import combinations

from .trace import UNIT, unit_hash


class Alternative:
    __slots__ = ("patch", "delta", "stores", "step", "unstep")

    def __init__(self, patch, delta, stores, step=None, unstep=None):
        self.patch = patch      # tuple of (unit, value), over the space's base
        self.delta = delta      # fingerprint delta vs the space's base
        self.stores = stores    # store indices whose data this makes (partly) durable
        # prefix chains: the (unit, value) writes leading here from the previous
        # alternative of the dimension, and back
        self.step = step
        self.unstep = unstep

    def __repr__(self):
        return f"Alternative(units={[u for u, _ in self.patch]}, stores={self.stores})"


class Space:
    """A product of dimensions over a base patch (see the module text)."""

    __slots__ = ("view", "dims", "base", "base_delta", "base_stores")

    def __init__(self, view, dims, base=(), base_delta=0, base_stores=()):
        self.view = view
        self.dims = dims
        self.base = base                # tuple of (unit, value) over the durable image
        self.base_delta = base_delta    # fingerprint delta of the base vs the durable image
        self.base_stores = base_stores

    def count(self):
        return state_count(self.dims)


class _Hasher:
    """unit_hash with a cache (one per crash point)."""

    __slots__ = ("cache",)

    def __init__(self):
        self.cache = {}

    def __call__(self, u, v):
        key = (u, v)
        h = self.cache.get(key)
        if h is None:
            h = self.cache[key] = unit_hash(u, v)
        return h


def _old(durable, u):
    return bytes(durable[u * UNIT:u * UNIT + UNIT])


def _segments(events):
    """Split events (program order) into runs: ``(group or None, [events])``."""
    out = []
    for ev in events:
        g = ev.group
        if out and g is not None and out[-1][0] == g:
            out[-1][1].append(ev)
        elif g is None and out and out[-1][0] is None:
            out[-1][1].append(ev)
        else:
            out.append((g, [ev]))
    return out


def _chain(events, floor, cached_hash):
    """Alternatives "the first j events are durable" for one line or the whole region.

    ``floor(u)`` is alternative 0's value of unit ``u``. Ordered events extend a
    prefix chain (``step``/``unstep`` move between neighbours by writing only the
    units that change); a group adds every non-empty subset of its events.
    Deduplicated by image.
    """
    alts = []
    seen = {0}
    cur = {}            # unit -> value, only units that differ from the floor
    value_now = {}      # unit -> value after the events so far
    delta = 0
    stores = set()

    def set_unit(u, v):
        nonlocal delta
        prev = value_now.get(u)
        if prev is None:
            prev = floor(u)
        if prev == v:
            return prev
        delta ^= cached_hash(u, prev) ^ cached_hash(u, v)
        if v == floor(u):
            cur.pop(u, None)
        else:
            cur[u] = v
        value_now[u] = v
        return prev

    for group, evs in _segments(events):
        if group is None:
            step, unstep = {}, {}
            for ev in evs:
                u = ev.unit
                prev = set_unit(u, ev.value)
                if prev != ev.value:
                    if u not in unstep:
                        unstep[u] = prev
                    step[u] = ev.value
                stores.add(ev.store)
                if delta in seen:
                    continue
                seen.add(delta)
                alts.append(Alternative(tuple(cur.items()), delta, tuple(sorted(stores)),
                                        tuple(step.items()), tuple(unstep.items())))
                step, unstep = {}, {}
            continue
        before = (dict(cur), dict(value_now), delta, set(stores))
        for r in range(1, len(evs) + 1):
            for combo in combinations(evs, r):
                cur, value_now, delta, stores = (dict(before[0]), dict(before[1]), before[2],
                                                 set(before[3]))
                for ev in combo:
                    set_unit(ev.unit, ev.value)
                    stores.add(ev.store)
                if delta in seen:
                    continue
                seen.add(delta)
                alts.append(Alternative(tuple(cur.items()), delta, tuple(sorted(stores))))
        # the last combination is the whole group: the chain goes on from there
    return alts


def _unit_values(events, old):
    """``[(value, stores)]`` a unit can hold at a crash (not ``old``), in order, deduplicated,
    and its final value."""
    out = []
    seen = {old}
    for ev in events:
        if ev.value not in seen:
            seen.add(ev.value)
            out.append((ev.value, (ev.store,)))
    return out, (events[-1].value if events else old)


def spaces(state, view):
    """The spaces of a crash at ``state`` (a :class:`~.trace.PendingState`) under ``view``."""
    durable = state.durable
    cached_hash = _Hasher()
    if view in ("x86", "x86-end"):
        per_unit = {}
        for _, events, _ in state.lines:
            for ev in events:
                per_unit.setdefault(ev.unit, []).append(ev)
        dims = []
        base, base_delta, base_stores = [], 0, set()
        for u in sorted(per_unit):
            old = _old(durable, u)
            values, final = _unit_values(per_unit[u], old)
            if view == "x86":
                hold = cached_hash(u, old)
                alts = [Alternative(((u, v),), hold ^ cached_hash(u, v), st) for v, st in values]
            else:
                if final != old:
                    base.append((u, final))
                    base_delta ^= cached_hash(u, old) ^ cached_hash(u, final)
                    base_stores.update(ev.store for ev in per_unit[u])
                hold = cached_hash(u, final)
                alts = [Alternative(((u, v),), hold ^ cached_hash(u, v), st)
                        for v, st in [(old, ())] + values if v != final]
            if alts:
                dims.append(alts)
        return [Space(view, dims, tuple(base), base_delta, tuple(sorted(base_stores)))]
    if view == "x86-line":
        dims = []
        for _, events, _ in state.lines:
            alts = _chain(events, lambda u: _old(durable, u), cached_hash)
            if alts:
                dims.append(alts)
        return [Space(view, dims)]
    if view not in ("eadr", "prefix"):  # pragma: no cover - validated by the caller
        raise ValueError(view)
    out = []
    base = {}               # unit -> value: everything before the current segment durable
    base_delta = 0
    base_stores = set()

    def floor(u):
        v = base.get(u)
        return _old(durable, u) if v is None else v

    for group, evs in _segments(state.pending_events()):
        frozen = (tuple(sorted(base.items())), base_delta, tuple(sorted(base_stores)))
        if group is None:
            alts = _chain(evs, floor, cached_hash)
            dims = [alts] if alts else []
        else:       # one event per unit: each unit durable or not, independently
            dims = [[Alternative(((ev.unit, ev.value),),
                                 cached_hash(ev.unit, floor(ev.unit))
                                 ^ cached_hash(ev.unit, ev.value), (ev.store,))]
                    for ev in evs if ev.value != floor(ev.unit)]
        out.append(Space(view, dims, *frozen))
        for ev in evs:
            u = ev.unit
            old = _old(durable, u)
            prev = floor(u)
            v = ev.value
            base_delta ^= cached_hash(u, prev) ^ cached_hash(u, v)
            if v == old:
                base.pop(u, None)
            else:
                base[u] = v
            base_stores.add(ev.store)
    return out or [Space(view, [])]


def total_count(space_list):
    """Crash states of a point: its spaces' states, each space's base counted once."""
    return sum(s.count() for s in space_list) - (len(space_list) - 1)


def line_images(events, olds):
    """The patches (frozensets of (unit, value) differing from ``olds``) one line can hold
    under ``x86-line``: what real x86 hardware can leave of the line."""
    alts = _chain(events, olds.__getitem__, _Hasher())
    return {frozenset()} | {frozenset(a.patch) for a in alts}


def dimensions(state, view):
    """The dimensions of ``view``'s first space (the whole space when there are no groups)."""
    return spaces(state, view)[0].dims


def state_count(dims):
    n = 1
    for d in dims:
        n *= len(d) + 1
    return n

