"""Long-tailed image classification: a long-tailed training split of any image dataset, balanced test sets, and
many / medium / few-shot accuracy beside the overall top-1 (the paper's §5.5-5.6 evidence).

The training split is subsampled by :mod:`encouraging.data.longtail` (``data.profile``, ``data.imbalance_ratio``);
the class counts that result are the run's :class:`~encouraging.engine.task.DataStats`, so the long-tail losses
(``cb``, ``ldam``, ``la``, ``bsm`` and their ``_el`` forms) are built from them. Classes are many-shot with more
than ``data.many_above`` training examples, few-shot with fewer than ``data.few_below`` (the paper's 100 and 20),
medium otherwise; ``balanced_acc`` is the mean per-class accuracy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.longtail import PROFILES, long_tail_indices
from ..engine.checkpoint import load_checkpoint
from ..engine.classification import class_totals
from ..engine.config import Config, ModelConfig, load_config
from ..engine.task import MetricSpec, Prepared, register_task
from ..losses import logit_offsets
from ..models import get_classifier, reset_classifier, unwrap_model
from .image import ImageDataConfig, ImageTask

GROUPS = ("many", "medium", "few")
TASK_PROFILES = (*PROFILES, "none")  # none: the training split as given
SAMPLINGS = ("instance", "class_balanced")


@dataclass
class LongTailDataConfig(ImageDataConfig):
    profile: str = "exp"  # exp (Cao et al. 2019) | step | none (already long-tailed: ImageNet-LT, iNaturalist)
    imbalance_ratio: float = 100.0  # n_max / n_min of the training split
    subset_seed: int = 0  # which examples each class keeps (the same for every loss and run seed)
    many_above: int = 100  # many-shot: more training examples than this (the paper's threshold)
    few_below: int = 20  # few-shot: fewer than this (the paper's threshold)
    sampling: str = "instance"  # instance | class_balanced (each class equally likely per draw)
    posthoc_tau: float = 0.0  # post-hoc logit adjustment (Menon et al. 2021): predict from f - tau log(prior)


@dataclass
class LongTailModelConfig(ModelConfig):
    # cRT's second stage: the stage-1 model to freeze. A run directory (or its checkpoint), or a stage-1 recipe
    # (.yaml): its run with this run's seed and loss, which the runner trains first when missing. Empty: none.
    stage1: str = ""


RECIPE_SUFFIXES = (".yaml", ".yml")
# what a stage-1 model must share with its second stage: the network, the dataset and the long-tailed subset
_SHARED = (("model", "name"), ("model", "kwargs"), ("data", "dataset"), ("data", "profile"),
           ("data", "imbalance_ratio"), ("data", "subset_seed"))


def _is_recipe(stage1: str) -> bool:
    return Path(stage1).suffix in RECIPE_SUFFIXES


def _stage1_files(path: str | Path) -> tuple[Path, Path]:
    """``(config.yaml, checkpoint.pt)`` of a stage-1 run directory (or of the run holding a checkpoint file)."""
    given = Path(path)
    run_dir = given if given.is_dir() else given.parent
    return run_dir / "config.yaml", given if given.is_file() else run_dir / "checkpoint.pt"


def shot_groups(class_counts: tuple[int, ...], many_above: int = 100, few_below: int = 20) -> dict[str, list[int]]:
    """Classes per group: ``many`` (count > many_above), ``few`` (count < few_below), ``medium`` the rest."""
    groups: dict[str, list[int]] = {g: [] for g in GROUPS}
    for c, n in enumerate(class_counts):
        groups["many" if n > many_above else "few" if n < few_below else "medium"].append(c)
    return groups


@register_task
class LongTailTask(ImageTask):
    """Task ``longtail``: image classification on a long-tailed training subset, with many / medium / few-shot
    accuracy, class-balanced sampling, post-hoc logit adjustment and cRT."""

    name = "longtail"
    description = "long-tailed image classification (exp / step profiles; many / medium / few-shot accuracy)"
    data_config = LongTailDataConfig
    model_config = LongTailModelConfig
    # no paper column: the paper's long-tailed numbers are iNaturalist's, not those of a balanced dataset's name
    metrics = MetricSpec(extra=("many_acc", "medium_acc", "few_acc", "balanced_acc"), paper="",
                         notes=("long_tail", "groups"))  # the subset and the shot-group thresholds, under every table
    groups: dict[str, list[int]] | None = None  # set by setup()
    posthoc: Tensor | None = None  # tau log(prior) of the training split, subtracted at evaluation
    frozen: bool = False  # cRT's second stage: only the classifier trains

    def check(self) -> list[str]:
        d = self.cfg.data
        problems = super().check()
        if d.profile not in TASK_PROFILES:
            problems.append(f"data.profile must be one of {TASK_PROFILES}, got {d.profile!r}")
        if d.imbalance_ratio < 1:
            problems.append(f"data.imbalance_ratio must be >= 1, got {d.imbalance_ratio}")
        if d.posthoc_tau < 0:
            problems.append(f"data.posthoc_tau must be >= 0, got {d.posthoc_tau}")
        if d.sampling not in SAMPLINGS:
            problems.append(f"data.sampling must be one of {SAMPLINGS}, got {d.sampling!r}")
        if self.cfg.model.stage1:
            problems += self._stage1_problems()
            if d.sampling != "class_balanced":
                problems.append("model.stage1 (cRT) re-trains the classifier with class-balanced sampling: set "
                                "data.sampling=class_balanced")
        if not 0 <= d.few_below <= d.many_above:
            problems.append(f"data.few_below must be in [0, data.many_above], got {d.few_below} and {d.many_above}")
        return problems

    def _stage1_problems(self) -> list[str]:
        """The stage-1 run or recipe must exist and share the network, the dataset and the long-tailed subset."""
        stage1 = self.cfg.model.stage1
        if _is_recipe(stage1):
            if not Path(stage1).is_file():
                return [f"model.stage1: no stage-1 recipe at {stage1}"]
            source = Path(stage1)
        else:
            source, checkpoint = _stage1_files(stage1)
            if not (source.is_file() and checkpoint.is_file()):
                return [f"model.stage1: no stage-1 run at {stage1} (needs {source.name} and {checkpoint.name}); "
                        "train stage 1 first"]
        try:
            first = load_config(source)
        except (OSError, ValueError, TypeError) as error:
            return [f"model.stage1: {source}: {error}"]
        if first.task != self.cfg.task:
            return [f"model.stage1: {source} is a {first.task!r} run; stage 1 must be a {self.cfg.task!r} run"]
        return [f"model.stage1: {source} has {section}.{key}={getattr(getattr(first, section), key)!r}, this run "
                f"{getattr(getattr(self.cfg, section), key)!r} (cRT re-trains the classifier of the same network on "
                "the same data)"
                for section, key in _SHARED
                if getattr(getattr(first, section), key) != getattr(getattr(self.cfg, section), key)]

    @classmethod
    def upstream(cls, cfg: Config) -> dict[str, Config]:
        """With a stage-1 recipe: that recipe with this run's seed and loss (and its data location)."""
        if not _is_recipe(cfg.model.stage1):
            return {}
        first = load_config(cfg.model.stage1)
        located = {f.name: getattr(cfg.data, f.name) for f in dataclasses.fields(cfg.data)
                   if f.metadata.get("hash") is False}
        return {"stage1": dataclasses.replace(first, loss=cfg.loss, data=dataclasses.replace(first.data, **located),
                                              train=dataclasses.replace(first.train, seed=cfg.train.seed))}

    def class_balanced_sampling(self) -> bool:
        return self.cfg.data.sampling == "class_balanced"

    def select_train(self, labels: Tensor, num_classes: int, notes: dict) -> Tensor | None:
        d = self.cfg.data
        if d.profile == "none":
            notes["long_tail"] = f"the training split as given ({len(labels)} examples)"
            return None
        keep = long_tail_indices(labels, num_classes, d.profile, d.imbalance_ratio, d.subset_seed)
        notes["long_tail"] = (f"{d.profile} profile, ratio {d.imbalance_ratio:g}: {len(keep)} of {len(labels)} "
                              "examples")
        return keep

    def setup(self) -> Prepared:
        prepared = super().setup()
        d = self.cfg.data
        self.groups = shot_groups(prepared.stats.class_counts, d.many_above, d.few_below)
        if d.posthoc_tau:
            self.posthoc = logit_offsets(prepared.stats.class_counts, d.posthoc_tau).to(self.device)
        sizes = ", ".join(f"{g} {len(c)}" for g, c in self.groups.items())
        prepared.notes["groups"] = (f"classes: {sizes} (many: > {d.many_above} training examples, few: < "
                                    f"{d.few_below})")
        if self.cfg.model.stage1:
            self._load_stage1(prepared)
        return prepared

    def _load_stage1(self, prepared: Prepared) -> None:
        """cRT (Kang et al. 2020): the stage-1 model's weights, a fresh classifier, everything else frozen."""
        stage1 = self.cfg.model.stage1
        if _is_recipe(stage1) and "stage1" not in self.upstream_dirs:
            raise RuntimeError(f"model.stage1={stage1!r} names a recipe: run this config with "
                               "encouraging.experiment.run / grid (or the CLI), which resolve its stage-1 run")
        config, checkpoint = _stage1_files(self.upstream_dirs.get("stage1", stage1))
        model = prepared.model
        model.load_state_dict(load_checkpoint(checkpoint, map_location="cpu")["model"])
        reset_classifier(model)
        head = get_classifier(model)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        self.frozen = True
        prepared.notes["stage1"] = str(config.parent)

    def train_mode(self, model: nn.Module) -> None:
        if not self.frozen:
            return super().train_mode(model)
        model.eval()  # the frozen backbone's BatchNorm statistics and dropout stay as stage 1 left them
        get_classifier(unwrap_model(model)).train()

    def prediction_logits(self, model: nn.Module, inputs: Any) -> Tensor:
        """With ``data.posthoc_tau``: the adjusted logits ``f - tau log(prior)`` (Menon et al. 2021)."""
        out = self.logits(model, inputs)
        return out if self.posthoc is None else out - self.posthoc

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        """Loss and top-1 over all examples, accuracy per shot group and balanced (the mean over the classes
        present), all of :meth:`prediction_logits`."""
        loss, hits, counts = class_totals(lambda x: self.prediction_logits(model, x), batches, self.num_classes,
                                          device=self.device, world=self.world)
        per_class, present = hits / counts.clamp(min=1), counts > 0
        out = {"loss": loss / float(counts.sum()), "acc": float(hits.sum() / counts.sum()),
               "balanced_acc": float(per_class[present].mean())}
        for group, classes in (self.groups or {}).items():
            idx = torch.tensor([c for c in classes if present[c]], dtype=torch.long, device=self.device)
            out[f"{group}_acc"] = float(per_class[idx].mean()) if len(idx) else float("nan")
        return out
