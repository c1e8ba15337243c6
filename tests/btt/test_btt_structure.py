"""The BTT package's shape: imports point one way, and it sees memory only through the
Region contract (no attribute of a concrete mapping class)."""

import ast
from pathlib import Path

import pmemkit.btt

PACKAGE = Path(pmemkit.btt.__file__).parent
#: each module of pmemkit.btt and the modules of the package it may import (lower layers)
ALLOWED = {
    "layout": set(),
    "arena": {"layout"},
    "batch": {"layout"},
    "device": {"layout", "arena", "batch"},
    "pmemblk": {"layout", "device"},
    "crashsuite": {"layout", "device"},
}


def _imports(path):
    """Sibling modules imported by ``path`` (relative imports ``from . import x`` / ``from .x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_every_module_imports_only_lower_layers():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert modules == set(ALLOWED), "a new module: give it its place in ALLOWED"
    for name in modules:
        assert _imports(PACKAGE / f"{name}.py") <= ALLOWED[name], name


def test_the_btt_does_not_sniff_concrete_regions():
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text())
        attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not attrs & {"flush_method", "native", "_impl", "_mmap"}, path.name
