"""The house, read from the modules' own ``import`` statements (every one, inside functions too): no import
circle, no layer importing a layer above it, no family importing another family, no ``_private`` name
imported from another module, and no product module importing a study (``studies/`` does not ship).

The layers, lowest first, are declared here once; docs/architecture.md draws them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mobilekit.paths import PROJECT_ROOT

# Folders of the installed package and the package name each installs as (setup.py).
PACKAGE_FOLDERS = {"mobilekit": "mobilekit", "models": "mobilekit.models", "converters": "mobilekit.converters", "benchmarks": "mobilekit.benchmarks"}

# (layer, module prefixes): a module may import its own layer and the layers before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("primitives", ("mobilekit", "mobilekit.errors", "mobilekit.paths", "mobilekit.atomic", "mobilekit.config", "mobilekit.detections",
                    "mobilekit.box_coder", "mobilekit.nms", "mobilekit.targets", "mobilekit.image_io", "mobilekit.timing",
                    "mobilekit.package_data", "mobilekit.draw", "mobilekit.profiling")),
    ("families", ("mobilekit.families",)),
    ("models", ("mobilekit.models", "mobilekit.checkpoint", "mobilekit.inference")),
    ("data", ("mobilekit.data", "mobilekit.evaluation")),
    ("training", ("mobilekit.training",)),
    ("converters", ("mobilekit.converters",)),
    ("flutter", ("mobilekit.flutter",)),
    ("benchmarks", ("mobilekit.benchmarks",)),
    ("application", ("mobilekit.embedded_run", "mobilekit.cli", "mobilekit.__main__")),
)  # fmt: skip


def package_modules() -> dict[str, Path]:
    modules = {}
    for folder, package in PACKAGE_FOLDERS.items():
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(PROJECT_ROOT / folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = package_modules()


def imports_of(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from M import name`` and ``(module, "")`` of every ``import M``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from P import m`` of a submodule ``m`` counts as ``P.m``)."""
    graph = {}
    for module, path in MODULES.items():
        targets = {f"{source}.{name}" if f"{source}.{name}" in MODULES else source for source, name in imports_of(path)}
        graph[module] = {t for t in targets if t in MODULES and t != module}
    return graph


GRAPH = import_graph()


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest prefix naming ``module``."""
    matches = [(len(prefix), index) for index, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read_from_real_imports():
    assert "mobilekit.families.retinaface.priors" in GRAPH["mobilekit.families.retinaface.family"]
    assert "mobilekit.families" in GRAPH["mobilekit.models.base"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert circles(GRAPH) == []


def test_no_layer_imports_a_higher_one():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def family_package(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[:2] == ["mobilekit", "families"] else None


def test_a_family_imports_no_other_family():
    crossing = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if family_package(module) and family_package(target) not in (None, family_package(module))
    ]
    assert crossing == []


@pytest.mark.parametrize("folder", [*PACKAGE_FOLDERS, "studies"])
def test_no_private_name_crosses_a_module(folder):
    """What one module needs from another is public: no ``from M import _name`` from another module."""
    private = [
        f"{path.relative_to(PROJECT_ROOT)} imports {name} from {source}"
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        for source, name in imports_of(path)
        if source.startswith("mobilekit") and name.startswith("_")
    ]
    assert private == []


def test_the_product_imports_no_study():
    assert [module for module, path in MODULES.items() if any(source.split(".")[0] == "studies" for source, _ in imports_of(path))] == []
