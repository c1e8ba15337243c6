"""pmemkit.discovery as a package: its seams import one way, and the old names still work."""

import ast
from pathlib import Path

import pmemkit.discovery

PACKAGE = Path(pmemkit.discovery.__file__).parent
#: each module and the sibling modules it may import (the data model is the floor)
ALLOWED = {
    "model": set(),
    "cmdline": {"model"},
    "files": {"model"},
    "udev": {"model"},
    "doctor": {"model"},
    "__init__": {"model", "cmdline", "files", "udev", "doctor"},
}
#: every name the single-module discovery offered to other code
OLD_NAMES = (
    "Advice", "CpuFeatures", "CxlDevice", "DAX_OPTIONS", "Device", "Discovery", "DiscoveryError",
    "MemmapArg",
    "Mount", "NAMESPACE_MODES", "Namespace", "NdRegion", "Problem", "STATX_ATTR_DAX",
    "_read_mounts_file", "_statx_raw", "approx_size", "dax_mount_points", "diagnose", "discover",
    "has_eadr", "is_dax", "native_flush_available", "parse_cmdline_memmaps", "suggest_memmap",
)


def _siblings(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module
                         else [alias.name for alias in node.names])
    return found


def test_seams_import_one_way():
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(ALLOWED)
    for name in modules:
        assert _siblings(PACKAGE / f"{name}.py") <= ALLOWED[name], name


def test_old_import_names_keep_working():
    for name in OLD_NAMES:
        assert getattr(pmemkit.discovery, name) is not None, name
    from pmemkit.discovery import diagnose, discover, parse_cmdline_memmaps  # noqa: F401


def test_the_live_backend_keeps_pyudev_devices():
    """Attributes are read from the pyudev Device found once (no re-resolving per attribute)."""
    import pyudev

    from pmemkit.discovery.udev import UdevBackend

    backend = UdevBackend([])
    for dev in backend.block_devices() + backend.nd_devices() + backend._list("mem", ""):
        assert isinstance(dev.device, pyudev.Device)
        assert dev.text("no-such-attribute") is None
        assert dev.number("no-such-attribute", "x") is None
