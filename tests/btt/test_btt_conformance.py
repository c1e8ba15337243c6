"""The BTT's argument checks run through the Region contract's tables
(:mod:`pmemkit.conformance`): the same bad value raises the same error class."""

import numpy as np
import pytest

from pmemkit.btt import Btt
from pmemkit.conformance import BAD_INTEGERS, bad_data
from pmemkit.errors import InvalidArgumentError

LBASIZE = 512


@pytest.fixture
def btt():
    b = Btt.create(bytearray(1 << 20), lbasize=LBASIZE, nfree=8)
    b.write(1, b"k" * LBASIZE)
    yield b
    b.close()


def _ids(table):
    return [repr(v)[:30] for v, _ in table]


@pytest.mark.parametrize(("value", "error"), BAD_INTEGERS, ids=_ids(BAD_INTEGERS))
@pytest.mark.parametrize("call", ["read", "write", "set_zero", "set_error", "read_many",
                                  "write_many"])
def test_bad_lbas_raise_the_table_s_error(btt, call, value, error):
    before = btt.read(1)
    with pytest.raises(error):
        if call == "write":
            btt.write(value, b"x" * LBASIZE)
        elif call == "read_many":
            btt.read_many([value])
        elif call == "write_many":
            btt.write_many([value], b"x" * LBASIZE)
        else:
            getattr(btt, call)(value)
    assert btt.read(1) == before and btt.check() == []


def test_bool_lbas_are_not_block_one(btt):
    """``True`` used to read (and write) block 1."""
    with pytest.raises(InvalidArgumentError):
        btt.read(True)
    with pytest.raises(InvalidArgumentError):
        btt.read_many(np.array([True, False]))


@pytest.mark.parametrize(("value", "error"), bad_data(), ids=_ids(bad_data()))
def test_bad_data_raises_the_table_s_error(btt, value, error):
    with pytest.raises(error):
        btt.write(0, value)
    assert btt.read(0) == bytes(LBASIZE)


@pytest.mark.parametrize("value", [5, 5.0, None, "x" * LBASIZE, [0] * LBASIZE])
def test_write_of_a_non_buffer_is_invalid_argument(btt, value):
    with pytest.raises(InvalidArgumentError, match="bytes-like"):
        btt.write(0, value)


NOT_INTEGERS = [v for v, error in BAD_INTEGERS if error is InvalidArgumentError]


@pytest.mark.parametrize("value", NOT_INTEGERS, ids=[repr(v) for v in NOT_INTEGERS])
def test_create_and_open_refuse_what_is_not_an_integer(value):
    params = ["lbasize", "nfree", "offset"] + (["size"] if value is not None else [])
    for name in params:                         # size=None means "the rest of the target"
        with pytest.raises(InvalidArgumentError, match=name):
            Btt.create(bytearray(1 << 20), **{"lbasize": LBASIZE, name: value})
    with pytest.raises(InvalidArgumentError, match="offset"):
        Btt.open(bytearray(1 << 20), value)
