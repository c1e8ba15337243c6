"""Runs of indices as half-open ranges: ``[3, 4, 5, 9]`` gives ``[3, 6)`` and ``[9, 10)``."""


def index_runs(indices, gap=1):
    """``(starts, ends)`` (lists) of the runs in ``indices``, a sorted 1-D numpy integer array:
    neighbours at most ``gap`` apart belong to one run (``gap=1``: consecutive indices); each run
    is ``[start, end)``, ``end`` one past its last index."""
    import numpy as np

    if indices.size == 0:
        return [], []
    breaks = np.flatnonzero(np.diff(indices) > gap)
    starts = np.concatenate(([indices[0]], indices[breaks + 1]))
    ends = np.concatenate((indices[breaks], [indices[-1]])) + 1
    return starts.tolist(), ends.tolist()
