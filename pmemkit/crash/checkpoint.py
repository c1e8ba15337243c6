"""Checkpoints and the failure database of crash exploration on executors.

A *checkpoint* (``explore(..., checkpoint=FILE)``, ``--checkpoint FILE``) is a
JSON-lines file: a header naming the run (a digest of the point log, model,
engine and seed), then one line per finished task with the violations it found.
Running again with the same file skips the finished tasks and keeps their
violations; a line cut short by a kill is ignored (its task runs again).

The *failure database* (``failures=DIR``, ``--failures DIR``) is a directory,
Hypothesis-style, that can be kept as a CI artifact: one JSON file per run
fingerprint listing its violating state indices. The next run with the same
fingerprint checks those states first (a bug that was fixed and came back is
reported at once; with ``stop_at_first`` nothing else runs); states that no
longer fail are dropped from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import CheckpointError

FORMAT = 1


class Checkpoint:
    """Finished tasks and their violations, appended as they finish."""

    def __init__(self, path, run, header):
        self.path = Path(path)
        self.run = run
        self.done = {}  # (first index, last index) -> [(index, choice, message)]
        self._f = None
        header = dict(header, **{"pmemkit-checkpoint": FORMAT, "run": run})
        if self.path.exists() and self.path.stat().st_size:
            self._load(header)
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
        else:
            try:
                self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise CheckpointError(
                    f"cannot create checkpoint {str(self.path)!r}: {exc.strerror or exc}"
                ) from None
            self._append(header)

    def _load(self, header):
        try:
            lines = self.path.read_text(encoding="utf-8").split("\n")
            first = json.loads(lines[0])
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(
                f"{str(self.path)!r} is not a pmemkit checkpoint ({exc}); "
                f"give another file or delete it"
            ) from None
        if not isinstance(first, dict) or first.get("pmemkit-checkpoint") != FORMAT:
            raise CheckpointError(
                f"{str(self.path)!r} is not a pmemkit checkpoint; give another file or delete it"
            )
        if first.get("run") != self.run:
            diff = [k for k in header if first.get(k) != header[k] and k != "run"]
            what = ", ".join(diff) if diff else "the workload's trace"
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} belongs to another run (differs in: {what}); "
                f"run the same workload, model, engine and seed, or give another file"
            )
        for line in lines[1:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: that task runs again
            if isinstance(rec, dict) and "task" in rec:
                self.done[tuple(rec["task"])] = [
                    (i, {int(j): a for j, a in choice}, msg) for i, choice, msg in rec["violations"]
                ]

    def _append(self, rec):
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def record(self, key, results):
        self.done[key] = results
        self._append(
            {
                "task": list(key),
                "violations": [[i, sorted(choice.items()), msg] for i, choice, msg in results],
            }
        )

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None


class FailureDB:
    """A directory of violating state indices per run fingerprint."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot use {str(self.path)!r} as a failure database: "
                f"{exc.strerror or exc}; give a writable directory"
            ) from None

    def _file(self, run):
        return self.path / f"{run[:32]}.json"

    def load(self, run):
        """The stored violating states of ``run``: ``{index: message}``."""
        try:
            data = json.loads(self._file(run).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, ValueError):
            return {}  # a damaged entry is only a lost hint
        if not isinstance(data, dict) or data.get("run") != run:
            return {}
        return {int(i): m for i, m in data.get("states", {}).items()}

    def save(self, run, states, about):
        """Store ``{index: message}`` for ``run`` (atomically); an empty dict removes the entry."""
        f = self._file(run)
        if not states:
            f.unlink(missing_ok=True)
            return
        data = dict(about, run=run, states={str(i): m for i, m in sorted(states.items())})
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=1)
            os.replace(tmp, f)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
