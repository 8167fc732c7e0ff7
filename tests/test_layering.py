"""The generic layers name no method and compare no deletion mode as a string.

A method brings its own needs (:mod:`fedforget.needs`) and a deletion mode its own
behaviour (:mod:`fedforget.data.modes`): the strategy, the ClientApp and the needs must work
for any registered method, and only the mode registry and the modes themselves know a mode
by name. The test reads the code (``ast``): string constants outside docstrings.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from fedforget.data.modes import DELETION_MODES
from fedforget.strategies import FederatedUnlearning
from fedforget.unlearning import unlearner_names

ROOT = Path(__file__).resolve().parent.parent
GENERIC_LAYERS = ("clients", "strategies", "needs")
PACKAGE_FOLDERS = ("fedforget", "strategies", "clients", "server", "simulations", "needs")
MODE_MODULE = ROOT / "fedforget" / "data" / "modes.py"


def _modules(folders: tuple[str, ...]) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring constant (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _strings(path: Path) -> list[tuple[int, str, ast.AST]]:
    """``(line, value, parent)`` of every string constant that is not a docstring."""
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return [
        (node.lineno, node.value, parents.get(id(node)))
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
    ]


def test_the_generic_layers_name_no_method() -> None:
    methods = set(unlearner_names())
    named = [
        f"{path.relative_to(ROOT)}:{line}: {value!r}"
        for path in _modules(GENERIC_LAYERS)
        for line, value, _ in _strings(path)
        if value in methods
    ]
    assert not named, "a generic layer names a method:\n" + "\n".join(named)


NOT_A_MODE = ("unlearn_on",)
"""Fields whose values share a word with a mode (``unlearn_on == "client"``: where to unlearn)."""


def _compared(parent: ast.AST | None, grandparents: dict[int, ast.AST], node_id: int) -> bool:
    """Whether the constant takes part in a comparison (directly or inside a tuple/set/list)
    of something that may be a mode."""
    if isinstance(parent, ast.Tuple | ast.Set | ast.List):
        parent = grandparents.get(id(parent))
    if not isinstance(parent, ast.Compare):
        return False
    return not any(field in ast.unparse(parent) for field in NOT_A_MODE)


def test_no_code_compares_a_deletion_mode_by_name() -> None:
    modes = set(DELETION_MODES)
    found = []
    for path in _modules(PACKAGE_FOLDERS):
        if path == MODE_MODULE:
            continue
        tree = ast.parse(path.read_text())
        parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and node.value in modes):
                continue
            if _compared(parents.get(id(node)), parents, id(node)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "a mode compared by name outside the mode registry:\n" + "\n".join(found)


def test_the_layering_test_sees_what_it_looks_for(tmp_path: Path) -> None:
    """Both checks find their target in a module that has it (a check that cannot fail is none)."""
    probe = tmp_path / "probe.py"
    probe.write_text('"""Doc mentions distill."""\nif mode == "class":\n    x = "distill"\n')
    assert [(v, type(p).__name__) for _, v, p in _strings(probe)] == [
        ("class", "Compare"),
        ("distill", "Assign"),
    ]


def test_the_strategy_stays_small() -> None:
    """Issue 34: ``FederatedUnlearning`` under 300 lines; its parts live in their modules."""
    lines, _ = inspect.getsourcelines(FederatedUnlearning)
    assert len(lines) < 300
