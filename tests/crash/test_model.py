"""Property tests of the persistency models against an independent reference model.

The reference below is written from the model's definition, not from the
simulator's code: per 8-byte unit, the durable value and the values the unit
held after each pending store; a flush marks a line's pending values, a fence
makes the marked ones durable.
"""

import math
from collections import defaultdict

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pmemkit import crash

SIZE = 256
LINE = 64

writes = st.builds(lambda off, data: ("write", off, data),
                   st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=12)).filter(
    lambda op: op[1] + len(op[2]) <= SIZE)
aligned = st.builds(lambda u, data: ("write", u * 8, data), st.integers(0, SIZE // 8 - 1),
                    st.binary(min_size=8, max_size=8))
flushes = st.builds(lambda off, n: ("flush", off, n), st.integers(0, SIZE - 1),
                    st.integers(1, 128)).filter(
    lambda op: op[1] + op[2] <= SIZE)
fences = st.just(("fence",))
programs = st.lists(st.one_of(writes, aligned, flushes, fences, fences), min_size=1, max_size=10)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.filter_too_much])


def run(program, pm):
    for i, op in enumerate(program):
        pm.record("op", i)          # makes every crash point's dedup key distinct
        if op[0] == "write":
            pm.write(op[1], op[2])
        elif op[0] == "flush":
            pm.flush(op[1], op[2])
        else:
            pm.drain()
    pm.record("end")


def reference(program, eadr=False):
    """For each crash point: (durable image, {unit: [pending values in order]}, [(unit, value)] in
    order)."""
    mem = bytearray(SIZE)
    durable = bytearray(SIZE)
    pend = defaultdict(list)      # unit -> values after each pending store
    order = []                    # (unit, value) in program order
    flushed = {}                  # unit -> number of its pending values a flush covered
    points = []

    def snapshot():
        points.append((bytes(durable), {u: list(v) for u, v in pend.items() if v}, list(order)))

    for op in program:
        if op[0] == "write":
            off, data = op[1], op[2]
            mem[off:off + len(data)] = data
            for u in range(off // 8, (off + len(data) - 1) // 8 + 1):
                val = bytes(mem[u * 8:u * 8 + 8])
                pend[u].append(val)
                order.append((u, val))
        elif op[0] == "flush":
            first, last = op[1] // LINE, (op[1] + op[2] - 1) // LINE
            for u, vals in pend.items():
                if first <= u * 8 // LINE <= last:
                    flushed[u] = len(vals)
        else:
            snapshot()
            for u, vals in list(pend.items()):
                n = len(vals) if eadr else flushed.get(u, 0)
                if n:
                    durable[u * 8:u * 8 + 8] = vals[n - 1]
                    pend[u] = vals[n:]
                    drop = n            # the unit's first n events are now durable
                    kept = []
                    for uu, v in order:
                        if uu == u and drop:
                            drop -= 1
                        else:
                            kept.append((uu, v))
                    order[:] = kept
                flushed[u] = 0
    snapshot()
    return points


def allowed_per_unit(durable, pend):
    return {u: {durable[u * 8:u * 8 + 8], *vals} for u, vals in pend.items()}


def explore_images(program, model):
    images = defaultdict(set)

    def check(img, point):
        images[point.index].add(bytes(img))

    report = crash.explore(lambda pm: run(program, pm), check, size=SIZE, model=model,
                           engine="exhaustive", progress=None)
    return report, images


@SETTINGS
@given(programs)
def test_x86_images_are_exactly_the_allowed_ones(program):
    """Flushed+fenced data is in every image, an aligned store is never torn, durable data never
    reverts - every unit holds its durable value or one it held after a pending store - and the
    exhaustive engine produces every such combination exactly once."""
    points = reference(program)
    expected_total = sum(math.prod(len(a) for a in allowed_per_unit(d, p).values())
                         for d, p, _ in points)
    assume(expected_total <= 3000)
    report, images = explore_images(program, "x86")
    assert report.ok and report.crash_points == len(points)
    for i, (durable, pend, _) in enumerate(points):
        allowed = allowed_per_unit(durable, pend)
        assert len(images[i]) == math.prod(len(a) for a in allowed.values())
        for img in images[i]:
            for u in range(SIZE // 8):
                unit = img[u * 8:u * 8 + 8]
                if u in allowed:
                    assert unit in allowed[u]
                else:
                    assert unit == durable[u * 8:u * 8 + 8], (
                        f"unit {u} differs from its durable value")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, SIZE // 8 - 1), st.binary(min_size=8, max_size=8),
                          st.booleans()), min_size=1, max_size=8))
def test_aligned_8_byte_store_is_never_torn(stores):
    """Each image unit equals one whole value the program stored there (or the initial zeros)."""
    def workload(pm):
        for u, data, persist in stores:
            pm.write(u * 8, data)
            if persist:
                pm.persist(u * 8, 8)

    values = defaultdict(lambda: {bytes(8)})
    for u, data, _ in stores:
        values[u].add(data)

    def check(img):
        for u in range(SIZE // 8):
            assert bytes(img[u * 8:u * 8 + 8]) in values[u]

    assert crash.explore(workload, check, size=SIZE, engine="exhaustive", progress=None).ok


@SETTINGS
@given(programs)
def test_nothing_durable_is_undone(program):
    """Once a fence made a unit durable, no later crash image shows an older value of it."""
    points = reference(program)
    assume(sum(math.prod(len(a) for a in allowed_per_unit(d, p).values())
               for d, p, _ in points) <= 3000)
    _, images = explore_images(program, "x86")
    for i, (durable, pend, _) in enumerate(points):
        for img in images[i]:
            for u in range(SIZE // 8):
                if u not in pend:
                    assert img[u * 8:u * 8 + 8] == durable[u * 8:u * 8 + 8]


@SETTINGS
@given(programs)
def test_x86_line_images_are_line_prefixes(program):
    """x86-line: each cache line holds its durable content plus a prefix of its pending stores."""
    points = reference(program)
    report, images = explore_images(program, "x86-line")
    assert report.ok
    for i, (durable, _, order) in enumerate(points):
        for img in images[i]:
            for line in range(SIZE // LINE):
                evs = [(u, v) for u, v in order if u * 8 // LINE == line]
                ok = False
                cur = bytearray(durable[line * LINE:(line + 1) * LINE])
                for j in range(len(evs) + 1):
                    if j:
                        u, v = evs[j - 1]
                        cur[u * 8 - line * LINE:u * 8 - line * LINE + 8] = v
                    if bytes(cur) == img[line * LINE:(line + 1) * LINE]:
                        ok = True
                        break
                assert ok, f"line {line} of an image is not a prefix of its pending stores"


@SETTINGS
@given(programs)
def test_eadr_images_are_program_order_prefixes(program):
    """eADR: fences make everything durable; a crash leaves a program-order prefix of the rest."""
    points = reference(program, eadr=True)
    report, images = explore_images(program, "eadr")
    assert report.ok
    for i, (durable, _, order) in enumerate(points):
        prefixes = set()
        cur = bytearray(durable)
        prefixes.add(bytes(cur))
        for u, v in order:
            cur[u * 8:u * 8 + 8] = v
            prefixes.add(bytes(cur))
        assert images[i] == prefixes
