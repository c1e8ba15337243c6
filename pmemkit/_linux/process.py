"""Process lifetime: a worker process that ends with the process that started it."""

import ctypes
import multiprocessing
import os
import signal

#: prctl(2) option: the signal this process gets when its parent thread exits (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def die_with_parent(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` to this process when its parent exits, however the parent
    ends (SIGKILL included), so worker processes never outlive the run that started them.

    For a :mod:`multiprocessing` child, if the parent is already gone this process exits at once.
    Returns False when prctl(2) is unavailable (then nothing changes).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)         # the parent died before the request was made: nobody to work for
    return True
