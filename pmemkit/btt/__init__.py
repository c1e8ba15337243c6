"""The Block Translation Table: atomic sector writes on persistent memory.

Byte-compatible with Linux ``nd_btt`` and PMDK's libpmemblk::

    from pmemkit.btt import Btt
    b = Btt.create(target, lbasize=4096, nfree=256, version="1.1", offset=0, size=None)
    b = Btt.open(target, offset=0)          # runs recovery (flog replay)
    b.read(lba); b.write(lba, data); b.set_zero(lba); b.set_error(lba)
    b.read_many(lbas); b.write_many(lbas, data); b.check(); b.close()
    Btt.create_pmemblk(path, bsize, size) / Btt.open_pmemblk(path)
"""

__all__ = ["Btt", "BttWarning", "locate", "LINUX_LBASIZES"]


def __getattr__(name):
    # lazy, so that the CLI can list its options without importing numpy
    if name in ("Btt", "BttWarning", "locate"):
        from . import device
        return getattr(device, name)
    if name == "LINUX_LBASIZES":
        from .layout import LINUX_LBASIZES
        return LINUX_LBASIZES
    raise AttributeError(f"module 'pmemkit.btt' has no attribute {name!r}")
