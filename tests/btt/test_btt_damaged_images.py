"""Damaged, truncated and read-only images: the BTT is found from either info block copy,
the damage is reported, read-only files open read-only, a truncated image says so."""

import hashlib
import json
import re

import pytest

from pmemkit.btt import Btt, create_pmemblk, locate, open_pmemblk
from pmemkit.btt import layout
from pmemkit.cli import main
from pmemkit.errors import BttCorruptError, BttReadOnlyError

OFFSET = 4096          # a label-less (1.1) namespace: the BTT starts at 4 KiB


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image(tmp_path):
    """A namespace image with a BTT at 4 KiB and two written blocks; returns (path, infooff)."""
    path = tmp_path / "ns.img"
    b = Btt.create(str(path), lbasize=512, offset=OFFSET, size=20 << 20)
    b.write(0, b"a" * 512)
    b.write(1, b"b" * 512)
    infooff = b.arenas[0].infooff
    b.close()
    return path, infooff


def smash(path, offset, length=16):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * length)


@pytest.mark.parametrize("copy", ["primary", "backup"])
def test_cli_finds_the_btt_from_either_info_block_and_reports_the_damage(image, capsys, copy):
    path, infooff = image
    smash(path, OFFSET if copy == "primary" else infooff)
    before = digest(path)
    assert locate(str(path)) == [OFFSET]
    status, out, err = run(capsys, "btt", "info", path)
    assert status == 0, err
    assert "BTT at offset 4096" in out
    other = "backup" if copy == "primary" else "primary"
    assert re.search(rf"{copy.capitalize()} info block +: DAMAGED: bad signature", out), out
    assert re.search(rf"{other.capitalize()} info block +: intact", out), out
    status, out, _ = run(capsys, "btt", "info", "--json", path)
    damage = json.loads(out)["arenas"][0]["info_damage"]
    assert damage[copy].startswith("bad signature") and damage[other] is None
    status, out, _ = run(capsys, "btt", "check", path)
    assert status == 1 and "NOT consistent" in out
    assert ("primary info block at offset 4096 is invalid" in out if copy == "primary"
            else f"backup info block at offset {infooff}: bad signature" in out)
    assert digest(path) == before                    # read-only tools never repair


def test_readonly_open_maps_a_read_only_file_read_only(image, capsys):
    path, _ = image
    path.chmod(0o444)
    before = digest(path)
    b = Btt.open(str(path), OFFSET, readonly=True)
    assert not b.region.writable                     # O_RDONLY, PROT_READ
    assert b.read(0) == b"a" * 512 and b.read_many([1])[0].tobytes() == b"b" * 512
    assert b.check() == []
    with pytest.raises(BttReadOnlyError):
        b.write(0, b"c" * 512)
    b.close()
    assert run(capsys, "btt", "info", path)[0] == 0
    assert run(capsys, "btt", "check", path)[0] == 0
    assert digest(path) == before


def test_readonly_pmemblk_pool_on_a_read_only_file(tmp_path, capsys):
    path = tmp_path / "pool.blk"
    b = create_pmemblk(str(path), 512, 17 << 20)
    b.write(2, b"p" * 512)
    b.close()
    path.chmod(0o444)
    b = open_pmemblk(str(path), readonly=True)
    assert not b.region.writable and b.read(2) == b"p" * 512
    b.close()
    status, out, _ = run(capsys, "btt", "check", path)
    assert status == 0 and out.strip().endswith("consistent")


@pytest.mark.parametrize("keep", [64 << 10, (20 << 20) // 2])
def test_a_truncated_image_says_truncated(image, capsys, keep):
    path, _ = image
    with open(path, "r+b") as f:
        f.truncate(OFFSET + keep)
    before = digest(path)
    with pytest.raises(BttCorruptError, match="truncated"):
        Btt.open(str(path), OFFSET, readonly=True)
    with pytest.raises(BttCorruptError, match="truncated"):
        Btt.open(str(path), OFFSET)
    for command in ("info", "check"):
        status, _, err = run(capsys, "btt", command, path)
        assert status == 2 and "truncated" in err, err
    assert digest(path) == before


def test_truncated_multi_arena_image(tmp_path):
    path = tmp_path / "multi.img"
    Btt.create(str(path), lbasize=512, size=3 << 20, arena_size=1 << 20).close()
    with open(path, "r+b") as f:
        f.truncate((3 << 20) - layout.INFO_SIZE)
    with pytest.raises(BttCorruptError, match="truncated"):
        Btt.open(str(path), readonly=True)


@pytest.mark.parametrize("option", ["--writes", "--lbasize", "--nfree", "--max-states"])
@pytest.mark.parametrize("value", ["-3", "0", "x"])
def test_crash_suite_refuses_bad_counts_as_a_usage_error(capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["btt", "crash-suite", option, value])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "x"])
def test_info_refuses_a_bad_offset(image, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["btt", "info", "--offset", value, str(image[0])])
    assert exc.value.code == 2
