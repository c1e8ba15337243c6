"""index_runs: the one "runs of changed indices" helper (image diffs, trace diffs, reports)."""

import numpy as np

from pmemkit.ranges import index_runs


def test_consecutive_indices_form_runs():
    assert index_runs(np.array([3, 4, 5, 9, 11, 12])) == ([3, 9, 11], [6, 10, 13])


def test_gap_joins_neighbours():
    assert index_runs(np.array([0, 8, 17, 18]), gap=8) == ([0, 17], [9, 19])


def test_empty_and_single():
    assert index_runs(np.array([], dtype=np.int64)) == ([], [])
    assert index_runs(np.array([7])) == ([7], [8])
