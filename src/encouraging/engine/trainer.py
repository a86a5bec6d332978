"""The training loop, the same for every task: one optimizer step per batch, evaluation and checkpoint per epoch.

The task (:class:`~encouraging.engine.task.Task`) computes each step and each evaluation; the trainer optimizes,
schedules, logs, checkpoints and resumes, and selects the reported epoch. Per epoch it records ``train_loss`` (the
training loss, averaged over the epoch's examples), the task's step diagnostics (``sums / count``: for
classification ``train_ce``, ``train_bonus``, ``train_acc``, ``p_target``, ``frac_past_log_end``), ``grad_norm``
(global gradient norm before clipping, mean over steps), ``lr`` (at the epoch's last step), the task's metrics on
the validation split (``val_<name>``, when the task has one) and the test split (``test_<name>``), and
``train_time`` / ``epoch_time`` (seconds). Diagnostics accumulate on the device and are read once per epoch, so
they cost no host sync per step.

**Divergence.** An epoch whose training loss is not finite marks the run diverged (``diverged_epoch`` in the final
metrics, which reports count and leave out of every mean); ``train.on_diverge=stop`` (default) ends training there,
``continue`` trains on.

**Model selection.** With a validation split the reported epoch is the one with the best validation value of the
task's primary metric (the first such epoch), or with ``train.select_on=loss`` the lowest validation loss (as the
SAGPool code selects); ``train.patience`` > 0 stops training after that many epochs without a better one.
Without a validation split the last epoch is reported. The best *test* value over epochs (the
paper's protocol, which selects on the test set) is kept as ``best_test_<metric>``, a labelled extra column.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, average_state_dicts, load_checkpoint, save_checkpoint
from .config import config_hash
from .distributed import all_reduce_sum, barrier
from .optim import build_optimizer, build_scheduler
from .progress import Progress
from .task import MetricSpec, Prepared, Task

CHECKPOINT = "checkpoint.pt"


class Trainer:
    """Trains ``prepared.model`` with ``criterion`` on ``prepared.train`` through ``task``, evaluating after every
    epoch.

    Args:
        task: the run's task (its config, device and world are the trainer's).
        prepared: what ``task.setup()`` returned.
        criterion: the training loss (an ``nn.Module`` the task's step calls).
        schedule: an optional ``BonusSchedule`` applied to ``criterion`` at the start of every epoch.
        run_dir: where ``checkpoint.pt`` is written each epoch (rank 0); None disables checkpoints.
        on_epoch: called on rank 0 with ``(epoch, metrics)`` after each epoch (the results database hook).
    """

    def __init__(self, task: Task, prepared: Prepared, criterion: nn.Module, *, schedule: Any = None,
                 run_dir: Path | None = None, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 quiet: bool = False, title: str = "") -> None:
        cfg = task.cfg
        # the criterion may hold tensors (class weights, margins from the training statistics): on the device too
        self.task, self.cfg, self.criterion, self.prepared = task, cfg, criterion.to(task.device), prepared
        self.device, self.world, self.schedule, self.run_dir = task.device, task.world, schedule, run_dir
        self.on_epoch, self.quiet, self.title = on_epoch, quiet, title or cfg.name
        self.train_batches = prepared.train
        self.module = prepared.model.to(self.device)
        self.model: nn.Module = self.module
        if self.world.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.module.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.epochs,
                                         -(-len(self.train_batches) // cfg.optim.accumulate))  # optimizer steps
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0

    @property
    def spec(self) -> MetricSpec:
        return self.task.metrics

    # ---------------------------------------------------------------------------------------------- checkpoints

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT if self.run_dir is not None else None

    def state(self, next_epoch: int) -> dict[str, Any]:
        return {
            "epoch": next_epoch,
            "config_hash": config_hash(self.cfg),
            "seed": self.cfg.train.seed,
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": self.history,
        }

    def resume(self) -> bool:
        """Load the run's checkpoint if there is one; return whether training continues from it."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        state = load_checkpoint(path, map_location=self.device)
        if state["config_hash"] != config_hash(self.cfg) or state["seed"] != self.cfg.train.seed:
            raise CheckpointError(f"{path} belongs to another config or seed; refusing to resume from it")
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        self.history = list(state["history"])
        self.start_epoch = int(state["epoch"])
        return True

    # ------------------------------------------------------------------------------------------------- training

    def fit(self) -> dict[str, Any]:
        """Train from ``start_epoch`` to the end (or until early stopping); return the final metrics."""
        epochs = self.cfg.train.epochs
        with Progress(self.title, epochs, len(self.train_batches), quiet=self.quiet, main=self.world.main,
                      primary=self.spec.primary, percent=self.spec.scale == 100) as bar:
            for epoch in range(self.start_epoch, epochs):
                if self.stopped_early() or self.stopped_diverged():
                    break
                if self.schedule is not None:
                    self.schedule.apply(self.criterion, epoch)
                start = time.perf_counter()
                bar.start_epoch(epoch)
                metrics = self.train_epoch(epoch, bar.advance)
                metrics["train_time"] = time.perf_counter() - start
                metrics.update(self.evaluate_splits())
                metrics["epoch_time"] = time.perf_counter() - start
                self.history.append(metrics)
                if self.world.main:
                    # Log first, then checkpoint: a kill in between re-runs (and re-logs) this epoch on resume.
                    if self.on_epoch is not None:
                        self.on_epoch(epoch, metrics)
                    if self.checkpoint_path is not None:
                        save_checkpoint(self.state(epoch + 1), self.checkpoint_path)
                    self.keep_weights(epoch)
                barrier(self.world)
                bar.end_epoch(epoch, metrics)
        final = final_metrics(self.history, self.spec, has_val=self.prepared.val is not None,
                              select_on=self.cfg.train.select_on)
        return {**final, **self.averaged()} if final else final

    def weights_path(self, epoch: int) -> Path | None:
        return self.run_dir / f"weights-epoch{epoch}.pt" if self.run_dir is not None else None

    def keep_weights(self, epoch: int) -> None:
        """With ``train.average_last`` = N: this epoch's model weights, and only the last N epochs' kept."""
        n = self.cfg.train.average_last
        if n <= 0 or self.run_dir is None:
            return
        save_checkpoint({"epoch": epoch, "model": self.module.state_dict()}, self.weights_path(epoch))
        for old in self.run_dir.glob("weights-epoch*.pt"):
            if int(old.stem.removeprefix("weights-epoch")) <= epoch - n:
                old.unlink()

    def averaged(self) -> dict[str, Any]:
        """The test metrics of the mean of the last ``train.average_last`` epochs' weights (``averaged_test_*``,
        with ``averaged_epochs``), the model's own weights restored after; saved as ``weights-averaged.pt``.
        Single-process runs only (a data-parallel run skips it on every rank: only rank 0 keeps the weights)."""
        n = self.cfg.train.average_last
        if n <= 0 or self.run_dir is None or not self.history or self.world.active:
            return {}
        last = int(self.history[-1]["epoch"])
        paths = [p for e in range(max(0, last - n + 1), last + 1) if (p := self.weights_path(e)).is_file()]
        if not paths:
            return {}
        own = {k: v.clone() for k, v in self.module.state_dict().items()}
        averaged = average_state_dicts([load_checkpoint(p, map_location=self.device)["model"] for p in paths])
        save_checkpoint({"epochs": [int(p.stem.removeprefix("weights-epoch")) for p in paths], "model": averaged},
                        self.run_dir / "weights-averaged.pt")
        self.module.load_state_dict(averaged)
        try:
            metrics = self.evaluate(self.prepared.test, "averaged_test")
        finally:
            self.module.load_state_dict(own)
        return {**metrics, "averaged_epochs": len(paths)}

    def train_epoch(self, epoch: int, advance: Callable[[], None] = lambda: None) -> dict[str, float]:
        self.task.train_mode(self.model)
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        # One float64 vector per epoch: loss x count, count, grad norm, steps, then the task's sums. Few kernels and
        # no host sync per step: a small model's step is bound by kernel launches on a GPU.
        totals: torch.Tensor | None = None
        keys: list[str] = []
        one = torch.ones((), device=self.device)
        accumulate, batches = self.cfg.optim.accumulate, len(self.train_batches)
        pending, group = 0, 0  # batches and examples (tokens) since the last optimizer step
        zero = torch.zeros((), device=self.device)
        for i, batch in enumerate(self.train_batches.epoch(epoch)):
            step = self.task.training_step(self.model, batch, self.criterion)
            if pending == 0:
                self.optimizer.zero_grad(set_to_none=True)
            if accumulate == 1:
                step.loss.backward()
            else:  # gradients of the summed losses, divided by the group's count below: the mean over all of it
                (step.loss * step.count).backward()
                group = group + step.count
            pending += 1
            stepped = pending == accumulate or i + 1 == batches
            if stepped:
                if accumulate > 1:
                    for p in self.params:
                        if p.grad is not None:
                            p.grad.div_(group)
                if clip < math.inf:
                    grad_norm = nn.utils.clip_grad_norm_(self.params, clip)
                else:  # only measure: clip_grad_norm_ would also rescale every gradient by 1.0
                    grad_norm = nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
                self.optimizer.step()
                self.scheduler.step()
                pending, group = 0, 0
            with torch.no_grad():
                keys = keys or list(step.sums)
                count = one * step.count
                fixed = torch.stack([step.loss.detach() * step.count, count, grad_norm.float() if stepped else zero,
                                     one if stepped else zero]).double()
                # one stack (promoted to the widest dtype) and one cast, whatever the number of diagnostics
                vector = torch.cat([fixed, torch.stack([step.sums[k] for k in keys]).double()]) if keys else fixed
                totals = vector if totals is None else totals + vector
            advance()
        if totals is None:
            raise ValueError(f"the training split yields no batch in epoch {epoch} (batch size larger than the data?)")
        loss_sum, count, gn_sum, steps, *sums = all_reduce_sum(totals, self.world).tolist()
        steps = steps / self.world.size
        metrics = {"epoch": epoch, "train_loss": loss_sum / count}
        metrics.update({k: v / count for k, v in zip(keys, sums, strict=True)})
        metrics.update({"grad_norm": gn_sum / self.world.size / steps, "lr": self.optimizer.param_groups[0]["lr"]})
        return metrics

    @torch.no_grad()
    def evaluate(self, batches: Any = None, prefix: str = "test") -> dict[str, float]:
        """The task's metrics over every example of ``batches`` (default: the test split), keys ``<prefix>_<name>``."""
        self.model.eval()
        found = self.task.evaluate(self.model, batches if batches is not None else self.prepared.test)
        if self.spec.primary not in found:
            raise KeyError(f"task {self.task.name!r} evaluated {sorted(found)} but declares the primary metric "
                           f"{self.spec.primary!r}")
        return {f"{prefix}_{k}": v for k, v in found.items()}

    def evaluate_splits(self) -> dict[str, float]:
        out = self.evaluate(self.prepared.val, "val") if self.prepared.val is not None else {}
        return {**out, **self.evaluate(self.prepared.test, "test")}

    def stopped_diverged(self) -> bool:
        return self.cfg.train.on_diverge == "stop" and diverged_epoch(self.history) is not None

    def stopped_early(self) -> bool:
        """Whether ``train.patience`` epochs have passed since the best validation epoch."""
        patience = self.cfg.train.patience
        if patience <= 0 or self.prepared.val is None or not self.history:
            return False
        best = selected_epoch(self.history, selection_spec(self.spec, self.cfg.train.select_on), "val")
        return self.history[-1]["epoch"] - best >= patience


def diverged_epoch(history: list[dict[str, float]]) -> int | None:
    """The first epoch whose training loss is not finite (None when every one is)."""
    return next((int(m["epoch"]) for m in history if not math.isfinite(m["train_loss"])), None)


def selected_epoch(history: list[dict[str, float]], spec: MetricSpec, split: str) -> int:
    """The first epoch with the best ``<split>_<primary>`` (non-finite values never win; the last epoch when no
    value is finite)."""
    key = f"{split}_{spec.primary}"
    best = None
    for m in history:
        if math.isfinite(m[key]) and (best is None or spec.better(m[key], best[key])):
            best = m
    return int((best or history[-1])["epoch"])


def selection_spec(spec: MetricSpec, select_on: str = "") -> MetricSpec:
    """The metric the reported epoch is selected on: the task's primary one, or the loss (lower is better)."""
    return MetricSpec(primary="loss", higher_is_better=False) if select_on == "loss" else spec


def final_metrics(history: list[dict[str, float]], spec: MetricSpec, *, has_val: bool,
                  select_on: str = "") -> dict[str, Any]:
    """The run's reported numbers from its per-epoch history.

    ``selected_test_<p>`` is the test value at the selected epoch (``selected_epoch``: best on validation, or the
    last epoch without a validation split, ``selection`` says which); ``final_test_<p>`` the last epoch's;
    ``best_test_<p>`` / ``best_epoch`` the best over epochs on the test set itself (the paper's protocol); plus
    ``final_<metric>`` for the last epoch's validation and test metrics, training accuracy and mean ``p_target``.
    """
    if not history:
        return {}
    p, by_epoch = spec.primary, {int(m["epoch"]): m for m in history}
    last = history[-1]
    best = by_epoch[selected_epoch(history, spec, "test")]
    chosen = by_epoch[selected_epoch(history, selection_spec(spec, select_on), "val")] if has_val else last
    out: dict[str, Any] = {
        f"best_test_{p}": best[f"test_{p}"],
        "best_epoch": best["epoch"],
        f"final_test_{p}": last[f"test_{p}"],
        f"selected_test_{p}": chosen[f"test_{p}"],
        "selected_epoch": chosen["epoch"],
        "selection": "val" if has_val else "last",
        "epochs_trained": len(history),
    }
    if has_val:
        out[f"selected_val_{p}"] = chosen[f"val_{p}"]
        if select_on:
            out[f"selected_val_{select_on}"] = chosen[f"val_{select_on}"]
    for key, value in last.items():
        if key.startswith(("test_", "val_")) or key in ("train_acc", "p_target"):
            out.setdefault(f"final_{key}", value)
    out["train_time"] = sum(m["train_time"] for m in history)
    diverged = diverged_epoch(history)
    if diverged is not None:
        out["diverged_epoch"] = diverged
    return out
