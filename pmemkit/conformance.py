"""The Region contract's argument table: bad values and the error each must raise.

Every region (``PmemMap`` on each flush method, ``BufferRegion``, the crash
simulator's traced region) and every layer that takes offsets, lengths, data or
byte values from a user (the BTT) refuses the same bad arguments with the same
error classes. The test suite runs each implementation through these tables
(``tests/region/test_conformance.py``); a new implementation can do the same.

Each table is a tuple of ``(value, error class)``; ``bad_data()`` builds numpy
values and so is a function (numpy is imported only when it is called).
"""

from __future__ import annotations

from .errors import InvalidArgumentError, OutOfRangeError

#: Values that are not an offset, a length, an LBA or a count.
BAD_INTEGERS = (
    (True, InvalidArgumentError),
    (False, InvalidArgumentError),
    (1.0, InvalidArgumentError),
    ("0", InvalidArgumentError),
    (None, InvalidArgumentError),
    (b"\0", InvalidArgumentError),
    (-1, OutOfRangeError),
    (-(2**70), OutOfRangeError),
    (2**70, OutOfRangeError),
)

#: Values that are not a memset fill byte.
BAD_BYTE_VALUES = (
    (-1, InvalidArgumentError),
    (256, InvalidArgumentError),
    (2**70, InvalidArgumentError),
    ("x", InvalidArgumentError),
    (b"x", InvalidArgumentError),
    (1.0, InvalidArgumentError),
    (None, InvalidArgumentError),
    (True, InvalidArgumentError),
)

#: numpy dtypes a region's ``array()`` refuses (objects, unknown names, empty items).
BAD_DTYPES = (
    (object, InvalidArgumentError),
    ("O", InvalidArgumentError),
    ([("n", "u8"), ("o", "O")], InvalidArgumentError),
    ("bogus", InvalidArgumentError),
    ("S0", InvalidArgumentError),
    ("T", InvalidArgumentError),
)


def bad_data():
    """Values that are not C-contiguous bytes, each with the error a store of it raises."""
    import numpy as np

    fortran = np.asfortranarray(np.arange(12, dtype="u1").reshape(3, 4))
    return (
        ("text", InvalidArgumentError),
        (12, InvalidArgumentError),
        (None, InvalidArgumentError),
        ([1, 2], InvalidArgumentError),
        (memoryview(bytes(8))[::2], InvalidArgumentError),
        (fortran, InvalidArgumentError),
        (np.arange(8, dtype="u1")[::2], InvalidArgumentError),
    )
