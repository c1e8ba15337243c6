"""Persistency models: which images a crash at a given point can leave.

A crash point is described as a list of independent *dimensions*; each
dimension is a list of *alternatives* besides "nothing more became durable"
(alternative 0). An alternative is a patch - ``(unit, 8-byte value)`` pairs to
lay over the durable image - with its fingerprint delta and the stores it
makes durable. Every combination of one alternative per dimension is a crash
image the model allows; distinct combinations give distinct images, because
each dimension's alternatives are deduplicated (by fingerprint) and dimensions
touch disjoint units (for the ``prefix`` view there is a single dimension).

* ``x86`` - one dimension per pending 8-byte unit; its alternatives are the
  distinct values the unit held after each pending store (8-byte power-fail
  atomicity, units independent).
* ``x86-line`` - one dimension per cache line; alternatives are the line after
  each prefix of its pending stores (a line is written back as a snapshot).
* ``eadr`` - one dimension: the program-order prefixes of all pending stores
  (caches are persistent; stores drain in TSO order).
* ``prefix`` view (the ``prefix`` engine, any model): program-order prefixes.
"""

from __future__ import annotations

from .trace import UNIT, unit_hash


class Alternative:
    __slots__ = ("patch", "delta", "stores", "events", "step", "unstep")

    def __init__(self, patch, delta, stores, events, step=None, unstep=None):
        self.patch = patch      # tuple of (unit, value)
        self.delta = delta      # fingerprint delta vs the durable image
        self.stores = stores    # store indices whose data this makes (partly) durable
        self.events = events    # number of pending unit-events it includes
        # prefix chains: the (unit, value) writes leading here from the previous
        # alternative of the dimension, and back
        self.step = step
        self.unstep = unstep

    def __repr__(self):
        return f"Alternative(units={[u for u, _ in self.patch]}, stores={self.stores})"


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


def _prefix_alternatives(events, durable, H):
    """Alternatives "the first j events are durable", j >= 1, deduplicated by image.

    Consecutive alternatives form a chain: ``step``/``unstep`` move between
    neighbours by writing only the units that change.
    """
    alts = []
    seen = {0}
    cur = {}            # unit -> value, only units that differ from durable
    value_now = {}      # unit -> value after the events so far (durable if untouched)
    delta = 0
    stores = set()
    step = {}
    unstep = {}
    for j, ev in enumerate(events):
        u, v = ev.unit, ev.value
        prev = value_now.get(u)
        if prev is None:
            prev = _old(durable, u)
        if prev != v:
            old = _old(durable, u)
            delta ^= H(u, prev) ^ H(u, v)
            if v == old:
                cur.pop(u, None)
            else:
                cur[u] = v
            value_now[u] = v
            if u not in unstep:
                unstep[u] = prev
            step[u] = v
        stores.add(ev.store)
        if delta in seen:
            continue
        seen.add(delta)
        alts.append(Alternative(tuple(cur.items()), delta, tuple(sorted(stores)), j + 1,
                                tuple(step.items()), tuple(unstep.items())))
        step, unstep = {}, {}
    return alts


def dimensions(state, model):
    """The dimensions of a crash at ``state`` (a :class:`~.trace.PendingState`) under ``model``.

    ``model`` is ``x86``, ``x86-line``, ``eadr`` or ``"prefix"`` (program-order prefixes).
    """
    durable = state.durable
    H = _Hasher()
    dims = []
    if model == "x86":
        per_unit = {}
        for _, events, _ in state.lines:
            for ev in events:
                per_unit.setdefault(ev.unit, []).append(ev)
        for u in sorted(per_unit):
            old = _old(durable, u)
            seen = {old}
            alts = []
            hold = H(u, old)
            for ev in per_unit[u]:
                if ev.value in seen:
                    continue
                seen.add(ev.value)
                alts.append(Alternative(((u, ev.value),), hold ^ H(u, ev.value), (ev.store,), 1))
            if alts:
                dims.append(alts)
    elif model == "x86-line":
        for _, events, _ in state.lines:
            alts = _prefix_alternatives(events, durable, H)
            if alts:
                dims.append(alts)
    elif model in ("eadr", "prefix"):
        alts = _prefix_alternatives(state.pending_events(), durable, H)
        if alts:
            dims.append(alts)
    else:  # pragma: no cover - validated by the caller
        raise ValueError(model)
    return dims


def state_count(dims):
    n = 1
    for d in dims:
        n *= len(d) + 1
    return n
