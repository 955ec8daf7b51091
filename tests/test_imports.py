"""The layering, enforced: which package may import which, and no import cycle anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

PACKAGES = ("data", "model", "search")
# Package -> what it must never import (anywhere in the file, lazily inside a function too).
FORBIDDEN = {
    "data": ("model", "search", "optuna", "keras"),
    "model": ("search", "optuna"),
}


def modules() -> dict[str, Path]:
    """Every module of the three packages by dotted name (a package is its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path) -> Iterator[str]:
    """The dotted names ``path`` imports, at the top or inside functions."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from model import export`` counts as model.export)."""
    known = modules()
    return {
        name: {target for target in imported(path) if target in known} - {name}
        for name, path in known.items()
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_anywhere() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_lower_layers_never_import_upper_ones(package: str) -> None:
    offending = sorted(
        f"{name} imports {target}"
        for name, path in modules().items()
        if name.split(".")[0] == package
        for target in imported(path)
        if target.split(".")[0] in FORBIDDEN[package]
    )
    assert offending == []


def test_bench_and_core_never_import_the_cli() -> None:
    core = [path for name, path in modules().items() if not name.startswith("search.cli")]
    bench = sorted((REPO / "bench").glob("*.py"))
    offending = sorted(
        f"{path.relative_to(REPO)} imports {target}"
        for path in [*core, *bench]
        for target in imported(path)
        if target.startswith("search.cli")
    )
    assert offending == []


def test_packages_import_from_this_checkout() -> None:
    code = "import data, model, search; print('\\n'.join(m.__file__ for m in (data, model, search)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert [Path(line) for line in out.stdout.splitlines()] == [REPO / p / "__init__.py" for p in PACKAGES]


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
