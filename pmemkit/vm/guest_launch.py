"""Runs inside the guest (Debian's python3 -I -S): execute the job's command, no shell involved.

Reads ``job.json`` (argv, env, cwd) from the job directory given as argv[1] and ``execvpe``\\ s the
command, so its exit status is the guest's exit status. Exit 127 when the command is not found.
"""

import json
import os
import sys


def main():
    with open(os.path.join(sys.argv[1], "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    env = dict(os.environ)
    env.update(job["env"])
    cwd = job.get("cwd")
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            sys.stderr.write(f"pmemkit-guest: cannot enter {cwd}: {exc}\n")
    argv = job["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        sys.stderr.write(f"pmemkit-guest: cannot run {argv[0]!r}: {exc.strerror}\n")
        sys.exit(127)


main()
