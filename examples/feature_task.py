"""An example task family: classify feature vectors, read from an ``.npz`` file or drawn from a Gaussian mixture.

It is everything a new family writes: its config sections, ``setup`` (data, model, training statistics), the
training step, the evaluation, and the metrics it reports. The trainer does the rest (loop, optimizer, checkpoints,
model selection on ``data.val_fraction``, ``train.patience``, the results database).

Run it: ``python examples/feature_task.py train examples/feature_task.yaml`` (the ``encouraging`` command with
this module imported), or import it before calling :func:`encouraging.experiment.run` on a ``task: features``
config. A package makes it permanent through the ``encouraging.plugins`` entry-point group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from encouraging.engine.batches import TensorBatches
from encouraging.engine.classification import class_totals, classification_step
from encouraging.engine.config import ModelConfig
from encouraging.engine.task import DataStats, MetricSpec, Prepared, Step, Task, class_counts, holdout, register_task
from encouraging.models import create_model


@dataclass
class FeatureDataConfig:
    dataset: str = "gaussian_mixture"  # the name reports file runs under (name your data when data.path is set)
    path: str = ""  # .npz with x_train (N, D), y_train (N,), x_test, y_test; empty: the synthetic mixture below
    n_train: int = 2000  # synthetic: examples per split
    n_test: int = 1000
    dim: int = 16  # synthetic: feature dimension
    classes: int = 4
    separation: float = 0.5  # synthetic: std of the class means (the noise around each mean has std 1)
    data_seed: int = 0  # synthetic: the same data for every loss and run seed
    val_fraction: float = 0.0  # hold out this fraction of the training set to select the reported epoch on
    val_seed: int = 0
    batch_size: int = 64
    eval_batch_size: int = field(default=1024, metadata={"hash": False})  # how fast, not what: not in the hash


@dataclass
class FeatureModelConfig(ModelConfig):
    name: str = "mlp"  # a registered model that takes (N, D) features
    kwargs: dict = field(default_factory=lambda: {"hidden": [64]})


def gaussian_mixture(d: FeatureDataConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``x_train, y_train, x_test, y_test``: unit-variance Gaussians around one random mean per class."""
    gen = torch.Generator().manual_seed(d.data_seed)  # a private generator: the run seed does not move the data
    means = torch.randn(d.classes, d.dim, generator=gen) * d.separation
    y = torch.randint(d.classes, (d.n_train + d.n_test,), generator=gen)
    x = means[y] + torch.randn(len(y), d.dim, generator=gen)
    return x[:d.n_train], y[:d.n_train], x[d.n_train:], y[d.n_train:]


@register_task
class FeatureTask(Task):
    name = "features"
    description = "feature-vector classification (.npz arrays or a synthetic Gaussian mixture)"
    data_config = FeatureDataConfig
    model_config = FeatureModelConfig
    # evaluate() returns loss, acc and balanced_acc: acc is selected on, balanced_acc is reported beside it
    metrics = MetricSpec(primary="acc", label="top-1 accuracy (%)", extra=("balanced_acc",))
    num_classes: int = 0  # set by setup()

    def check(self) -> list[str]:
        d = self.cfg.data
        problems = [] if 0.0 <= d.val_fraction < 1.0 else [f"data.val_fraction must be in [0, 1), got {d.val_fraction}"]
        if d.path and not Path(d.path).is_file():
            problems.append(f"data.path: no such file {d.path!r}")
        return problems

    def setup(self) -> Prepared:
        d = self.cfg.data
        if d.path:
            arrays = np.load(d.path)
            x_train, x_test = (torch.as_tensor(arrays[k], dtype=torch.float32) for k in ("x_train", "x_test"))
            y_train, y_test = (torch.as_tensor(arrays[k], dtype=torch.long) for k in ("y_train", "y_test"))
        else:
            x_train, y_train, x_test, y_test = gaussian_mixture(d)
        self.num_classes = int(max(y_train.max(), y_test.max())) + 1
        model = create_model(self.cfg.model.name, num_classes=self.num_classes, in_channels=x_train.shape[1],
                             **self.cfg.model.kwargs)
        # Float (N, D) arrays pass through TensorBatches unchanged (no normalization or augmentation).
        common = dict(world=self.world, device=self.device)
        val = None
        if d.val_fraction > 0:  # the held-out examples are the same for every loss and run seed
            keep, held = holdout(len(x_train), d.val_fraction, d.val_seed)
            val = TensorBatches(x_train[held], y_train[held], d.eval_batch_size, train=False, **common)
            x_train, y_train = x_train[keep], y_train[keep]
        return Prepared(
            model,
            train=TensorBatches(x_train, y_train, d.batch_size, train=True, seed=self.cfg.train.seed, **common),
            test=TensorBatches(x_test, y_test, d.eval_batch_size, train=False, **common),
            # class counts after the hold-out: what losses such as logit adjustment see
            stats=DataStats(self.num_classes, class_counts(y_train, self.num_classes)),
            val=val,
            train_eval=TensorBatches(x_train, y_train, d.eval_batch_size, train=False, **common),
            notes={"source": d.path or f"gaussian_mixture(seed={d.data_seed})", "num_classes": self.num_classes,
                   "train_size": len(x_train), "test_size": len(x_test)},
        )

    def training_step(self, model: nn.Module, batch: Any, criterion: nn.Module) -> Step:
        x, y = batch
        # a bonus schedule may move the criterion's log_end during training; the diagnostics follow it
        log_end = float(getattr(criterion, "log_end", self.cfg.loss.log_end))
        return classification_step(self.logits(model, x), y, criterion, log_end=log_end)

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        # one pass: the summed loss and, per class, the hits and the examples (over every rank's shard)
        loss, hits, counts = class_totals(lambda x: self.logits(model, x), batches, self.num_classes,
                                          device=self.device, world=self.world)
        seen = counts > 0  # a class absent from the split has no recall to average
        return {"loss": loss / float(counts.sum()), "acc": float(hits.sum() / counts.sum()),
                "balanced_acc": float((hits[seen] / counts[seen]).mean())}


if __name__ == "__main__":  # the `encouraging` command, with this task registered
    import sys

    from encouraging.cli import main

    sys.exit(main())
