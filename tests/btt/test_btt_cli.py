"""``pmemkit btt info|check PATH`` and ``pmemkit btt crash-suite``."""

import json
import subprocess
import sys

from pmemkit.btt import Btt
from pmemkit.cli import main

from blkhelper import run_pmempool


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_info_and_check_of_a_libpmemblk_pool(tmp_path, capsys, blkpool):
    path = tmp_path / "p.blk"
    assert run_pmempool("create", "blk", 512, path).returncode == 0
    pool = blkpool(path, 512)
    pool.write(3, b"z" * 512)
    pool.set_error(4)
    pool.close()
    status, out, _ = run(capsys, "btt", "info", path)
    assert status == 0
    assert "BTT at offset 8192" in out and f"{pool.nblock} blocks" in out
    assert "External LBA count  : " in out and "error 1" in out and "normal 1" in out
    status, out, _ = run(capsys, "btt", "check", path)
    assert status == 0 and out.strip().endswith("consistent")
    status, out, _ = run(capsys, "btt", "info", "--json", path)
    assert json.loads(out)["arenas"][0]["map"]["error"] == 1


def test_namespace_image_is_found_and_corruption_reported(tmp_path, capsys):
    path = tmp_path / "ns.img"
    b = Btt.create(str(path), lbasize=4096, offset=4096, size=20 << 20)
    b.write(0, b"a" * 4096)
    b.write(1, b"b" * 4096)
    mapoff = b.arenas[0].mapoff
    b.close()
    status, out, _ = run(capsys, "btt", "info", path)
    assert status == 0 and "BTT at offset 4096" in out
    before = path.read_bytes()
    with open(path, "r+b") as f:                     # map[1] = map[0]
        f.seek(mapoff)
        e0 = f.read(4)
        f.seek(mapoff + 4)
        f.write(e0)
    status, out, _ = run(capsys, "btt", "check", path)
    assert status == 1 and "more than once" in out and "NOT consistent" in out
    status, out, _ = run(capsys, "btt", "check", "--json", "--offset", 4096, path)
    assert status == 1 and json.loads(out)["consistent"] is False
    assert len(path.read_bytes()) == len(before)     # check never modified the image size


def test_errors_are_clear(tmp_path, capsys):
    empty = tmp_path / "zeros"
    empty.write_bytes(bytes(1 << 20))
    status, _, err = run(capsys, "btt", "info", empty)
    assert status == 2 and "no valid BTT info block" in err
    status, _, err = run(capsys, "btt", "check", "--offset", 0, empty)
    assert status == 2 and "no BTT found" in err


def test_crash_suite_command():
    """A sampled run is not an OK: exit status 3 (incomplete), and the table says so."""
    res = subprocess.run([sys.executable, "-m", "pmemkit", "btt", "crash-suite", "--workload",
                          "overwrite", "--writes", "2", "--engine", "random:100"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "overwrite   btt" in res.stdout and "overwrite   raw" in res.stdout
    assert "no torn sectors, no lost writes" in res.stdout
    assert "tore in every workload" in res.stdout
    assert "(incomplete)" in res.stdout and "INCOMPLETE" in res.stdout


def test_crash_suite_complete_run_is_ok(capsys):
    """Under eADR every crash state of the suite can be explored: a complete OK, status 0."""
    status = main(["btt", "crash-suite", "--workload", "overwrite", "--writes", "2",
                   "--model", "eadr", "--engine", "exhaustive"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "incomplete" not in out.lower()


def test_crash_suite_exhaustive_refuses_before_running_anything(monkeypatch, capsys):
    from pmemkit.btt import crashsuite

    ran = []
    monkeypatch.setattr(crashsuite, "run_workload", lambda *a, **k: ran.append(a))
    status = main(["btt", "crash-suite", "--engine", "exhaustive", "--writes", "1"])
    err = capsys.readouterr().err
    assert status == 2 and not ran
    assert "refuses" in err and "crash states" in err and "workload 'random' in btt mode" in err
