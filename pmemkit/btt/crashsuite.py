"""The atomic-sector crash suite: BTT sector writes under every crash state, and raw mode tearing.

Each workload is a list of sector operations (write, set_zero, set_error,
write_many batches). It runs on :func:`pmemkit.crash.explore`'s traced region in
two modes:

* ``btt`` - through :class:`~pmemkit.btt.Btt` on a small BTT image;
* ``raw`` - sectors written in place with ``memcpy_persist`` (what a pmem block
  device without BTT does).

At every crash point the checker opens the crash image (``Btt.open`` runs
recovery) and requires that every touched LBA reads wholly its old or wholly its
new content, and that every operation that had returned reads new. A sector with
any other content is *torn*; a returned write reading an older value is *lost*.
BTT must show zero of both; raw mode must tear (which proves the checker can fail).

The checker's cost follows the writes, not the image: it opens the explorer's image
read-only (recovery's roll-forwards stay in memory, no copy) and checks the BTT
against the fully checked initial image, only where the crash point's
``changed_ranges`` say the image may differ (``Btt.check(since=, changed=)``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import BttIOError, InvalidArgumentError

#: What set_error leaves in a raw-mode sector (raw pmem has no error flag).
RAW_ERROR_BYTE = 0xEE
ERROR = "error"

WORKLOADS = ("random", "overwrite", "lanes", "zero-error")


@dataclass
class SuiteConfig:
    lbasize: int = 512
    nfree: int = 4
    size: int = 64 * 1024
    writes: int = 6
    prefill: int = 8
    model: str = "x86"
    engine: str = "auto"
    max_states: int | None = None
    seed: int = 1

    def __post_init__(self):
        # each sector is told apart from every other by its 8-byte units (see _content)
        lbasize = self.lbasize
        if isinstance(lbasize, bool) or not isinstance(lbasize, int) or lbasize < 8:
            raise InvalidArgumentError(
                f"the crash suite needs sectors of at least 8 bytes (lbasize), got "
                f"{self.lbasize!r}; the Linux BTT's are 512 or 4096")


@dataclass
class SuiteRow:
    workload: str
    mode: str
    states: int = 0
    images: int = 0
    crash_points: int = 0
    torn_states: int = 0
    torn_sectors: int = 0
    lost_states: int = 0
    lost_writes: int = 0
    inconsistent: int = 0
    complete: bool = True
    examples: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.torn_states or self.lost_states or self.inconsistent)


def _content(rng, lbasize, tag):
    """A sector whose 8-byte units all differ from any other sector's (so tearing shows)."""
    body = bytearray(rng.getrandbits(8 * lbasize).to_bytes(lbasize, "little"))
    body[:4] = tag.to_bytes(4, "little")
    return bytes(body)


def build_ops(workload, cfg, nlba, nlane):
    """The operations of ``workload``: tuples ``("write", lba, data)``, ``("zero", lba)``,
    ``("error", lba)``, ``("many", [lbas], [datas])``."""
    rng = random.Random(f"{workload}:{cfg.seed}")
    tag = iter(range(1, 1 << 30))
    span = min(nlba, max(cfg.prefill, 2 * nlane, 8))
    ops = []
    if workload == "random":
        for _ in range(cfg.writes):
            ops.append(("write", rng.randrange(span), _content(rng, cfg.lbasize, next(tag))))
    elif workload == "overwrite":
        lba = rng.randrange(min(span, cfg.prefill) or 1)
        for _ in range(cfg.writes):
            ops.append(("write", lba, _content(rng, cfg.lbasize, next(tag))))
    elif workload == "lanes":
        lbas = rng.sample(range(span), min(span, nlane))
        ops.append(("many", lbas, [_content(rng, cfg.lbasize, next(tag)) for _ in lbas]))
        for _ in range(max(cfg.writes - 1, 1)):
            ops.append(("write", rng.randrange(span), _content(rng, cfg.lbasize, next(tag))))
    elif workload == "zero-error":
        a, b = rng.sample(range(min(span, cfg.prefill) or 2), 2)
        ops += [("zero", a), ("error", b), ("write", b, _content(rng, cfg.lbasize, next(tag))),
                ("write", a, _content(rng, cfg.lbasize, next(tag))), ("error", a), ("zero", b)]
        ops = ops[:max(cfg.writes, 2)]
    else:
        raise InvalidArgumentError(
            f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    return ops


def _expected_after(op):
    kind = op[0]
    if kind == "write":
        return [(op[1], op[2])]
    if kind == "zero":
        return [(op[1], None)]
    if kind == "error":
        return [(op[1], ERROR)]
    return list(zip(op[1], op[2], strict=True))


class _RawSectors:
    """Sectors written in place: what a pmem block device without BTT does."""

    def __init__(self, region, lbasize):
        self.r = region
        self.lbasize = lbasize

    def write(self, lba, data):
        self.r.memcpy_persist(lba * self.lbasize, data)

    def set_zero(self, lba):
        self.r.memset_persist(lba * self.lbasize, 0, self.lbasize)

    def set_error(self, lba):
        self.r.memset_persist(lba * self.lbasize, RAW_ERROR_BYTE, self.lbasize)


def _apply(dev, op):
    kind = op[0]
    if kind == "write":
        dev.write(op[1], op[2])
    elif kind == "zero":
        dev.set_zero(op[1])
    elif kind == "error":
        dev.set_error(op[1])
    elif isinstance(dev, _RawSectors):
        for lba, d in zip(op[1], op[2], strict=True):
            dev.write(lba, d)
    else:
        import numpy as np
        dev.write_many(op[1], np.frombuffer(b"".join(op[2]), dtype=np.uint8))


def _initial_image(mode, cfg):
    """The image before the workload, the device geometry and the prefilled contents."""
    from .device import Btt
    from .layout import LINUX_LBASIZES

    rng = random.Random(f"prefill:{cfg.seed}")
    buf = bytearray(cfg.size)
    if mode == "btt":
        b = Btt.create(buf, lbasize=cfg.lbasize, nfree=cfg.nfree, layout="linux"
                       if cfg.lbasize in LINUX_LBASIZES else "pmemblk")
        nlba, nlane = b.nlba, b.nlane
        dev = b
    else:
        nlba, nlane = cfg.size // cfg.lbasize, cfg.nfree
        dev = _RawSectors(_BufWriter(buf), cfg.lbasize)
    state = {}
    for lba in range(min(cfg.prefill, nlba)):
        data = _content(rng, cfg.lbasize, 0x7F000000 + lba)
        dev.write(lba, data)
        state[lba] = data
    if mode == "btt":
        b.close()
    return bytes(buf), nlba, nlane, state


class _BufWriter:
    def __init__(self, buf):
        self.buf = buf

    def memcpy_persist(self, off, data):
        self.buf[off:off + len(data)] = data


def _read_sector(mode, dev, image, lba, lbasize):
    if mode == "btt":
        try:
            data = dev.read(lba)
        except BttIOError:
            return ERROR
    else:
        data = bytes(image[lba * lbasize:(lba + 1) * lbasize])
        if data == bytes([RAW_ERROR_BYTE]) * lbasize:
            return ERROR
    return data if any(data) else None


def _workload_fn(mode, ops, lbasize, device_class):
    """The traced workload: open the device on the traced region and apply ``ops``, noting
    each operation's start and return for the checker."""
    def workload_fn(pm):
        dev = device_class.open(pm) if mode == "btt" else _RawSectors(pm, lbasize)
        for i, op in enumerate(ops):
            for lba, v in _expected_after(op):
                pm.record(("begin", lba), v)
            pm.mark(f"op{i}:{op[0]}")
            _apply(dev, op)
            for lba, v in _expected_after(op):
                pm.record(("done", lba), v)
        if mode == "btt":
            dev.close()

    return workload_fn


def _check_mode(mode):
    if mode not in ("btt", "raw"):
        raise InvalidArgumentError(f"mode must be 'btt' or 'raw', got {mode!r}")


def require_explorable(cfg, workloads=WORKLOADS, modes=("btt", "raw")):
    """Refuse up front (:class:`~pmemkit.errors.StateSpaceTooLarge`, with the count) an
    exhaustive suite that could not finish: run every workload once without checking and
    ask the crash engine whether its largest crash point can be explored exhaustively."""
    from .. import crash
    from ..crash.engines import EngineSpec
    from ..errors import StateSpaceTooLarge
    from .device import Btt

    if EngineSpec.parse(cfg.engine).name != "exhaustive":
        return
    for workload in workloads:
        for mode in modes:
            _check_mode(mode)
            initial, nlba, nlane, _ = _initial_image(mode, cfg)
            ops = build_ops(workload, cfg, nlba, nlane)
            _, largest, _ = crash.state_space(_workload_fn(mode, ops, cfg.lbasize, Btt),
                                              initial=initial, model=cfg.model,
                                              engine=cfg.engine)
            try:
                crash.require_explorable(largest)
            except StateSpaceTooLarge as exc:
                raise StateSpaceTooLarge(f"workload {workload!r} in {mode} mode: {exc}",
                                         count=exc.count, limit=exc.limit) from None


def run_workload(workload, mode, cfg=None, progress=None, *, device_class=None):
    """Explore every crash state of ``workload`` in ``mode`` (``"btt"`` or ``"raw"``); a SuiteRow.

    ``device_class`` runs the workload through another Btt subclass (the checker
    always recovers with :class:`Btt`): a way to show the suite catches a broken protocol.
    """
    from .. import crash
    from ..region import BufferRegion
    from .device import Btt

    device_class = device_class or Btt
    cfg = cfg or SuiteConfig()
    _check_mode(mode)
    initial, nlba, nlane, prefill = _initial_image(mode, cfg)
    ops = build_ops(workload, cfg, nlba, nlane)
    row = SuiteRow(workload, mode)
    history = {}                     # lba -> every value it ever held, oldest first
    for lba, v in prefill.items():
        history[lba] = [v]
    for op in ops:
        for lba, v in _expected_after(op):
            history.setdefault(lba, [None]).append(v)
    lbasize = cfg.lbasize
    workload_fn = _workload_fn(mode, ops, lbasize, device_class)
    baseline = None
    if mode == "btt":               # the initial image, fully checked once
        with Btt.open(BufferRegion(initial, writable=False), readonly=True,
                      close_region=True) as first:
            baseline = first.baseline()

    def check(image, point):
        expected = dict(prefill)
        inflight = {}
        for (kind, lba), v in point.records:
            if kind == "begin":
                inflight.setdefault(lba, []).append(v)
            else:
                expected[lba] = v
                inflight.pop(lba, None)
        problems = []
        dev = None
        if mode == "btt":
            # read-only: recovery keeps its roll-forwards in the arenas' overlays, so the
            # explorer's image is used as it is, with no copy
            dev = Btt.open(BufferRegion(image, writable=False), readonly=True,
                           close_region=True)
        torn = lost = 0
        try:
            if dev is not None:
                changed = point.changed_ranges
                problems = (dev.check() if baseline is None or changed is None
                            else dev.check(since=baseline, changed=changed))
            for lba in history:
                got = _read_sector(mode, dev, image, lba, lbasize)
                allowed = [expected.get(lba)] + inflight.get(lba, [])
                if got in allowed:
                    continue
                if got in history[lba]:
                    lost += 1
                else:
                    torn += 1
        finally:
            if dev is not None:
                dev.close()
        row.torn_sectors += torn
        row.torn_states += bool(torn)
        row.lost_writes += lost
        row.lost_states += bool(lost)
        row.inconsistent += bool(problems)
        if (torn or lost or problems) and len(row.examples) < 3:
            row.examples.append(f"{point.describe()}: {torn} torn, {lost} lost"
                                + (f", check: {problems[0]}" if problems else ""))
        return not (torn or lost or problems)

    report = crash.explore(workload_fn, check, initial=initial, model=cfg.model,
                           engine=cfg.engine, max_states=cfg.max_states, seed=cfg.seed,
                           progress=progress)
    row.states = report.states_checked
    row.images = report.unique_images
    row.crash_points = report.crash_points
    row.complete = report.complete
    return row


def run_suite(cfg=None, workloads=WORKLOADS, modes=("btt", "raw"), on_row=None):
    """Run every workload in every mode; a list of SuiteRow (``on_row(row)`` after each).

    With ``engine="exhaustive"`` a suite that could not finish is refused before anything
    runs (:func:`require_explorable`).
    """
    cfg = cfg or SuiteConfig()
    require_explorable(cfg, workloads, modes)
    rows = []
    for w in workloads:
        for m in modes:
            row = run_workload(w, m, cfg)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows


def format_table(rows):
    head = (f"{'workload':<11} {'mode':<4} {'states':>8} {'images':>7} {'torn states':>11} "
            f"{'torn sectors':>12} {'lost writes':>11} {'check fails':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.workload:<11} {r.mode:<4} {r.states:>8} {r.images:>7} "
                     f"{r.torn_states:>11} "
                     f"{r.torn_sectors:>12} {r.lost_writes:>11} {r.inconsistent:>11}"
                     + ("" if r.complete else "  (incomplete)"))
    return "\n".join(lines)
