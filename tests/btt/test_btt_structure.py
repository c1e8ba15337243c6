"""The BTT sees memory only through the Region contract (no attribute of a concrete mapping
class). The layers of its modules (layout, arena and batch, device, pmemblk and crashsuite) are
checked with the rest of the package's import graph in tests/test_architecture.py."""

import ast
from pathlib import Path

import pmemkit.btt

PACKAGE = Path(pmemkit.btt.__file__).parent


def test_the_btt_does_not_sniff_concrete_regions():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attrs & {"flush_method", "native", "_impl", "_mmap"}, path.name
