"""Graph classification on PyTorch Geometric: TU benchmark datasets (PROTEINS, NCI1, MUTAG, ...) with the paper's
SAGPool network or a GIN baseline (paper.md §3 graph row, §5.1-5.2), and OGB molecule property prediction
(ogbg-molhiv, task ``ogbg``) with the binary loss.

Each run draws its own random 80/10/10 split from ``data.split_seed`` (default: the run seed, as the paper's code
draws a new split per run), so a CE run and an EL run with the same seed share their split and the report's paired
intervals compare like with like. The reported test accuracy is the one at the best validation epoch; with
``train.patience`` the run stops after that many epochs without a better validation accuracy (the paper: 50, with
an epoch budget of 100000). Batches are ``(PyG Batch, labels)`` pairs, so the classification step, the evaluation
and the analyses are the image task's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..engine.batches import LoaderBatches
from ..engine.checks import field_problems, missing_modules
from ..engine.classification import ClassificationTask, binary_step
from ..engine.config import ModelConfig
from ..engine.distributed import gather_rows
from ..engine.task import DataStats, MetricSpec, Prepared, Step, class_counts, register_task

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
    """PyG's collation of graphs into a ``Batch``, returned as ``(batch, labels)`` like every classification batch:
    labels ``(N,)`` (``flatten``, one class per graph) or ``(N, tasks)`` (binary tasks)."""

    def __init__(self, dataset: Any, flatten: bool = True) -> None:
        from torch_geometric.loader.dataloader import Collater

        self.collate, self.flatten = Collater(dataset), flatten

    def __call__(self, items: list) -> tuple[Any, Any]:
        batch = self.collate(items)
        return batch, batch.y.view(-1) if self.flatten else batch.y


@register_task
class GraphTask(ClassificationTask):
    """Task ``graph``: graph classification with PyTorch Geometric on TU datasets (PROTEINS, NCI1, MUTAG), the
    paper's SAGPool network or GIN, a seeded random 80/10/10 split per run."""

    name = "graph"
    description = "graph classification on PyTorch Geometric (TU datasets; SAGPool, GIN; random 80/10/10 splits)"
    data_config = GraphDataConfig
    model_config = GraphModelConfig
    metrics = MetricSpec(notes=("split",))
    evaluations = ("analyze",)

    def check(self) -> list[str]:
        d = self.cfg.data
        return field_problems("data", d, (
            ("batch_size", d.batch_size >= 1, ">= 1"), ("eval_batch_size", d.eval_batch_size >= 1, ">= 1"),
            ("subset", d.subset >= 0, ">= 0 (0 = all)"), ("num_workers", d.num_workers >= 0, ">= 0"),
            ("split", len(d.split) == 3 and all(isinstance(f, int | float) and f >= 0 for f in d.split)
             and abs(sum(d.split) - 1) < 1e-9 and d.split[1] > 0 and d.split[2] > 0,
             "three fractions (train, validation, test) summing to 1, validation and test > 0"),
        )) + missing_modules(self.name, ("torch_geometric",), "graph")

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
        which = "the run seed" if d.split_seed < 0 else str(d.split_seed)  # a note shared by a recipe's runs
        train_idx, val_idx, test_idx = random_split(len(dataset), seed, tuple(d.split))
        train, val, test = dataset[train_idx], dataset[val_idx], dataset[test_idx]
        self.num_classes = dataset.num_classes
        model = create_model(self.cfg.model.name, num_classes=dataset.num_classes,
                             in_channels=dataset.num_features, **self.cfg.model.kwargs)
        collate = _PairCollate(dataset)
        common = dict(world=self.world, num_workers=d.num_workers, device=self.device, collate_fn=collate)
        labels = train.y.view(-1)
        fractions = "/".join(f"{f:g}" for f in d.split)
        split = (f"a random {fractions} split of {len(dataset)} graphs per run (split seed: {which}): {len(train)} "
                 f"train, {len(val)} validation, {len(test)} test")
        notes = {"test_note": f"{d.dataset}: {len(test)} test graphs (random {fractions} split, split seed: {which})",
                 "split": split, "split_seed": seed,
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


@dataclass
class MoleculeDataConfig:
    dataset: str = "ogbg-molhiv"  # the OGB molecule dataset (ogbg-molhiv, built from the HIV SMILES)
    root: str | None = field(default=None, metadata=_RUNTIME)  # data root; default: $ENCOURAGING_DATA, the cache
    subset: int = 0  # keep this many molecules (0 = all), a fixed random share of each scaffold split (checks)
    batch_size: int = 32
    eval_batch_size: int = field(default=1024, metadata=_RUNTIME)
    num_workers: int = field(default=0, metadata=_RUNTIME)


@dataclass
class MoleculeModelConfig(ModelConfig):
    name: str = "gin_virtual"  # OGB's GIN with a virtual node


MOLECULE_DATASETS = ("ogbg-molhiv",)


def _stratified_share(split: dict[str, Any], labels: Any, total: int) -> dict[str, Any]:
    """A fixed random share of each split, ``total`` molecules in all, drawn per label so each split keeps its
    share of positives (at least 2 where it has them): rare positives must not vanish from a small subset."""
    import torch

    gen = torch.Generator().manual_seed(0)
    size = sum(len(v) for v in split.values())
    out = {}
    for name, members in split.items():
        want = max(10, round(total * len(members) / size))
        positive = labels[members] > 0.5
        keep = []
        for group in (members[positive], members[~positive]):
            k = round(want * len(group) / len(members))
            k = min(len(group), max(k, 2)) if len(group) else 0
            keep.append(group[torch.randperm(len(group), generator=gen)[:k]])
        out[name] = torch.cat(keep).sort().values
    return out
BINARY_LOSSES = ("ce", "el")  # ce: binary cross-entropy; el: BinaryEncouragingLoss


@register_task
class MoleculeTask(ClassificationTask):
    """OGB graph property prediction (ogbg-molhiv): binary labels per molecule, trained with the binary loss (BCE or
    :class:`~encouraging.losses.BinaryEncouragingLoss`, NaN labels masked), ROC-AUC from ogb's ``Evaluator`` on
    OGB's scaffold split, the reported epoch chosen on the validation ROC-AUC (OGB's protocol)."""

    name = "ogbg"
    description = "OGB molecule property prediction (ogbg-molhiv: binary loss, ROC-AUC, scaffold split)"
    data_config = MoleculeDataConfig
    model_config = MoleculeModelConfig
    metrics = MetricSpec(primary="rocauc", label="ROC-AUC (%)", paper="", notes=("conversion",))

    def check(self) -> list[str]:
        d, loss = self.cfg.data, self.cfg.loss
        problems = field_problems("data", d, (
            ("dataset", d.dataset in MOLECULE_DATASETS, f"one of {MOLECULE_DATASETS}"),
            ("batch_size", d.batch_size >= 1, ">= 1"), ("eval_batch_size", d.eval_batch_size >= 1, ">= 1"),
            ("subset", d.subset == 0 or d.subset >= 30, "0 (all) or >= 30"),
            ("num_workers", d.num_workers >= 0, ">= 0"),
        ))
        if loss.name not in BINARY_LOSSES:
            problems.append(f"loss.name must be one of {BINARY_LOSSES} for task ogbg (binary labels: ce is binary "
                            f"cross-entropy, el the binary encouraging loss), got {loss.name!r}")
        return problems + missing_modules(self.name, ("torch_geometric", "ogb", "rdkit"), "graph")

    def build_criterion(self, stats: DataStats) -> Any:
        from ..losses import BinaryEncouragingLoss

        loss = self.cfg.loss
        return BinaryEncouragingLoss(log_end=loss.log_end, bonus_scale=loss.bonus_scale if loss.name == "el" else 0.0,
                                     bonus=loss.bonus, gamma=loss.gamma, bonus_start=loss.bonus_start,
                                     bonus_floor=loss.bonus_floor)

    def setup(self) -> Prepared:
        import torch

        from ..data.molecules import load_molhiv
        from ..models import create_model

        d = self.cfg.data
        dataset, conversion = load_molhiv(d.root)
        split = {k: torch.tensor(v) for k, v in conversion["split"].items()}
        if d.subset:
            split = _stratified_share(split, dataset.y.view(-1), d.subset)
        train, val, test = (dataset[split[k]] for k in ("train", "valid", "test"))
        tasks = int(dataset[0].y.shape[-1])
        self.num_classes = tasks
        model = create_model(self.cfg.model.name, num_classes=tasks, in_channels=int(dataset.num_features),
                             **self.cfg.model.kwargs)
        collate = _PairCollate(dataset, flatten=False)
        common = dict(world=self.world, num_workers=d.num_workers, device=self.device, collate_fn=collate)
        odd = (f"; RDKit read {len(conversion['lenient_rows'])} with its valence check off (rows "
               f"{conversion['lenient_rows']})" if conversion["lenient_rows"] else "")
        odd += (f"; {len(conversion['failed_rows'])} unreadable, kept as one-atom placeholders (rows "
                f"{conversion['failed_rows']})" if conversion["failed_rows"] else "")
        notes = {"test_note": f"{d.dataset}: the {len(test)} test molecules of the scaffold split"
                              + (f" (a fixed subset for checks, {d.subset} molecules in all)" if d.subset else ""),
                 "conversion": f"{conversion['molecules']} molecules from {Path(conversion['source']).name}{odd}",
                 "num_tasks": tasks, "train_size": len(train), "val_size": len(val), "test_size": len(test)}
        labels = train.y.view(-1)
        positives = int((labels > 0.5).sum())
        return Prepared(
            model,
            LoaderBatches(train, d.batch_size, train=True, seed=self.cfg.train.seed, drop_last=False, **common),
            LoaderBatches(test, d.eval_batch_size, train=False, **common),
            DataStats(2, (len(labels) - positives, positives)),
            val=LoaderBatches(val, d.eval_batch_size, train=False, **common),
            train_eval=LoaderBatches(train, d.eval_batch_size, train=False, **common),
            notes=notes,
        )

    def training_step(self, model: nn.Module, batch: tuple, criterion: nn.Module) -> Step:
        x, y = batch
        return binary_step(self.logits(model, x), y, criterion, log_end=float(self.cfg.loss.log_end))

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        """ROC-AUC (ogb's ``Evaluator``: the mean over tasks of each task's AUC on its labelled molecules), binary
        cross-entropy and accuracy at 0.5 over the labelled entries."""
        import torch
        import torch.nn.functional as F
        from ogb.graphproppred import Evaluator

        outs, targets = [], []
        with torch.no_grad():
            for x, y in batches.epoch(0):
                outs.append(self.prediction_logits(model, x).cpu())
                targets.append(y.cpu())
        z, y = gather_rows(torch.cat(outs), self.world), gather_rows(torch.cat(targets), self.world)
        labelled = ~torch.isnan(y)
        try:
            rocauc = Evaluator(self.cfg.data.dataset).eval({"y_true": y.numpy(), "y_pred": z.numpy()})["rocauc"]
        except RuntimeError:  # no task has both labels among these molecules: ROC-AUC is undefined
            rocauc = float("nan")
        return {"rocauc": float(rocauc),
                "loss": float(F.binary_cross_entropy_with_logits(z[labelled], y[labelled])),
                "acc": float(((z[labelled] > 0) == (y[labelled] > 0.5)).double().mean())}
