"""The house's layering holds: no package imports a package above it, no module import cycles,
no module too long to read in one sitting (docs/design.md, "Layout of the repository")."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "megatron_glmd")

# A package may import packages of a lower level (and modules of its own package).
LEVELS = {
    "config": 0, "atomic_io": 0,
    "parallel": 1, "kernels": 1,
    "model": 2, "data": 2,
    "plan": 3, "convert": 3, "compress": 4, "tasks": 4,
    "distill": 5,
    "checkpoint": 6,
    "engine": 7,
    "cli": 8,
}
MAX_LINES = 300


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield rel[:-len(".__init__")] if rel.endswith(".__init__") else rel, path


def _imports(module, path):
    """Absolute names of the megatron_glmd / kernels modules that ``module`` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    is_package = path.endswith("__init__.py")
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)  # "from . import checkpointing"
    return {n for n in out if n and n.split(".")[0] in ("megatron_glmd", "kernels")}


def _package(name):
    parts = name.split(".")
    return "kernels" if parts[0] == "kernels" else (parts[1] if len(parts) > 1 else None)


MODULES = dict(_modules())


def test_every_package_has_a_level():
    packages = {_package(m) for m in MODULES} - {None}
    assert packages <= set(LEVELS), f"give {sorted(packages - set(LEVELS))} a level in LEVELS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_imports(module):
    own = _package(module)
    if own is None:
        return
    for name in _imports(module, MODULES[module]):
        other = _package(name)
        if other is None or other == own:
            continue
        assert LEVELS[other] < LEVELS[own], f"{module} imports {name}: {own} may not depend on {other}"


def test_no_import_cycles():
    graph = {m: {n for n in _imports(m, p) if n in MODULES and n != m} for m, p in MODULES.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short(module):
    if ".benchmarks" in module:
        return
    with open(MODULES[module], encoding="utf-8") as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (at most {MAX_LINES}): split it by job"
