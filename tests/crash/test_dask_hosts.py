"""`pmemkit crash --scheduler` on a cluster of separate hosts, as docs/crash-scale.md sets it up.

Each host is a Linux network namespace with its own address on one bridge (in a namespace of its
own, so the machine's network is untouched): `dask scheduler` on one, `dask worker` on two
others, and `pmemkit crash ... --scheduler tcp://ADDRESS:8786` on a fourth. The verdict, the
counts and the violations must be those of the same run without a cluster. Needs root (network
namespaces) and iproute2; skipped where either is missing.
"""

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

DATA = Path(__file__).parent / "data" / "pmemcheck"
SUBNET = "10.231.7"
HOSTS = {"sched": 2, "w1": 3, "w2": 4, "client": 5}
PORT = 8786
BIN = Path(sys.executable).parent


def _ip(*argv):
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


def _netns_available():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"pkprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError:
        return False
    _ip("netns", "del", probe)
    return True


pytestmark = pytest.mark.skipif(not _netns_available(),
                                reason="needs root and iproute2 network namespaces")


@pytest.fixture(scope="module")
def hosts():
    """Namespaces ``{role: name}`` on one bridge; removed afterwards, whatever happened."""
    tag = f"pk{os.getpid() % 100000}"
    switch = f"{tag}-sw"
    names = {role: f"{tag}-{role}" for role in HOSTS}
    made = []
    try:
        for ns in (switch, *names.values()):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for role, ns in names.items():
            port = f"p{HOSTS[role]}"
            _ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{HOSTS[role]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


@pytest.fixture(scope="module")
def cluster(hosts, tmp_path_factory):
    """A scheduler and two one-thread workers, each on its own host; the scheduler's address."""
    tmp_path = tmp_path_factory.mktemp("cluster")
    address = f"tcp://{SUBNET}.{HOSTS['sched']}:{PORT}"
    procs = []
    logs = tmp_path / "logs"
    logs.mkdir()
    # Dask's scratch directory (which every Dask process makes) in pytest's, not in /tmp
    saved = os.environ.get("DASK_TEMPORARY_DIRECTORY")
    os.environ["DASK_TEMPORARY_DIRECTORY"] = str(tmp_path)
    try:
        def start(role, *argv):
            out = open(logs / f"{role}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen(_in(hosts[role], *argv), stdout=out,
                                           stderr=subprocess.STDOUT, cwd=tmp_path), out))

        start("sched", str(BIN / "dask"), "scheduler", "--host", f"{SUBNET}.{HOSTS['sched']}",
              "--port", str(PORT), "--no-dashboard")
        for role in ("w1", "w2"):
            start(role, str(BIN / "dask"), "worker", address, "--nthreads", "1",
                  "--no-dashboard", "--local-directory", str(tmp_path / role),
                  "--name", role)
        wait = ("import sys, distributed\n"
                "c = distributed.Client(sys.argv[1], timeout=60)\n"
                "c.wait_for_workers(2, timeout=60)\n"
                "print(sorted(w['host'] for w in c.scheduler_info()['workers'].values()))\n"
                "c.close()\n")
        r = subprocess.run(_in(hosts["client"], sys.executable, "-c", wait, address),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + "".join(
            p.read_text(errors="replace") for p in logs.iterdir())
        assert r.stdout.strip() == str([f"{SUBNET}.{HOSTS['w1']}", f"{SUBNET}.{HOSTS['w2']}"])
        yield address
    finally:
        for p, _ in procs:
            p.terminate()
        deadline = time.monotonic() + 20
        for p, out in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            out.close()
        if saved is None:
            os.environ.pop("DASK_TEMPORARY_DIRECTORY", None)
        else:
            os.environ["DASK_TEMPORARY_DIRECTORY"] = saved


def _gcc(out, src, *libs):
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (scripts/bootstrap.sh installs it)")
    subprocess.run(["gcc", "-O0", "-o", str(out), str(src), *libs], check=True)
    return str(out)


def _crash(ns, *args):
    argv = [sys.executable, "-m", "pmemkit", "crash", *args]
    r = subprocess.run(_in(ns, *argv) if ns else argv, capture_output=True, text=True,
                       timeout=600)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else r.stderr


def _tasks_run(hosts, address):
    """How many check tasks the scheduler has seen finish."""
    ask = ("import sys, distributed\n"
           "c = distributed.Client(sys.argv[1], timeout=60)\n"
           "print(c.run_on_scheduler(lambda dask_scheduler: sum(\n"
           "    p.state_counts.get('memory', 0) + p.state_counts.get('forgotten', 0)\n"
           "    for name, p in dask_scheduler.task_prefixes.items() if 'check_task' in name)))\n"
           "c.close()\n")
    r = subprocess.run(_in(hosts["client"], sys.executable, "-c", ask, address),
                       capture_output=True, text=True, timeout=120, check=True)
    return int(r.stdout)


KEYS = ("status", "ok", "complete", "states_checked", "unique_images", "crash_points",
        "violations", "states_possible", "states_covered", "engines")


@pytest.mark.parametrize("log,prog,src,libs,initial,engine", [
    ("two_b.log", "two", "two.c", ["-lpmem"], None, "exhaustive"),
    # PMDK's obj_reorder_basic on a 32 MiB libpmemobj pool, checked with pmemobj_open
    ("objreorder.log", "objreorder", "objreorder.c", ["-lpmemobj"], "objreorder32.initial.gz",
     "prefix"),
])
def test_cluster_of_hosts_gives_the_local_verdict(hosts, cluster, tmp_path, log, prog, src,
                                                  libs, initial, engine):
    exe = _gcc(tmp_path / prog, DATA / "src" / src, *libs)
    pool = "zeros"
    if initial:
        pool = tmp_path / "pool.initial"
        pool.write_bytes(gzip.decompress((DATA / initial).read_bytes()))
    args = [str(DATA / log), "--initial", str(pool), "--json", "--engine", engine]
    local_rc, local = _crash(None, *args, "--check", exe, "c")
    before = _tasks_run(hosts, cluster)
    rc, remote = _crash(hosts["client"], *args, "--scheduler", cluster, "--check", exe, "c")
    assert _tasks_run(hosts, cluster) > before  # the states were checked on the cluster
    assert isinstance(remote, dict), remote
    assert rc == local_rc
    assert {k: remote[k] for k in KEYS} == {k: local[k] for k in KEYS}
