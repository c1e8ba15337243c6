"""Persistency models: which images a crash at a given point can leave.

A crash point is described as a list of independent *dimensions*; each
dimension is a list of *alternatives* besides "nothing more became durable"
(alternative 0). An alternative is a patch - ``(unit, 8-byte value)`` pairs to
lay over the durable image - with its fingerprint delta and the stores it
makes durable. Every combination of one alternative per dimension is a crash
image the model allows; distinct combinations give distinct images, because
each dimension's alternatives are deduplicated and dimensions touch disjoint
units (for the ``prefix`` view there is a single dimension).

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
    __slots__ = ("patch", "delta", "stores", "events")

    def __init__(self, patch, delta, stores, events):
        self.patch = patch      # tuple of (unit, value)
        self.delta = delta      # fingerprint delta vs the durable image
        self.stores = stores    # store indices whose data this makes (partly) durable
        self.events = events    # number of pending unit-events it includes

    def __repr__(self):
        return f"Alternative(units={[u for u, _ in self.patch]}, stores={self.stores})"


def _alt(patch_dict, durable, hcache, stores, events):
    delta = 0
    patch = []
    for u in sorted(patch_dict):
        v = patch_dict[u]
        old = bytes(durable[u * UNIT:u * UNIT + UNIT])
        if v == old:
            continue
        patch.append((u, v))
        key = (u, old)
        ho = hcache.get(key)
        if ho is None:
            ho = hcache[key] = unit_hash(u, old)
        delta ^= ho ^ unit_hash(u, v)
    return Alternative(tuple(patch), delta, tuple(sorted(stores)), events)


def dimensions(region, model):
    """The dimensions of the crash state of ``region`` under ``model`` (or ``"prefix"``)."""
    durable = region.durable
    hcache = {}
    dims = []
    if model == "x86":
        per_unit = {}
        for st in region.lines.values():
            for ev in st.events:
                per_unit.setdefault(ev.unit, []).append(ev)
        for u in sorted(per_unit):
            old = bytes(durable[u * UNIT:u * UNIT + UNIT])
            seen = {old}
            alts = []
            for ev in per_unit[u]:
                if ev.value in seen:
                    continue
                seen.add(ev.value)
                alts.append(_alt({u: ev.value}, durable, hcache, (ev.store,), 1))
            if alts:
                dims.append(alts)
    elif model == "x86-line":
        for li in sorted(region.lines):
            evs = region.lines[li].events
            alts = []
            seen = {()}
            cur = {}
            stores = set()
            for j, ev in enumerate(evs):
                cur[ev.unit] = ev.value
                stores.add(ev.store)
                a = _alt(cur, durable, hcache, stores, j + 1)
                if a.patch in seen:
                    continue
                seen.add(a.patch)
                alts.append(a)
            if alts:
                dims.append(alts)
    elif model in ("eadr", "prefix"):
        evs = region.pending_events()
        alts = []
        seen = {()}
        cur = {}
        stores = set()
        for j, ev in enumerate(evs):
            cur[ev.unit] = ev.value
            stores.add(ev.store)
            a = _alt(cur, durable, hcache, stores, j + 1)
            if a.patch in seen:
                continue
            seen.add(a.patch)
            alts.append(a)
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
