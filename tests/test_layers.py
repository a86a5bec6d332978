"""The package's import direction: losses <- engine <- tasks / evaluation <- experiment / analysis <- cli.

Every ``import`` of an ``encouraging`` module is checked, including imports inside functions; imports under
``if TYPE_CHECKING:`` are annotations only and are skipped. ``data`` and ``models`` are libraries any layer above
``losses`` may use; ``results`` (the store, statistics and the report writer) imports nothing else of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "encouraging"
ABOVE_ENGINE = {"tasks", "evaluation", "experiment", "analysis", "cli", "plugins", "integrations", "results"}
FORBIDDEN = {  # package -> packages it must not import
    "losses": {"engine", "data", "models", "tasks", "evaluation", "experiment", "analysis", "results", "cli",
               "plugins", "integrations"},
    "engine": ABOVE_ENGINE,
    "data": ABOVE_ENGINE | {"engine"},
    "models": ABOVE_ENGINE | {"engine"},
    "results": {"losses", "engine", "data", "models", "tasks", "evaluation", "experiment", "analysis", "cli",
                "plugins", "integrations"},
    "tasks": {"evaluation", "experiment", "analysis", "cli", "plugins", "results"},
    "evaluation": {"tasks", "experiment", "analysis", "cli"},
    "experiment": {"cli", "analysis"},
    "analysis": {"cli"},
}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_packages(path: Path) -> set[str]:
    """The top-level ``encouraging`` subpackages a module imports (relative or absolute)."""
    package = path.relative_to(SRC).parts
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    base = list(package[:-1])[: len(package) - child.level]
                    if child.module:
                        found.add((base + child.module.split("."))[0])
                    else:  # `from . import x` / `from .. import x`: x is a subpackage or a name of its __init__
                        found.update((base + [a.name])[0] for a in child.names)
                elif child.module and child.module.startswith("encouraging."):
                    found.add(child.module.split(".")[1])
            elif isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.startswith("encouraging."):
                        found.add(a.name.split(".")[1])
            visit(child)

    visit(ast.parse(path.read_text()))
    return found & SUBPACKAGES


SUBPACKAGES = {p.stem for p in SRC.iterdir() if (p.is_dir() and p.name != "__pycache__") or
               (p.suffix == ".py" and p.stem != "__init__")}
MODULES = sorted(p for p in SRC.rglob("*.py") if len(p.relative_to(SRC).parts) > 1 or p.stem in ("cli", "plugins"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path):
    layer = path.relative_to(SRC).parts[0].removesuffix(".py")
    bad = imported_packages(path) & FORBIDDEN.get(layer, set())
    assert not bad, f"{path.relative_to(SRC)} ({layer}) imports {sorted(bad)}"


def test_the_checker_sees_relative_and_function_level_imports():
    assert "engine" in imported_packages(SRC / "tasks" / "image.py")
    assert "results" in imported_packages(SRC / "evaluation" / "ood.py")
    assert "experiment" not in imported_packages(SRC / "evaluation" / "ood.py")  # only under TYPE_CHECKING
    assert "experiment" in imported_packages(SRC / "cli.py")  # imported inside main()
    assert "losses" in imported_packages(SRC / "analysis" / "gradients.py")  # `from ..losses import ...`
