"""Task registry: a task turns a resolved config into a model and batch sources for the engine."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine.config import Config
from ..engine.distributed import World


@dataclass
class Prepared:
    """What a task hands the engine: the model, train and test batch sources, and notes saved with the run.

    ``train_eval`` is the training set read like the test set (every example once, in order, no augmentation),
    for analyses and evaluations of a trained model; None where the task has none.
    """

    model: nn.Module
    train: Any
    test: Any
    notes: dict[str, Any] = field(default_factory=dict)  # e.g. test_note, dataset source, class count
    train_eval: Any = None


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    prepare: Callable[[Config, torch.device, World], Prepared]


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def list_tasks(filter: str = "*") -> list[str]:
    return sorted(n for n in _TASKS if fnmatch.fnmatch(n, filter))


def get_task(name: str) -> Task:
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"task must be one of {list_tasks()}, got {name!r}") from None
