"""Engines: which combinations of alternatives (see :mod:`.model`) to visit.

Every engine yields *choice vectors* as sparse dicts ``{dimension: alternative}``
(alternative numbers start at 1; an absent dimension means "nothing more became
durable there"). The exhaustive engine walks a reflected mixed-radix Gray code,
so consecutive images differ in one dimension and are built by one patch.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass

from .. import defaults
from ..errors import InvalidArgumentError

ENGINES = ("exhaustive", "bounded", "random", "prefix", "auto", "in-order")


class EngineSpec:
    """A parsed engine name: ``exhaustive``, ``bounded[:k]``, ``random[:n]``, ``prefix``, ``auto``
    or ``in-order`` (only the image with every pending store durable: pmreorder's NoReorderDoCheck).
    """

    def __init__(self, name, k=None, samples=None):
        self.name = name
        self.k = defaults.CRASH_BOUNDED_K if k is None else k
        self.samples = defaults.CRASH_RANDOM_SAMPLES if samples is None else samples

    @classmethod
    def parse(cls, engine, k=None, samples=None):
        if isinstance(engine, EngineSpec):
            return engine
        if not isinstance(engine, str):
            raise InvalidArgumentError(f"engine must be a string such as 'auto', got {engine!r}")
        m = re.fullmatch(r"\s*([a-z-]+)\s*(?:[:(]\s*(\d+)\s*\)?)?\s*", engine)
        if not m or m.group(1) not in ENGINES:
            raise InvalidArgumentError(
                f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)} "
                f"(bounded and random take a number: 'bounded:2', 'random:500')")
        name, num = m.group(1), m.group(2)
        if num is not None:
            if name == "bounded":
                k = int(num)
            elif name == "random":
                samples = int(num)
            else:
                raise InvalidArgumentError(f"engine {name!r} takes no number (got {engine!r})")
        for what, val in (("k", k), ("samples", samples)):
            if val is not None and (not isinstance(val, int) or isinstance(val, bool) or val < 1):
                raise InvalidArgumentError(
                    f"engine {what} must be a positive integer, got {val!r} "
                    f"(0 would check nothing and report OK)")
        return cls(name, k, samples)

    def __str__(self):
        if self.name == "bounded":
            return f"bounded(k={self.k})"
        if self.name == "random":
            return f"random(n={self.samples})"
        return self.name


def gray(radices):
    """Yield (dimension, new value) steps visiting every mixed-radix vector once.

    Knuth's loopless reflected mixed-radix Gray code (TAOCP 7.2.1.1, Algorithm H).
    The all-zero vector comes first and is not yielded as a step.
    """
    n = len(radices)
    a = [0] * n
    f = list(range(n + 1))
    o = [1] * n
    while True:
        j = f[0]
        f[0] = 0
        if j == n:
            return
        a[j] += o[j]
        if a[j] == 0 or a[j] == radices[j] - 1:
            o[j] = -o[j]
            f[j] = f[j + 1]
            f[j + 1] = j + 1
        yield j, a[j]



def bounded_count(dims, k):
    sizes = [len(d) for d in dims]
    # elementary symmetric sums e_0..e_k of the alternative counts
    e = [1] + [0] * k
    for s in sizes:
        for j in range(k, 0, -1):
            e[j] += e[j - 1] * s
    return sum(e)


def bounded_vectors(dims, k, start=0):
    """Vectors with at most ``k`` dimensions off alternative 0, smallest first."""
    n = len(dims)
    for size in range(start, min(k, n) + 1):
        for combo in itertools.combinations(range(n), size):
            for alts in itertools.product(*(range(1, len(dims[d]) + 1) for d in combo)):
                yield dict(zip(combo, alts, strict=True))


def point_rng(seed, point):
    return random.Random((int(seed) & 0xFFFFFFFF) * 1_000_003 + point)


def random_vectors(dims, samples, rng):
    """``samples`` vectors, each dimension uniform over its alternatives and 0."""
    radices = [len(d) + 1 for d in dims]
    rand = rng.randrange
    for _ in range(samples):
        vec = {}
        for i, m in enumerate(radices):
            a = rand(m)
            if a:
                vec[i] = a
        yield vec


@dataclass(frozen=True)
class Plan:
    """How one crash point is explored.

    ``kind`` is ``"exhaustive"`` (every combination), ``"bounded"`` (every
    combination with at most ``k`` dimensions off alternative 0, then ``samples``
    random ones) or ``"random"`` (``samples`` random combinations). ``complete``
    is true when the plan visits every state of the point.
    """

    label: str
    kind: str
    k: int = 0
    samples: int = 0
    complete: bool = True


def plan(spec, dims, count):
    """Decide how to explore a crash point with ``dims`` (``count`` states): a :class:`Plan`."""
    name = spec.name
    if name == "in-order":
        return Plan(name, "bounded", 0, 0, complete=count <= 1)
    if name in ("exhaustive", "prefix") or (name == "auto"
                                            and count <= defaults.CRASH_AUTO_EXHAUSTIVE_STATES):
        return Plan(name if name != "auto" else "exhaustive", "exhaustive")
    if name == "auto":
        k = spec.k
        while k > 1 and bounded_count(dims, k) > defaults.CRASH_AUTO_BOUNDED_STATES:
            k -= 1
        return Plan(f"bounded(k={k})+random(n={spec.samples})", "bounded", k, spec.samples,
                    complete=bounded_count(dims, k) >= count)
    if name == "bounded":
        return Plan(str(spec), "bounded", spec.k, 0, complete=bounded_count(dims, spec.k) >= count)
    if name == "random":
        return Plan(str(spec), "random", 0, spec.samples, complete=False)
    raise InvalidArgumentError(name)  # pragma: no cover
