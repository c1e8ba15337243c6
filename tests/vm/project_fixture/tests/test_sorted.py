import os

import pytest

import pmemfixture


def test_roundtrip_plain(tmp_path):
    pmemfixture.save(tmp_path / "set.bin", [5, 3, 9, 3])
    assert pmemfixture.load(tmp_path / "set.bin") == [3, 5, 9]


@pytest.mark.dax
def test_roundtrip_on_dax(dax_dir):
    path = os.path.join(dax_dir, "set.bin")
    assert pmemfixture.save(path, [2, 1]) is True      # MAP_SYNC mapping: real pmem
    assert pmemfixture.load(path) == [1, 2]
