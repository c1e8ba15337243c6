"""`pmemkit crash` stopped by SIGTERM (timeout, a cancelled CI job) cleans up like Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

LOG = Path(__file__).parents[1] / "crash" / "data" / "pmemcheck" / "flag_b.log"

#: A checker that notes each image path it is given, then takes its time.
CHECKER = textwrap.dedent("""\
    import sys, time
    with open(sys.argv[1], "a") as f:
        f.write(sys.argv[-1] + "\\n")
    time.sleep(0.5)
""")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_terminated_crash_command_leaves_nothing(tmp_path, how, workers):
    seen = tmp_path / "seen"
    checker = tmp_path / "check.py"
    checker.write_text(CHECKER)
    argv = [sys.executable, "-m", "pmemkit", "crash", str(LOG), "--initial", "zeros",
            "--workers", workers, "--check", sys.executable, str(checker), str(seen)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for _ in range(600):        # until the checker has run at least once
            if seen.exists() and seen.read_text():
                break
            time.sleep(0.05)
        os.kill(proc.pid, getattr(signal, how))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    dirs = {Path(p).parent for p in seen.read_text().split()}
    assert dirs and not any(d.exists() for d in dirs), f"left behind: {dirs}"
    for _ in range(50):     # no worker or checker of the run is left running (zombies are dead)
        ps = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(proc.pid)],
                            capture_output=True, text=True).stdout.splitlines()
        left = [line for line in ps if not line.startswith("Z")]
        if not left:
            break
        time.sleep(0.1)
    assert not left
