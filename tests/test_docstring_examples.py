"""The usage examples in the docstrings run, and every public loss has one.

The examples are the ``Example:`` sections of the loss modules (and of ``encouraging`` and
``encouraging.extras``); doctest runs each with its module's globals, as ``pytest --doctest-modules`` would.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest
import torch

import encouraging.losses as losses

MODULES = ["encouraging", "encouraging.extras"] + sorted(
    m.name for m in pkgutil.iter_modules(losses.__path__, "encouraging.losses.") if not m.ispkg)  # not triton/
PUBLIC_LOSSES = [name for name in losses.__all__
                 if (inspect.isclass(getattr(losses, name)) and issubclass(getattr(losses, name), torch.nn.Module))
                 or (inspect.isfunction(getattr(losses, name)) and name.endswith(("_loss", "_loss_parts")))]


def run_doctests(module_name: str) -> tuple[int, int, str]:
    """(failed, attempted, report) of the doctests of one module."""
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, module_name):
        runner.run(test, out=report.append)
    return runner.failures, runner.tries, "".join(report)


def test_the_public_losses_are_found():
    assert {"EncouragingLoss", "encouraging_loss", "BinaryEncouragingLoss", "LinearEncouragingLoss", "MirrorLoss",
            "AdjustedEncouragingLoss", "PolyLoss", "focal_loss", "encouraging_loss_parts"} <= set(PUBLIC_LOSSES)


@pytest.mark.parametrize("name", PUBLIC_LOSSES)
def test_every_public_loss_has_an_example(name):
    doc = inspect.getdoc(getattr(losses, name)) or ""
    _, _, example = doc.partition("Example:")
    assert ">>>" in example, f"{name}'s docstring has no 'Example:' section with a doctest"


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    failed, _, report = run_doctests(module)
    assert failed == 0, report


def test_the_examples_of_the_public_losses_are_run():
    """Each public loss's example is among the doctests run above (found through its defining module)."""
    names = set()
    for module in MODULES:
        for test in doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(module), module):
            names.add(test.name.rsplit(".", 1)[-1])
    assert set(PUBLIC_LOSSES) <= names, sorted(set(PUBLIC_LOSSES) - names)


def test_a_failing_example_is_reported(monkeypatch):
    """The runner above can fail: a docstring whose expected output is wrong counts as a failure."""
    monkeypatch.setattr(losses.encouraging_loss_parts, "__doc__", ">>> 1 + 1\n3\n")
    failed, attempted, report = run_doctests("encouraging.losses.functional")
    assert failed == 1 and attempted >= 1 and "Expected:" in report
