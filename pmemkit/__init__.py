"""pmemkit: persistent memory for Python developers.

* :func:`map_file` maps a file with libpmem's flush/drain/persist semantics.
* :func:`discover` tells what this machine has (regions, namespaces, DAX mounts, CPU).
* :mod:`pmemkit.crash` explores every crash state of a workload.
* :mod:`pmemkit.btt` implements the Block Translation Table.
* :mod:`pmemkit.vm` boots emulated pmem in a QEMU guest.

``import pmemkit`` stays light: numpy is imported only when an array is asked for.
"""

import os as _os

from .defaults import NATIVE_DIR_ENV as _NATIVE_DIR_ENV
from .defaults import VERSION as __version__  # noqa: F401
from .errors import (  # noqa: F401
    ClosedMappingError,
    InvalidArgumentError,
    MappingError,
    NotPmemError,
    OutOfRangeError,
    PmemError,
    ReadOnlyError,
    UnsupportedFlushError,
)
from .region import BufferRegion, Region  # noqa: F401

# A guest whose Python differs from the host's gets the native extension rebuilt in its own
# directory (pmemkit vm's guest layer); the package then looks there too.
if _os.environ.get(_NATIVE_DIR_ENV):
    __path__.append(_os.environ[_NATIVE_DIR_ENV])


def __getattr__(name):
    # Lazy so that ``import pmemkit`` does not pull in pyudev/psutil/numpy.
    if name in ("map_file", "PmemMap"):
        from . import mapping
        return getattr(mapping, name)
    if name in ("discover", "is_dax"):  # functions of pmemkit.discovery
        from . import discovery
        return getattr(discovery, name)
    raise AttributeError(f"module 'pmemkit' has no attribute {name!r}")
