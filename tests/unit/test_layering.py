"""Imports go one way (docs/design.md, "Layering"): every module of una_hpc/ and kernels/, parsed with ast.

    .venv/bin/python -m pytest tests/unit/test_layering.py -q

Every import counts: module level, inside functions and under `if TYPE_CHECKING:`, absolute or relative. Checked:
(a) no module imports from a higher layer (and kernels/ imports nothing of una_hpc but itself); (b) no import
cycle among the modules of one package; (c) una_hpc.data imports nothing from una_hpc.losses; (d) una_hpc.trainer
imports nothing from una_hpc.task (the task reaches the trainer only as config values: paths and hooks).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = (
    (
        "una_hpc.config",
        "una_hpc.config_schema",
        "una_hpc.config_checks",
        "una_hpc.config_docs",
        "una_hpc.hub",
        "una_hpc.feedback",
        "una_hpc.hooks",
        "una_hpc.host_memory",
    ),
    ("una_hpc.kernels",),
    ("una_hpc.losses",),
    ("una_hpc.models",),
    ("una_hpc.data",),
    ("una_hpc.parallel",),
    ("una_hpc.rollout",),
    ("una_hpc.trainer",),
    ("una_hpc.task",),
    ("una_hpc.bench",),
    ("una_hpc.cli", "una_hpc.train", "una_hpc"),  # una_hpc itself: the Python API, beside the command line
)
"""Bottom to top; a module may import its own layer and those below it."""


def discover() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package __init__), for una_hpc/ and kernels/ (installed as una_hpc.kernels)."""
    modules = {}
    for root, prefix in ((REPO / "una_hpc", "una_hpc"), (REPO / "kernels", "una_hpc.kernels")):
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join([prefix, *(parts[:-1] if is_package else parts)])
            modules[name] = (path, is_package)
    return modules


def _owner(name: str, known: set[str]) -> str | None:
    """The longest known module that `name` is or lies in (`una_hpc.losses.get_head` -> una_hpc.losses)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The known modules `module` imports anywhere in `source` (a `from a import b` counts as a.b when a.b is a
    module, else as a)."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {t for t in (_owner(t, known) for t in targets) if t is not None and t != module}
    return found


def layer_of(module: str) -> int:
    best = max(
        (p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len, default=None
    )
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and docs/design.md, 'Layering')")
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = discover()
    known = set(modules)
    return {m: imports_of(path.read_text(), m, is_package, known) for m, (path, is_package) in modules.items()}


def package_of(module: str, graph: dict[str, set[str]]) -> str:
    """The package whose modules the cycle check groups: una_hpc.data for una_hpc.data and una_hpc.data.io, ...;
    una_hpc for the top-level modules (config, hub, feedback, hooks, cli, train)."""
    parts = module.split(".")
    if len(parts) > 2 or any(m.startswith(module + ".") for m in graph):
        return ".".join(parts[:2])
    return "una_hpc"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last) in `graph`, or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        path.append(m)
        for dep in sorted(graph.get(m, ())):
            if dep in path:
                return path[path.index(dep) :] + [dep]
            if dep not in done and (cycle := visit(dep)):
                return cycle
        path.pop()
        done.add(m)
        return None

    for m in sorted(graph):
        if m not in done and (cycle := visit(m)):
            return cycle
    return None


def test_every_module_is_in_a_layer(graph):
    for m in graph:
        layer_of(m)
    assert "una_hpc.task.defaults" in graph and "una_hpc.kernels.seq_logps" in graph  # both trees were read


def test_no_import_goes_up_a_layer(graph):
    upward = [
        f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_kernels_import_only_themselves(graph):
    outside = [
        f"{m} imports {d}"
        for m, deps in graph.items()
        if m.startswith("una_hpc.kernels")
        for d in deps
        if not d.startswith("una_hpc.kernels")
    ]
    assert not outside, "\n".join(outside)


def test_no_cycle_inside_a_package(graph):
    package = {m: package_of(m, graph) for m in graph}
    for pkg in sorted(set(package.values())):
        inside = {m: {d for d in deps if package[d] == pkg} for m, deps in graph.items() if package[m] == pkg}
        cycle = find_cycle(inside)
        assert cycle is None, f"import cycle in {pkg}: {' -> '.join(cycle)}"


@pytest.mark.parametrize("low,high", [("una_hpc.data", "una_hpc.losses"), ("una_hpc.trainer", "una_hpc.task")])
def test_named_boundaries(graph, low, high):
    crossing = [
        f"{m} imports {d}"
        for m, deps in graph.items()
        if m == low or m.startswith(low + ".")
        for d in deps
        if d == high or d.startswith(high + ".")
    ]
    assert not crossing, "\n".join(crossing)


def test_the_checker_sees_every_kind_of_import():
    """The parser itself: relative, function-local, TYPE_CHECKING and `from package import module` imports."""
    known = {
        "una_hpc.data",
        "una_hpc.data.convert",
        "una_hpc.data.io",
        "una_hpc.losses",
        "una_hpc.losses.heads",
        "una_hpc.task",
        "una_hpc.task.grammar",
        "una_hpc.config",
    }
    source = (
        "from typing import TYPE_CHECKING\nfrom ..config import DataConfig\nfrom . import io\n"
        "if TYPE_CHECKING:\n    from .convert import Example\n"
        "def f():\n    from ..losses.heads import get_head\n    import una_hpc.task.grammar\n"
    )
    assert imports_of(source, "una_hpc.data.x", False, known) == {
        "una_hpc.config",
        "una_hpc.data.io",
        "una_hpc.data.convert",
        "una_hpc.losses.heads",
        "una_hpc.task.grammar",
    }
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
