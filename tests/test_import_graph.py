"""The package's import graph: no import cycle, and the core knows nothing of Flower.

The modules are read as source (``ast``), not imported, so the test sees every import a
module can run, including the ones inside functions, which an import-time check would miss:
a function-local import is how a cycle hides. The folders come from setuptools' ``package-dir``
in pyproject.toml, the same mapping that puts ``strategies/`` and the other Flower layers into
the ``fedforget.*`` namespace, so a module or layer added later is checked without editing
this file.
"""

from __future__ import annotations

import ast
import graphlib
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = "fedforget"  # the package whose folder is the core (docs/architecture.md, "Layers")
CORE_EXCEPTIONS = ("fedforget.cli",)  # the CLI drives the Flower layers: it may import them
MAX_REPORTED_CYCLES = 20


@dataclass
class Module:
    """One module of the package: where it lives and what it imports."""

    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)  # every dotted name, absolute


def _package_dirs() -> dict[str, Path]:
    """``fedforget.*`` package -> its folder, as setuptools maps them."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        mapping = tomllib.load(file)["tool"]["setuptools"]["package-dir"]
    return {package: ROOT / folder for package, folder in mapping.items()}


def _modules() -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join([package, *parts])
            modules[name] = Module(name, path, is_package)
    for module in modules.values():
        module.imports = _imported_names(module)
    return modules


def _imported_names(module: Module) -> set[str]:
    """Dotted names of every import the module can run, at any depth, made absolute.

    ``from X import y`` yields ``X.y``, whether ``y`` is a module or a name in ``X``: the
    module table decides which (:func:`_targets`). Imports under ``if TYPE_CHECKING:`` are
    left out: they never run, so they cannot take part in an import cycle.
    """
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(module.path.read_text(), str(module.path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node.module, node.level)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    pending = [tree]
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
    return name == "TYPE_CHECKING"


def _absolute(module: Module, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    package = module.name.split(".")
    if not module.is_package:
        package.pop()
    anchor = package[: len(package) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


def _targets(module: Module, modules: dict[str, Module]) -> set[str]:
    """The package's modules this module imports, each by its most specific name.

    ``from fedforget.data import deletion`` targets ``fedforget.data.deletion``;
    ``from fedforget.data import ArrayDataset`` targets ``fedforget.data`` (its
    ``__init__``). A parent package's ``__init__`` that Python also runs on the way is not
    counted: counting it would make every package whose ``__init__`` re-exports a submodule
    that imports a sibling through the package a cycle, though Python resolves those.
    """
    found: set[str] = set()
    for name in module.imports:
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts:
            found.add(".".join(parts))
    found.discard(module.name)
    return found


def _graph() -> tuple[dict[str, Module], dict[str, set[str]]]:
    modules = _modules()
    return modules, {name: _targets(module, modules) for name, module in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as its modules in import order; one edge of each is cut to go on."""
    graph = {name: set(targets) for name, targets in graph.items()}
    cycles: list[list[str]] = []
    while len(cycles) < MAX_REPORTED_CYCLES:
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return cycles
        except graphlib.CycleError as error:
            cycle = error.args[1]  # [a, ..., a]: each node is imported by the one after it
        cycle = cycle[::-1]  # importer first
        cycles.append(cycle)
        graph[cycle[0]].discard(cycle[1])
    return cycles


def _core_names(modules: dict[str, Module]) -> set[str]:
    """Modules read from the core's folder (the Flower layers live in folders of their own)."""
    folder = _package_dirs()[CORE]
    return {
        name
        for name, module in modules.items()
        if folder in module.path.parents
        and not any(name == e or name.startswith(f"{e}.") for e in CORE_EXCEPTIONS)
    }


def test_the_walk_finds_the_layers_and_function_local_imports():
    modules, graph = _graph()
    for name in ("fedforget.metrics", "fedforget.strategies", "fedforget.clients.app"):
        assert name in modules, sorted(modules)
    assert modules["fedforget.clients.app"].path.parent.name == "clients"
    assert any(target.startswith("fedforget.data") for target in graph["fedforget.metrics"])


def test_function_local_and_relative_imports_are_edges_type_only_ones_are_not(tmp_path):
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from fedforget.typed import Only\n"
        "def f():\n"
        "    from fedforget.other import thing\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    module = Module("fedforget.pkg.mod", path, is_package=False)
    module.imports = _imported_names(module)
    table = {
        name: Module(name, path, False)
        for name in (
            "fedforget.pkg.sibling",
            "fedforget.other",
            "fedforget.typed",
            "fedforget.pkg.mod",
        )
    }
    assert _targets(module, table) == {"fedforget.pkg.sibling", "fedforget.other"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_imports_itself_back():
    _, graph = _graph()
    cycles = _cycles(graph)
    shown = "\n".join(" -> ".join(cycle) for cycle in cycles)
    assert not cycles, f"import cycles (each module imports the next):\n{shown}"


def test_the_core_imports_nothing_from_flower():
    modules = _modules()
    core = _core_names(modules)
    assert "fedforget.metrics" in core and "fedforget.strategies" not in core
    flower = sorted(
        f"{name} imports {imported}"
        for name in core
        for imported in modules[name].imports
        if imported.split(".")[0] == "flwr"  # flwr_datasets (partitioners) is a package apart
    )
    assert not flower, "the core imports Flower:\n" + "\n".join(flower)


def test_the_core_imports_no_flower_layer_of_the_package():
    """Not through ``strategies/``, ``clients/``, ``server/``, ``simulations/`` or the CLI."""
    modules, graph = _graph()
    core = _core_names(modules)
    layers = sorted(
        f"{name} imports {target}" for name in core for target in graph[name] if target not in core
    )
    assert not layers, "the core imports a Flower layer:\n" + "\n".join(layers)
