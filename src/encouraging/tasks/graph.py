"""Graph classification on PyTorch Geometric: TU benchmark datasets (PROTEINS, NCI1, MUTAG, ...) with the paper's
SAGPool network or a GIN baseline (paper.md §3 graph row, §5.1-5.2).

Each run draws its own random 80/10/10 split from ``data.split_seed`` (default: the run seed, as the paper's code
draws a new split per run), so a CE run and an EL run with the same seed share their split and the report's paired
intervals compare like with like. The reported test accuracy is the one at the best validation epoch; with
``train.patience`` the run stops after that many epochs without a better validation accuracy (the paper: 50, with
an epoch budget of 100000). Batches are ``(PyG Batch, labels)`` pairs, so the classification step, the evaluation
and the analyses are the image task's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..engine.batches import LoaderBatches
from ..engine.classification import ClassificationTask
from ..engine.config import ModelConfig
from ..engine.task import DataStats, MetricSpec, Prepared, class_counts, register_task

_RUNTIME = {"hash": False}


@dataclass
class GraphDataConfig:
    dataset: str = "PROTEINS"  # a TU dataset: PROTEINS, NCI1, MUTAG, ... (raw files under <root>/tu/<NAME>/)
    root: str | None = field(default=None, metadata=_RUNTIME)  # data root; default: $ENCOURAGING_DATA, the cache
    split: list = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train / validation / test fractions
    split_seed: int = -1  # which random split (-1: the run seed, a new split per run as in the paper)
    subset: int = 0  # keep this many graphs (0 = all), a fixed random subset (quick checks)
    batch_size: int = 128
    eval_batch_size: int = field(default=512, metadata=_RUNTIME)
    num_workers: int = field(default=0, metadata=_RUNTIME)  # DataLoader workers (0: collate in the main process)


@dataclass
class GraphModelConfig(ModelConfig):
    name: str = "sagpool"  # sagpool (the paper's) | gin


class _PairCollate:
    """PyG's collation of graphs into a ``Batch``, returned as ``(batch, labels)`` like every classification batch."""

    def __init__(self, dataset: Any) -> None:
        from torch_geometric.loader.dataloader import Collater

        self.collate = Collater(dataset)

    def __call__(self, items: list) -> tuple[Any, Any]:
        batch = self.collate(items)
        return batch, batch.y.view(-1)


@register_task
class GraphTask(ClassificationTask):
    name = "graph"
    description = "graph classification on PyTorch Geometric (TU datasets; SAGPool, GIN; random 80/10/10 splits)"
    data_config = GraphDataConfig
    model_config = GraphModelConfig
    metrics = MetricSpec(notes=("split",))

    def check(self) -> list[str]:
        d = self.cfg.data
        problems = [f"data.{name} must be {rule}, got {getattr(d, name)!r}" for name, ok, rule in (
            ("batch_size", d.batch_size >= 1, ">= 1"), ("eval_batch_size", d.eval_batch_size >= 1, ">= 1"),
            ("subset", d.subset >= 0, ">= 0 (0 = all)"), ("num_workers", d.num_workers >= 0, ">= 0"),
            ("split", len(d.split) == 3 and all(isinstance(f, int | float) and f >= 0 for f in d.split)
             and abs(sum(d.split) - 1) < 1e-9 and d.split[1] > 0 and d.split[2] > 0,
             "three fractions (train, validation, test) summing to 1, validation and test > 0"),
        ) if not ok]
        try:
            import torch_geometric  # noqa: F401
        except ImportError:
            problems.append("task graph needs PyTorch Geometric: pip install 'encouraging[graph]'")
        return problems

    def setup(self) -> Prepared:
        import torch

        from ..data.graphs import load_tu, random_split
        from ..models import create_model
        from ..models import graphs as _graph_models  # noqa: F401  (registers sagpool and gin)

        d = self.cfg.data
        dataset = load_tu(d.dataset, d.root)
        if d.subset and d.subset < len(dataset):
            keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:d.subset].sort().values
            dataset = dataset[keep]
        seed = self.cfg.train.seed if d.split_seed < 0 else d.split_seed
        train_idx, val_idx, test_idx = random_split(len(dataset), seed, tuple(d.split))
        train, val, test = dataset[train_idx], dataset[val_idx], dataset[test_idx]
        self.num_classes = dataset.num_classes
        model = create_model(self.cfg.model.name, num_classes=dataset.num_classes,
                             in_channels=dataset.num_features, **self.cfg.model.kwargs)
        collate = _PairCollate(dataset)
        common = dict(world=self.world, num_workers=d.num_workers, device=self.device, collate_fn=collate)
        labels = train.y.view(-1)
        split = (f"random {'/'.join(f'{f:g}' for f in d.split)} split of {len(dataset)} graphs (split seed {seed}): "
                 f"{len(train)} train, {len(val)} validation, {len(test)} test")
        notes = {"test_note": f"{d.dataset}: the {len(test)} test graphs of a {split.split(':')[0]}", "split": split,
                 "num_classes": dataset.num_classes, "num_features": dataset.num_features,
                 "train_size": len(train), "val_size": len(val), "test_size": len(test)}
        return Prepared(
            model,
            LoaderBatches(train, d.batch_size, train=True, seed=self.cfg.train.seed, drop_last=False, **common),
            LoaderBatches(test, d.eval_batch_size, train=False, **common),
            DataStats(dataset.num_classes, class_counts(labels, dataset.num_classes)),
            val=LoaderBatches(val, d.eval_batch_size, train=False, **common),
            train_eval=LoaderBatches(train, d.eval_batch_size, train=False, **common),
            notes=notes,
        )
