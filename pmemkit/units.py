"""Sizes as people write them (``4G``, ``512M``, ``128K``) and the ``memmap=`` argument."""

from __future__ import annotations

import re
from typing import NamedTuple

from .errors import InvalidArgumentError

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text, what="size"):
    """Parse ``"4G"``, ``"512M"``, ``"4096"``, ``"1GiB"`` (binary units) into bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise InvalidArgumentError(f"{what} must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(str(text))
    if not m:
        raise InvalidArgumentError(
            f"cannot parse {what} {text!r}: write a whole number with an optional "
            f"K, M, G or T suffix, e.g. 512M or 4G")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def format_size(n):
    """The shortest exact ``K``/``M``/``G``/``T`` spelling of ``n`` bytes (``4G``, ``1536M``)."""
    for suffix in ("T", "G", "M", "K"):
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


class Memmap(NamedTuple):
    """A ``memmap=SIZE!START`` range: SIZE bytes of RAM at physical START become pmem."""

    size: int
    start: int

    @property
    def end(self):
        return self.start + self.size

    def __str__(self):
        return f"{format_size(self.size)}!{format_size(self.start)}"

    @property
    def kernel_arg(self):
        return f"memmap={self}"


def parse_memmap(text):
    """Parse ``"4G!12G"`` or ``"memmap=4G!12G"`` into a :class:`Memmap`.

    Only the ``!`` (persistent memory) form is accepted; ``memmap=nn$ss`` and
    friends reserve memory of other kinds and are refused with a hint.
    """
    s = str(text).strip()
    if s.startswith("memmap="):
        s = s[len("memmap="):]
    if "!" not in s:
        raise InvalidArgumentError(
            f"memmap {text!r} is not a persistent-memory range: write SIZE!START, "
            f"e.g. 4G!12G (4 GiB of pmem starting at 12 GiB)")
    size_s, start_s = s.split("!", 1)
    size = parse_size(size_s, "memmap size")
    start = parse_size(start_s, "memmap start")
    if size == 0:
        raise InvalidArgumentError(f"memmap {text!r} has zero size")
    return Memmap(size, start)
