"""Real power cuts: a workload runs in a guest on persistent emulated pmem (an NVDIMM, a CXL
device, or memmap= in guest RAM kept in a file: a backing file outlives QEMU), QEMU is killed
with SIGKILL at a chosen or random moment, the guest boots again and a check command judges
what survived; N cycles.

One boot per cycle: boot ``k + 1`` first runs the check (the verdict on cut ``k``), then the
workload again (for cut ``k + 1``); a last boot runs only the check. Both commands are argv
lists, handed to a small driver in the guest as JSON (never through a shell).

What survives a cut: every store that reached the guest's emulated media (QEMU maps the
backing file shared, so the host's page cache holds it even though QEMU died). What is lost:
everything only in the guest's RAM (its page cache, unwritten filesystem metadata, process
memory). Not simulated: CPU caches (under emulation every store reaches the media at once,
flushed or not), store reordering and torn 8-byte writes - that is what :mod:`pmemkit.crash`
explores, exhaustively, without a VM.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field

from .. import defaults
from ..errors import VmConfigError
from . import runner

#: Marker lines the guest driver writes (stdout and stderr) between the check and the workload.
WORKLOAD_MARK = "pmemkit-powercut: workload start"
CHECK_MARK = "pmemkit-powercut: check exit "
#: Environment variable carrying the driver's JSON ({"check": argv|None, "workload": argv|None}).
SPEC_ENV = "PMEMKIT_POWERCUT"

_DRIVER = f"""
import json, os, subprocess, sys
spec = json.loads(os.environ[{SPEC_ENV!r}])
if spec["check"]:
    code = subprocess.run(spec["check"]).returncode
    sys.stdout.flush()
    print({CHECK_MARK!r} + str(code), file=sys.stderr, flush=True)
    if code != 0 or not spec["workload"]:
        sys.exit(code)
if spec["workload"]:
    for stream in (sys.stdout, sys.stderr):
        print({WORKLOAD_MARK!r}, file=stream, flush=True)
    os.execvp(spec["workload"][0], spec["workload"])
"""


@dataclass
class Cut:
    """One cycle: the workload's run and its cut, then the check's verdict after the reboot."""

    index: int
    planned: float              # seconds after the workload started
    cut_at: float | None = None  # when QEMU was really killed (None: the workload ended first)
    workload_status: int | None = None  # the workload's exit status when it ended before the cut
    workload_output: str = ""
    check_status: int | None = None
    check_output: str = ""

    @property
    def happened(self):
        return self.cut_at is not None

    @property
    def verdict(self):
        if self.check_status is None:
            return "not checked"
        if self.check_status == 0:
            return "consistent"
        return f"inconsistent (check exit {self.check_status})"


@dataclass
class PowerCutReport:
    """Every cycle of a :func:`run` and the overall outcome."""

    cuts: list = field(default_factory=list)
    seed: int | None = None
    backing_file: str = ""

    @property
    def consistent(self):
        """No check found an inconsistency (a check that did not run gives no verdict)."""
        return all(c.check_status in (0, None) for c in self.cuts)

    @property
    def complete(self):
        """Every cut happened while the workload was running and was checked."""
        return all(c.happened and c.check_status is not None for c in self.cuts)

    def to_dict(self):
        return {"seed": self.seed, "backing_file": self.backing_file,
                "consistent": self.consistent, "complete": self.complete,
                "cuts": [{"cut": c.index, "planned_s": round(c.planned, 3),
                          "cut_at_s": None if c.cut_at is None else round(c.cut_at, 3),
                          "workload_status": c.workload_status, "check_status": c.check_status,
                          "verdict": c.verdict, "check_output": c.check_output,
                          "workload_output_tail": c.workload_output.splitlines()[-3:]}
                         for c in self.cuts]}


def parse_window(text):
    """``"MIN:MAX"`` seconds -> (MIN, MAX)."""
    lo, _, hi = str(text).partition(":")
    try:
        return float(lo), float(hi)
    except ValueError:
        raise VmConfigError(f"cut window {text!r}: write MIN:MAX in seconds, e.g. 1:10") from None


def cut_moments(cuts, *, cut_after=None, window=None, seed=None):
    """The moment of each cut in seconds after the workload starts: ``cut_after`` every time,
    else uniformly random in ``window`` (``(MIN, MAX)`` or ``"MIN:MAX"``, default
    :data:`pmemkit.defaults.VM_POWER_CUT_WINDOW`) from ``random.Random(seed)``."""
    if cuts < 1:
        raise VmConfigError(f"the number of cuts must be at least 1, got {cuts}")
    if cut_after is not None:
        if cut_after < 0:
            raise VmConfigError(f"--cut-after must be zero or more seconds, got {cut_after}")
        return [float(cut_after)] * cuts
    if window is None or isinstance(window, str):
        window = parse_window(window or defaults.VM_POWER_CUT_WINDOW)
    lo, hi = window
    if not 0 <= lo <= hi:
        raise VmConfigError(f"cut window {lo}:{hi} must satisfy 0 <= MIN <= MAX")
    rng = random.Random(seed)
    return [rng.uniform(lo, hi) for _ in range(cuts)]


def _split(text, mark):
    """(before, after) the line ``mark`` in ``text``; (text, "") without it."""
    before, sep, after = text.partition(mark + "\n")
    return (before, after) if sep else (text, "")


def _check_status(stderr):
    for line in stderr.splitlines():
        if line.startswith(CHECK_MARK):
            return int(line[len(CHECK_MARK):])
    return None


def run(config, workload, check, *, cuts=defaults.VM_POWER_CUTS, cut_after=None, window=None,
        seed=None, timeout=None, progress=None):
    """Run ``workload`` (argv) in a guest of ``config`` and cut its power ``cuts`` times, each
    time booting again to run ``check`` (argv; exit 0 = consistent). Returns a
    :class:`PowerCutReport`. ``config`` must have persistent pmem (``nvdimm``, ``cxl`` or
    memmap with ``persist``)."""
    if config.backend == "memmap" and config.persist is None:
        raise VmConfigError("power cuts need pmem that outlives QEMU: memmap= memory is lost "
                            "with the guest; use --nvdimm, --cxl or --persist FILE")
    workload, check = runner.argv_list(workload, "workload"), runner.argv_list(check, "check")
    if not workload or not check:
        raise VmConfigError("power cuts need both a workload and a check command")
    if seed is None and cut_after is None:
        seed = random.SystemRandom().randrange(1 << 32)
    moments = cut_moments(cuts, cut_after=cut_after, window=window, seed=seed)
    backing = runner.nvdimm_path(config) or config.persist
    report = PowerCutReport(seed=seed, backing_file=str(backing))
    previous = None
    for i, moment in enumerate([*moments, None]):
        spec = {"check": check if previous else None,
                "workload": workload if moment is not None else None}
        seen = {"text": "", "started": None}

        def stream(name, data, seen=seen):
            if name == "stderr":
                seen["text"] += data.decode(errors="replace")
                if seen["started"] is None and WORKLOAD_MARK in seen["text"]:
                    seen["started"] = time.monotonic()

        def cut_when(seen=seen, moment=moment):
            return (moment is not None and seen["started"] is not None
                    and time.monotonic() - seen["started"] >= moment)

        if progress:
            what = "check" if moment is None else f"cut {i + 1}/{len(moments)} at {moment:.2f} s"
            progress(f"power-cut cycle {i + 1}: {what}")
        result = runner.run(config, ["python3", "-c", _DRIVER], timeout=timeout, stream=stream,
                            progress=progress, env={SPEC_ENV: json.dumps(spec)},
                            cut_when=cut_when)
        check_out, workload_out = _split(result.output, WORKLOAD_MARK)
        if previous is not None:
            previous.check_status = _check_status(result.error_output)
            previous.check_output = check_out
            if previous.check_status != 0:
                break                           # inconsistent (or no verdict): report it
        if moment is None:
            break
        cut = Cut(i + 1, moment, workload_output=workload_out)
        report.cuts.append(cut)
        if result.power_cut and seen["started"] is not None:
            # when QEMU died, from the workload's start as the host saw it (0.1 s polling)
            cut.cut_at = time.monotonic() - seen["started"]
        else:
            cut.workload_status = result.returncode
        if progress:
            progress(f"cut {cut.index}: " + (f"power cut at {cut.cut_at:.2f} s" if cut.happened else
                                             f"workload ended first (exit {cut.workload_status})"))
        previous = cut
    return report


def format_report(report):
    """The report as text lines (for the CLI)."""
    lines = [f"power cuts on {report.backing_file}" +
             (f" (seed {report.seed})" if report.seed is not None else "")]
    for c in report.cuts:
        when = (f"cut at {c.cut_at:6.2f} s" if c.happened else
                f"no cut: workload ended (exit {c.workload_status}) before {c.planned:.2f} s")
        lines.append(f"  cut {c.index}: planned {c.planned:6.2f} s, {when}, check: {c.verdict}")
    ok = report.consistent and report.complete
    lines.append("result: " + ("every check passed" if ok else
                               "INCONSISTENT" if not report.consistent else
                               "no violation, but not every cycle was cut and checked"))
    return lines
