"""pmemkit.discovery as a package: the old names still work, the live backend keeps pyudev's
devices. Its seams' layers (the data model is the floor) are checked with the rest of the
package's import graph in tests/test_architecture.py."""

import pmemkit.discovery

#: every name the single-module discovery offered to other code
OLD_NAMES = (
    "Advice", "CpuFeatures", "CxlDevice", "DAX_OPTIONS", "Device", "Discovery", "DiscoveryError",
    "MemmapArg",
    "Mount", "NAMESPACE_MODES", "Namespace", "NdRegion", "Problem", "STATX_ATTR_DAX",
    "_read_mounts_file", "_statx_raw", "approx_size", "dax_mount_points", "diagnose", "discover",
    "has_eadr", "is_dax", "native_flush_available", "parse_cmdline_memmaps", "suggest_memmap",
)


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
