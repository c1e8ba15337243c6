import shutil

import pytest

from blkhelper import Pool, load


@pytest.fixture(scope="session")
def libpmemblk():
    """Debian's libpmemblk through ctypes (scripts/bootstrap.sh installs libpmemblk1)."""
    lib = load()
    assert lib is not None, "libpmemblk.so.1 is missing: run scripts/bootstrap.sh (apt libpmemblk1)"
    return lib


@pytest.fixture(scope="session")
def pmempool():
    exe = shutil.which("pmempool")
    assert exe, "pmempool is missing: run scripts/bootstrap.sh (apt pmdk-tools)"
    return exe


@pytest.fixture
def blkpool(libpmemblk):
    """Open a pool through libpmemblk: blkpool(path, bsize) -> Pool (closed at teardown)."""
    pools = []

    def opener(path, bsize):
        p = Pool(libpmemblk, path, bsize)
        pools.append(p)
        return p

    yield opener
    for p in pools:
        p.close()
