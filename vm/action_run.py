"""The GitHub Action's last step (action.yml): turn its inputs (``PMEMKIT_*`` environment
variables) into a ``pmemkit vm run`` or ``pmemkit vm test`` argument list - no shell in between -
and run it. ``PMEMKIT_COMMAND`` runs through ``sh -c`` in the guest, as a workflow's ``run:`` would.
"""

import os
import shlex
import sys

from pmemkit.cli import main


def _lines(env, name, split_commas=False):
    items = env.get(name, "").splitlines()
    if split_commas:
        items = [part for item in items for part in item.split(",")]
    return [item.strip() for item in items if item.strip()]


def action_argv(env=os.environ):
    """The pmemkit argv for the action inputs in ``env``."""
    command = env.get("PMEMKIT_COMMAND", "").strip()
    argv = ["vm", "run" if command else "test"]
    # an input left empty leaves pmemkit's default (action.yml gives accel and timeout theirs)
    for option, name in (("--accel", "PMEMKIT_ACCEL"), ("--timeout", "PMEMKIT_TIMEOUT"),
                         ("--memmap", "PMEMKIT_MEMMAP"), ("--nvdimm", "PMEMKIT_NVDIMM"),
                         ("--fs", "PMEMKIT_FS")):
        if env.get(name, "").strip():
            argv += [option, env[name].strip()]
    for item in _lines(env, "PMEMKIT_PACKAGES", split_commas=True):
        argv += ["--packages", item]
    for item in _lines(env, "PMEMKIT_PIP"):
        argv += ["--pip", item]
    for item in _lines(env, "PMEMKIT_SETUP"):
        argv += ["--setup", item]
    if command:
        return argv + ["--", "sh", "-c", command]
    return argv + ["--", *shlex.split(env.get("PMEMKIT_PYTEST_ARGS", ""))]


if __name__ == "__main__":
    sys.exit(main(action_argv()))
