"""A project's guest: ``[tool.pmemkit.vm]`` in its ``pyproject.toml``, overridden by options.

::

    [tool.pmemkit.vm]
    packages = ["gcc", "make", "libpmemobj-dev"]   # Debian packages added to the guest image
    pip = ["sortedcontainers", "-e .[test]"]         # pip requirements for the guest's Python
    setup = ["make -C native"]                       # shell commands run in the guest first

:func:`load_project` finds the project (the nearest ``pyproject.toml`` from the current directory
up to the share), validates it and applies the overrides; :class:`Project` says what the guest
layer (:func:`pmemkit.vm.guest.build_rootfs`) must hold. Everything here runs before a guest boots.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import defaults
from ..errors import VmConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Debian package names (Debian policy 5.6.7), optionally with ``=version``.
_DEB_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
#: Files whose content decides what ``pip install .`` of a project installs.
_BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")


@dataclass(frozen=True)
class Project:
    """What a project's guest needs. ``directory`` is where its ``pyproject.toml`` is (None when
    there is none); ``packages``/``pip``/``setup`` are tuples of strings; ``requires_python`` is
    ``[project] requires-python`` (or None)."""

    directory: Path | None = None
    packages: tuple = ()
    pip: tuple = ()
    setup: tuple = ()
    requires_python: str | None = None

    @property
    def pip_argv(self):
        """The pip requirements as pip arguments (``"-e .[test]"`` is two)."""
        return [arg for req in self.pip for arg in shlex.split(req)]

    @property
    def local_pip(self):
        """True when a pip requirement is a path (``.``, ``-e .[test]``, ``./sub``): the layer
        then depends on the project's build files and is built with the project in place."""
        return any(a.startswith((".", "/", "file:")) for a in self.pip_argv)

    def build_digest(self):
        """Hash of the project's build files (part of the layer's key when :attr:`local_pip`)."""
        h = hashlib.sha256()
        for name in _BUILD_FILES:
            path = self.directory / name if self.directory else None
            if path is not None and path.is_file():
                h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()[:16]


def _as_list(value, key, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise VmConfigError(f"{where}: {key} must be a list of strings, e.g. {key} = [\"...\"]")
    return [v.strip() for v in value if v.strip()]


def _split_option(values):
    """``--packages a,b --packages c`` -> ``["a", "b", "c"]`` (None: the option was not given)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def find_pyproject(start, stop=None):
    """The nearest ``pyproject.toml`` from ``start`` upwards, not above ``stop``; None if none."""
    start = Path(start).resolve()
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
        if stop is not None and directory == Path(stop):
            break
    return None


def read_pyproject(path):
    """``([tool.pmemkit.vm] as a dict, requires-python)`` of ``path``, validated."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VmConfigError(f"cannot read {path}: {exc}: fix the file or run from another "
                            "directory") from None
    section = data.get("tool", {}).get("pmemkit", {}).get("vm", {})
    where = f"{path} [tool.pmemkit.vm]"
    if not isinstance(section, dict):
        raise VmConfigError(f"{where} must be a table")
    for key in section:
        if key not in defaults.VM_PROJECT_KEYS:
            close = difflib.get_close_matches(key, defaults.VM_PROJECT_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise VmConfigError(f"{where}: unknown key {key!r}: {hint}the keys are "
                                f"{', '.join(defaults.VM_PROJECT_KEYS)}")
    values = {key: _as_list(section[key], key, where) for key in section}
    requires = data.get("project", {}).get("requires-python")
    return values, requires if isinstance(requires, str) else None


def check_packages(names):
    for name in names:
        if not _DEB_NAME.match(name):
            raise VmConfigError(f"{name!r} is not a Debian package name (lower case letters, "
                                "digits, + - .; e.g. libpmemobj-dev): fix packages / --packages")


def load_project(start=None, share=None, *, packages=None, pip=None, setup=None):
    """The :class:`Project` for a guest started from ``start`` (default: the current directory)
    with host directory ``share`` shared (None: nothing shared). ``packages``/``pip``/``setup``
    (lists, each item may be a comma list for packages; None = not given) replace the
    pyproject's values. No pyproject and no options gives an empty project (pmemkit only)."""
    start = Path(start if start is not None else Path.cwd()).resolve()
    share = Path(share).resolve() if share is not None else None
    inside = share is not None and (start == share or share in start.parents)
    pyproject = find_pyproject(start, share if inside else None)
    values, requires = read_pyproject(pyproject) if pyproject else ({}, None)
    directory = pyproject.parent if pyproject else None
    overrides = {"packages": _split_option(packages), "pip": pip and [p.strip() for p in pip],
                 "setup": setup and list(setup)}
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    project = Project(directory, tuple(values.get("packages", ())), tuple(values.get("pip", ())),
                      tuple(values.get("setup", ())), requires)
    check_packages(project.packages)
    if project.pip or project.setup:
        where = directory or start
        if share is None:
            raise VmConfigError(
                f"the project in {where} has pip requirements or setup commands but no "
                "directory is shared with the guest: drop --no-share (the project directory "
                "must be shared)")
        if not (where == share or share in where.parents):
            raise VmConfigError(
                f"the project directory {where} is not under the shared directory {share}: run "
                f"pmemkit from inside {share}, or pass --share {where} (or a directory above it)")
    return project


def check_python(project, version):
    """Raise :class:`VmConfigError` when the guest's Python ``version`` ("3.11") does not satisfy
    the project's ``requires-python``."""
    if not project.requires_python:
        return
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    try:
        spec = SpecifierSet(project.requires_python)
    except InvalidSpecifier:
        raise VmConfigError(f"requires-python {project.requires_python!r} in "
                            f"{project.directory}/pyproject.toml does not parse") from None
    if not spec.contains(f"{version}.0") and not spec.contains(f"{version}.99"):
        raise VmConfigError(
            f"the guest's Python is {version} (Debian {defaults.VM_SUITE}) but the project in "
            f"{project.directory} has requires-python {project.requires_python!r}: allow "
            f"Python {version} in pyproject.toml to test on emulated pmem")
