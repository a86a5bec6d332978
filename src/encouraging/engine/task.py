"""The task interface: everything the engine needs from a task family, and the registry of tasks.

The split follows fairseq's tasks and Lightning's ``LightningModule``, cut to what image, long-tailed, graph and
translation tasks share. A task

* owns its config sections (:attr:`Task.data_config`, :attr:`Task.model_config`: typed dataclasses that
  ``--data.key=value`` overrides are checked against);
* builds its data, model and training statistics (:meth:`Task.setup` returns :class:`Prepared`) and its criterion
  (:meth:`Task.build_criterion`, default: the loss registry with those statistics);
* computes one training step (:meth:`Task.training_step`: batch -> :class:`Step`, the loss and per-epoch
  diagnostics such as the mean ``p_y``) and the evaluation of a split (:meth:`Task.evaluate`: batches -> metrics);
* declares what it reports (:attr:`Task.metrics`, a :class:`MetricSpec`).

The :class:`~encouraging.engine.trainer.Trainer` does the rest for every task alike: the loop, the optimizer and
schedules, AMP, ``torch.compile``, DDP, checkpoints and resume, model selection and early stopping, logging. Batches
may be anything a task's batch source yields (tensor pairs, a PyG ``Batch``, token batches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..losses.registry import Registry
from .config import Config, ModelConfig, register_sections
from .criteria import build_criterion
from .distributed import SINGLE, World
from .runtime import autocast, autocast_dtype


class Batches(Protocol):
    """A batch source: ``len()`` steps per epoch, and ``epoch(e)`` yielding them (the same order for the same e)."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[Any]: ...


@dataclass(frozen=True)
class MetricSpec:
    """What a task reports, stored with every run so that reports need no task code.

    Args:
        primary: the metric models are compared and selected on, as :meth:`Task.evaluate` names it (``"acc"``:
            logged per epoch as ``val_acc`` / ``test_acc``).
        label: how tables name it, with its unit (``"top-1 accuracy (%)"``, ``"BLEU"``).
        higher_is_better: the direction (False for a loss or an error rate).
        scale: stored value x scale = shown value (100 for fractions shown in %).
        extra: further metrics of :meth:`Task.evaluate` that tables show beside the primary one
            (``("many_acc", "medium_acc", "few_acc")``).
        paper: the paper's name for the primary metric (``encouraging.results.paper``: ``"top1"``, ``"bleu"``),
            so reports can show the paper's number beside ours; ``""`` when the paper has none.
        notes: keys of the run notes (:attr:`Prepared.notes`) that every table prints under it (the long-tailed
            task's subset and shot-group thresholds).
    """

    primary: str = "acc"
    label: str = "top-1 accuracy (%)"
    higher_is_better: bool = True
    scale: float = 100.0
    extra: tuple[str, ...] = ()
    paper: str = "top1"
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "extra": list(self.extra), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MetricSpec:
        """The spec a run stored; runs recorded before specs were stored were top-1 accuracy."""
        if not data:
            return cls()
        return cls(**{**data, "extra": tuple(data.get("extra", ())), "notes": tuple(data.get("notes", ()))})

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b


@dataclass(frozen=True)
class DataStats:
    """Training-set statistics that criteria may need (LDAM margins, logit adjustment, class-balanced weights)."""

    num_classes: int
    class_counts: tuple[int, ...] | None = None  # training examples per class, after any subset or hold-out


@dataclass
class Prepared:
    """What :meth:`Task.setup` hands the engine.

    ``val`` is the validation split the reported epoch is selected on (None: the last epoch is reported).
    ``train_eval`` is the training set read like the test set (every example once, in order, no augmentation),
    for analyses and evaluations of a trained model; None where the task has none. ``notes`` are saved with the run
    (the test-set note, the data source, the class names, ...).
    """

    model: nn.Module
    train: Batches
    test: Batches
    stats: DataStats
    val: Batches | None = None
    train_eval: Batches | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Step:
    """One training step's result: ``loss`` (scalar, backpropagated), ``count`` (examples or tokens it averages
    over) and ``sums``: diagnostics summed over those examples; the epoch logs ``sums[k] / count`` as ``k``."""

    loss: Tensor
    count: int | Tensor
    sums: dict[str, Tensor] = field(default_factory=dict)


class Task:
    """Base class of a task family. Subclass, set the class attributes, implement the three methods, and
    decorate with :func:`register_task`. An instance serves one run: ``cfg`` is the resolved config, ``device``
    and ``world`` where it runs."""

    name: ClassVar[str]
    description: ClassVar[str]
    data_config: ClassVar[type]  # the dataclass of the config's `data` section
    model_config: ClassVar[type] = ModelConfig
    metrics: ClassVar[MetricSpec] = MetricSpec()
    # what reads this task's trained runs: "ood", "attack" (`encouraging eval`: image inputs), "analyze" (the
    # analyses: one class index per example)
    evaluations: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Config, device: torch.device | str = "cpu", world: World = SINGLE) -> None:
        self.cfg, self.device, self.world = cfg, torch.device(device), world
        self.upstream_dirs: dict[str, Path] = {}  # run directories of :meth:`upstream`, set by the runner

    @property
    def amp(self) -> torch.dtype | None:
        """The autocast dtype of ``train.amp`` on this device (None: no autocast)."""
        return autocast_dtype(self.cfg.train.amp, self.device)

    # --- what a task implements -------------------------------------------------------------------------------------

    def setup(self) -> Prepared:
        """Build the model, the batch sources and the training statistics from ``self.cfg``."""
        raise NotImplementedError

    def training_step(self, model: nn.Module, batch: Any, criterion: nn.Module) -> Step:
        """Forward ``batch`` and return the loss to backpropagate with its diagnostics."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: Batches) -> dict[str, float]:
        """Metrics of ``model`` over every example of ``batches`` (reduced over ``self.world``), unprefixed
        (``{"loss": ..., "acc": ...}``); they must include ``metrics.primary``."""
        raise NotImplementedError

    # --- defaults a task may override ----------------------------------------------------------------------------

    def build_criterion(self, stats: DataStats) -> nn.Module:
        """The training loss: the registry's preset ``cfg.loss.name`` with the training statistics."""
        return build_criterion(self.cfg.loss, stats)

    def check(self) -> list[str]:
        """Problems with ``self.cfg`` this task can see before any data is loaded (one message each)."""
        return []

    @classmethod
    def upstream(cls, cfg: Config) -> dict[str, Config]:
        """The configs of the runs this run builds on, by role (cRT's second stage: ``{"stage1": ...}``).

        The runner trains a missing one first, refuses to start while one is unfinished or diverged, and hands
        their run directories to :attr:`upstream_dirs` before :meth:`setup`. Called on checked configs only."""
        return {}

    def train_mode(self, model: nn.Module) -> None:
        """Put ``model`` in training mode at the start of each training epoch (a task that freezes part of the
        model, as cRT's second stage does, keeps that part in eval mode)."""
        model.train()

    def autocast(self) -> AbstractContextManager:
        """The forward pass's autocast context (bf16 on CUDA unless ``train.amp=fp32``; nothing on the CPU)."""
        return autocast(self.device, self.amp)

    def logits(self, model: nn.Module, inputs: Any) -> Tensor:
        """``model(inputs)`` under :meth:`autocast`, as float32: losses are computed in float32 outside autocast."""
        with self.autocast():
            out = model(inputs)
        return out.float()

    def prediction_logits(self, model: nn.Module, inputs: Any) -> Tensor:
        """The scores a classification task predicts and is evaluated from: :meth:`logits`, after any adjustment
        made at prediction time only (the long-tailed task's post-hoc ``f - tau log(prior)``)."""
        return self.logits(model, inputs)


_TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a task (and its config sections) to the registry under ``cls.name``."""
    for attr in ("name", "description", "data_config"):
        if not hasattr(cls, attr):
            raise TypeError(f"task class {cls.__name__} must set the class attribute {attr!r}")
    for section, needed in ((cls.data_config, "dataset"), (cls.model_config, "name")):
        if needed not in {f.name for f in dataclasses.fields(section)}:  # runs are grouped by dataset and model
            raise TypeError(f"task {cls.name!r}: its config section {section.__name__} needs a {needed!r} field")
    _TASKS.register(cls.name, cls)
    register_sections(cls.name, cls.data_config, cls.model_config)
    return cls


def list_tasks(filter: str = "*") -> list[str]:
    """The registered task names matching the glob ``filter``, sorted."""
    return _TASKS.names(filter)


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``; an unknown name raises a ``ValueError`` that lists the known ones."""
    return _TASKS.get(name)


def build_task(cfg: Config, device: torch.device | str = "cpu", world: World = SINGLE) -> Task:
    """The registered task of ``cfg.task``, for one run."""
    return get_task(cfg.task)(cfg, device, world)


def holdout(n: int, fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices ``(kept, held_out)`` (each sorted) that hold out ``round(fraction * n)`` of ``n`` examples at random;
    the same for the same ``(n, fraction, seed)``, whatever the run seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    k = max(1, min(n - 1, round(fraction * n)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[k:].sort().values, order[:k].sort().values


def class_counts(labels: Tensor | Iterable[int], num_classes: int) -> tuple[int, ...]:
    """Examples per class, ``(num_classes,)``."""
    labels = torch.as_tensor(labels if isinstance(labels, Tensor) else list(labels), dtype=torch.long)
    return tuple(int(c) for c in torch.bincount(labels.cpu(), minlength=num_classes))


__all__ = ["Batches", "DataStats", "MetricSpec", "Prepared", "Step", "Task", "build_task", "class_counts", "get_task",
           "holdout", "list_tasks", "register_task"]
