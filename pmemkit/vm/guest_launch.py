"""Runs inside the guest (Debian's python3 -I -S): execute the job's command, no shell involved.

Reads ``job.json`` (argv, env, cwd, setup, native) from the job directory given as argv[1]:
checks that pmemkit's native extension (``native``, a file path) loads in this Python - if not,
it says so loudly in ``native-failed`` and exits 125, rather than letting pmemkit fall back to
msync on DAX -, runs the project's ``setup`` commands (``/bin/sh -c``, from the project's own
pyproject.toml), then ``execvpe``\\ s the command, so its exit status is the guest's exit status.
Exit 127 when the command is not found.
"""

import importlib.util
import json
import os
import subprocess
import sys


def check_native(job, path):
    try:
        spec = importlib.util.spec_from_file_location("pmemkit._flush", path)
        importlib.util.module_from_spec(spec)
        return True
    except (ImportError, OSError, AttributeError) as exc:
        why = exc if os.path.exists(path) else "the file is missing"
        message = (f"pmemkit's native extension does not load in the guest's Python "
                   f"{sys.version.split()[0]} ({path}: {why}); pmemkit would fall back to msync on "
                   "DAX, so nothing was run. Install pmemkit from its wheel or sdist (they carry "
                   "the source the guest layer rebuilds it from) or report this as a bug.")
        sys.stderr.write(f"pmemkit-guest: {message}\n")
        with open(os.path.join(job, "native-failed"), "w", encoding="utf-8") as f:
            f.write(message)
        return False


def main():
    job_dir = sys.argv[1]
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    env = dict(os.environ)
    env.update(job["env"])
    cwd = job.get("cwd")
    if cwd:
        try:
            os.chdir(cwd)
        except OSError as exc:
            sys.stderr.write(f"pmemkit-guest: cannot enter {cwd}: {exc}\n")
    if job.get("native") and not check_native(job_dir, job["native"]):
        sys.exit(125)
    for command in job.get("setup", []):
        sys.stdout.flush()
        status = subprocess.run(["/bin/sh", "-c", command], env=env, check=False).returncode
        if status != 0:
            sys.stderr.write(f"pmemkit-guest: setup command {command!r} failed (exit {status}); "
                             "fix [tool.pmemkit.vm] setup or --setup\n")
            sys.exit(status)
    argv = job["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        sys.stderr.write(f"pmemkit-guest: cannot run {argv[0]!r}: {exc.strerror}\n")
        sys.exit(127)


main()
