"""The Block Translation Table: atomic sector writes on persistent memory.

Byte-compatible with Linux ``nd_btt`` and PMDK's libpmemblk::

    from pmemkit.btt import Btt
    b = Btt.create(target, lbasize=4096, nfree=256, version="1.1", offset=0, size=None)
    b = Btt.open(target, offset=0)          # runs recovery (flog replay)
    b.read(lba); b.write(lba, data); b.set_zero(lba); b.set_error(lba)
    b.read_many(lbas); b.write_many(lbas, data); b.check(); b.close()
    create_pmemblk(path, bsize, size) / open_pmemblk(path)     # libpmemblk pool files

Modules: ``layout`` (on-media encodings), ``arena`` (find, recover, lay out and check
arenas), ``device`` (:class:`Btt`, the single-block API and its one commit), ``batch``
(``read_many``/``write_many``), ``pmemblk`` (libpmemblk pools, wrapping the BTT) and
``crashsuite``.
"""

__all__ = ["Btt", "BttWarning", "locate", "LINUX_LBASIZES", "create_pmemblk", "open_pmemblk"]

_HOMES = {"Btt": "device", "BttWarning": "device", "locate": "arena", "LINUX_LBASIZES": "layout",
          "create_pmemblk": "pmemblk", "open_pmemblk": "pmemblk"}


def __getattr__(name):
    # lazy, so that the CLI can list its options without importing numpy
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pmemkit.btt' has no attribute {name!r}")
    from importlib import import_module
    return getattr(import_module(f".{home}", __name__), name)
