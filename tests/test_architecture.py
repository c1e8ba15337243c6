"""The package's import graph: arrows point down, and there are no circles.

Every ``import`` in ``pmemkit/`` (module level or inside a function: a lazy import is still an
arrow) is read with :mod:`ast`; C extensions (``_flush.c``, ``crash/_dirty.c``, ...) count as
modules that import nothing. Each top-level part of the package sits on a layer of
:data:`LAYERS` and may import only from parts on lower layers. Inside a package, each module sits
on a layer of :data:`INNER_LAYERS` and may import only its siblings on lower layers. This is the
one check of the house's shape: docs/architecture.md draws the same layers.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pmemkit"

#: Top-level parts of the package, bottom layer first. A part imports only from lower layers.
LAYERS = (
    ("errors",),
    ("defaults", "units", "ranges", "_linux", "_flush", "_interpose"),
    ("region", "cpu"),
    ("conformance", "mapping"),
    ("discovery",),
    ("crash",),
    ("btt",),
    ("vm",),
    ("sandbox",),
    ("cli", "pytest_plugin"),
    ("__main__",),
)
#: Inside a package: its modules, bottom layer first; a module imports only siblings below it.
#: A package's ``__init__`` re-exports its modules (top layer), except the ground floor's, which
#: holds the helper its readers share (bottom layer).
INNER_LAYERS = {
    "_linux": (("__init__",), ("cpuinfo", "mounts", "process", "statx", "sysfs")),
    "discovery": (("model",), ("cmdline", "files", "udev", "doctor"), ("__init__",)),
    "crash": (
        ("_dirty", "engines", "report", "checkpoint"),
        ("trace", "checkers"),
        ("model", "pmemcheck"),
        ("explore", "native"),
        ("executors", "replay"),
        ("api",),
        ("__init__",),
    ),
    "btt": (("layout",), ("arena", "batch"), ("device",), ("pmemblk", "crashsuite"), ("__init__",)),
    "vm": (
        ("cache", "config", "project", "guest_launch"),
        ("kernel", "qemu"),
        ("guest",),
        ("runner",),
        ("powercut",),
        ("__init__",),
    ),
    "sandbox": (("ssh",), ("disk",), ("__init__",)),
    "cli": (("status", "core"), ("explore",), ("btt", "crash", "crash_run", "vm"), ("__init__",)),
}
#: Entry points may use the public facade (``import pmemkit``) like any user.
ENTRY_POINTS = ("cli", "pytest_plugin", "__main__")
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}
INNER = {(pkg, mod): i for pkg, layers in INNER_LAYERS.items()
         for i, mods in enumerate(layers) for mod in mods}

#: ``pmemkit/__init__.py`` is the public facade: it may name anything (lazily).
FACADE = "pmemkit"


def module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    """Every module of the package: name -> path (None for a C extension, which imports
    nothing)."""
    found = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    for c in PACKAGE.rglob("*.c"):
        found.setdefault(module_name(c), None)
    return found


def imports_of(name, path, known):
    """The pmemkit modules ``name`` imports (resolved, including lazy imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pmemkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_pkg:
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "pmemkit":
                continue
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
            out.update(subs if subs else [mod])
    return {m for m in out if m in known and m != name}


def graph():
    known = modules()
    return {name: imports_of(name, path, known) if path else set() for name, path in known.items()}


def part(mod):
    """The top-level part of the package ``mod`` belongs to (``FACADE`` for the package)."""
    bits = mod.split(".")
    return bits[1] if len(bits) > 1 else FACADE


def inner(mod):
    """``mod``'s name inside its part: ``"__init__"`` for the part itself."""
    bits = mod.split(".")
    return bits[2] if len(bits) > 2 else "__init__"


def test_every_part_and_module_has_a_layer():
    g = graph()
    parts = {part(m) for m in g} - {FACADE}
    assert parts <= set(LAYER), f"give these a layer in LAYERS: {sorted(parts - set(LAYER))}"
    packages = {part(m) for m in g if m.count(".") > 1}
    assert packages == set(INNER_LAYERS), "every package (and only they) in INNER_LAYERS"
    missing = sorted(f"{part(m)}.{inner(m)}" for m in g
                     if part(m) in INNER_LAYERS and (part(m), inner(m)) not in INNER)
    assert not missing, f"give these a layer in INNER_LAYERS: {missing}"
    stale = sorted(f"{p}.{m}" for p, m in INNER if f"pmemkit.{p}" not in g
                   or (m != "__init__" and f"pmemkit.{p}.{m}" not in g))
    assert not stale, f"INNER_LAYERS names modules that do not exist: {stale}"


def wrong_imports(g):
    """``"a -> b"`` for every import that goes up or sideways."""
    wrong = []
    for mod, deps in g.items():
        src = part(mod)
        if src == FACADE:
            continue
        for dep in deps:
            dst = part(dep)
            if dst == src:
                if src in INNER_LAYERS and INNER[src, inner(dep)] >= INNER[src, inner(mod)]:
                    wrong.append(f"{mod} -> {dep}")
            elif dst == FACADE:
                if src not in ENTRY_POINTS:
                    wrong.append(f"{mod} -> {dep}")
            elif LAYER[dst] >= LAYER[src]:
                wrong.append(f"{mod} -> {dep}")
    return sorted(wrong)


def test_imports_point_down():
    wrong = wrong_imports(graph())
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(wrong)


def cycles(g):
    state, stack, found = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g[m]):
            if m.startswith(d + "."):   # a module importing its own package's __init__
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    return found


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_checks_see_what_they_should():
    """The checks on a small made-up graph: an upward, a sideways and a circular import."""
    g = {
        "pmemkit.errors": set(),
        "pmemkit.region": {"pmemkit.errors", "pmemkit.mapping"},          # up
        "pmemkit.mapping": {"pmemkit.region"},
        "pmemkit.btt.arena": {"pmemkit.btt.batch"},                       # sideways
        "pmemkit.btt.batch": set(),
        "pmemkit.btt.device": {"pmemkit.btt.arena", "pmemkit.btt"},       # up to the package
        "pmemkit.vm.runner": {"pmemkit"},                                 # the facade
        "pmemkit.cli.core": {"pmemkit"},
    }
    assert wrong_imports(g) == ["pmemkit.btt.arena -> pmemkit.btt.batch",
                                "pmemkit.btt.device -> pmemkit.btt",
                                "pmemkit.region -> pmemkit.mapping",
                                "pmemkit.vm.runner -> pmemkit"]
    assert cycles(g) == [["pmemkit.mapping", "pmemkit.region", "pmemkit.mapping"]]
