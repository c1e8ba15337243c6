"""The Block Translation Table: atomic sector writes on persistent memory.

Byte-compatible with Linux ``nd_btt`` and PMDK's libpmemblk::

    from pmemkit.btt import Btt
    b = Btt.create(target, lbasize=4096, nfree=256, version="1.1", offset=0, size=None)
    b = Btt.open(target, offset=0)          # runs recovery (flog replay)
    b.read(lba); b.write(lba, data); b.set_zero(lba); b.set_error(lba)
    b.read_many(lbas); b.write_many(lbas, data); b.check(); b.close()
    Btt.create_pmemblk(path, bsize, size) / Btt.open_pmemblk(path)
"""

from .device import Btt, BttWarning, locate  # noqa: F401
from .layout import LINUX_LBASIZES  # noqa: F401

__all__ = ["Btt", "BttWarning", "locate", "LINUX_LBASIZES"]
