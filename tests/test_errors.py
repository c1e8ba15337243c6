"""Errors carry typed fields (path, lba, offset) where the raising code knows them, as pyudev's
do; the messages stay as they were, and the fields survive pickling (worker processes)."""

import pickle

import pytest

from pmemkit import map_file
from pmemkit._linux import mounts
from pmemkit.btt import Btt
from pmemkit.errors import BttCorruptError, BttIOError, DiscoveryError, MappingError, PmemError
from pmemkit.region import BufferRegion


def test_fields_default_to_none_and_survive_pickling():
    err = PmemError("plain")
    assert (err.path, err.lba, err.offset) == (None, None, None) and str(err) == "plain"
    err = pickle.loads(pickle.dumps(MappingError(2, "gone", path="/p")))
    assert (err.errno, err.path, str(err)) == (2, "/p", "[Errno 2] gone")


def test_mapping_error_names_the_path(tmp_path):
    missing = str(tmp_path / "missing")
    with pytest.raises(MappingError, match="does not exist") as info:
        map_file(missing)
    assert info.value.path == missing


def test_btt_io_error_names_the_lba():
    btt = Btt.create(BufferRegion(bytearray(16 << 20)), 4096)
    btt.set_error(7)
    with pytest.raises(BttIOError, match="lba 7") as info:
        btt.read(7)
    assert info.value.lba == 7
    with pytest.raises(BttIOError) as info:
        btt.read_many([3, 7])
    assert info.value.lba == 7


def test_btt_corrupt_error_names_the_offset():
    with pytest.raises(BttCorruptError, match="no BTT found") as info:
        Btt.open(BufferRegion(bytearray(16 << 20)), 4096)
    assert info.value.offset == 4096


def test_discovery_error_names_the_path(tmp_path):
    (tmp_path / "proc/self/mounts").mkdir(parents=True)
    with pytest.raises(DiscoveryError, match="cannot read") as info:
        mounts.read_mounts(str(tmp_path))
    assert info.value.path == str(tmp_path / "proc/self/mounts")
