"""The training loop: plain PyTorch, one optimizer step per batch, one evaluation and checkpoint per epoch.

Per epoch it records (averaged over the epoch's training batches unless noted): ``train_loss`` (the training
loss), ``train_ce`` (plain cross-entropy of the same logits, comparable across losses), ``train_bonus``
(loss - CE: the paper's logged "reward" for EL), ``train_acc``, ``p_target`` (mean target probability),
``frac_past_log_end`` (fraction of examples with ``p_target > log_end``), ``grad_norm`` (global gradient norm
before clipping), ``lr`` (at the epoch's last step), ``test_loss``/``test_acc`` (after the epoch),
``train_time`` and ``epoch_time`` (seconds). Diagnostics accumulate on the device and are read once per epoch,
so they cost no host sync per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .adversarial import build_perturbation
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, config_hash
from .distributed import SINGLE, World, all_reduce_sum, barrier
from .optim import build_optimizer, build_scheduler
from .progress import Progress
from .runtime import autocast, autocast_dtype

CHECKPOINT = "checkpoint.pt"


class Trainer:
    """Trains ``model`` with ``criterion`` on ``train`` batches and evaluates on ``test`` after every epoch.

    Args:
        cfg: the resolved config (optimizer, schedule, epochs, amp, compile, seed).
        model, criterion: the network and the training loss (an ``nn.Module`` taking ``(logits, target)``).
        train, test: batch sources with ``len()`` and ``epoch(e)`` (:mod:`.batches`).
        schedule: an optional ``BonusSchedule`` applied to ``criterion`` at the start of every epoch.
        run_dir: where ``checkpoint.pt`` is written each epoch (rank 0); None disables checkpoints.
        on_epoch: called on rank 0 with ``(epoch, metrics)`` after each epoch (the results database hook).
    """

    def __init__(self, cfg: Config, model: nn.Module, criterion: nn.Module, train: Any, test: Any, *,
                 device: torch.device, world: World = SINGLE, schedule: Any = None, run_dir: Path | None = None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None, quiet: bool = False,
                 title: str = "") -> None:
        self.cfg, self.criterion, self.train_batches, self.test_batches = cfg, criterion, train, test
        self.device, self.world, self.schedule, self.run_dir = device, world, schedule, run_dir
        self.on_epoch, self.quiet, self.title = on_epoch, quiet, title or cfg.name
        self.module = model.to(device)
        self.model: nn.Module = self.module
        if world.active:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        self.amp = autocast_dtype(cfg.train.amp, device)
        self.optimizer = build_optimizer(self.module.parameters(), cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.epochs, len(train))
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        # train.adversarial: each batch is replaced by attacked examples of the current model (None: clean batches)
        self.perturb = build_perturbation(cfg, self.module, train)
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0

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

    def fit(self) -> dict[str, float]:
        """Train from ``start_epoch`` to the end; return the final metrics."""
        epochs = self.cfg.train.epochs
        with Progress(self.title, epochs, len(self.train_batches), quiet=self.quiet, main=self.world.main) as bar:
            for epoch in range(self.start_epoch, epochs):
                if self.schedule is not None:
                    self.schedule.apply(self.criterion, epoch)
                start = time.perf_counter()
                bar.start_epoch(epoch)
                metrics = self.train_epoch(epoch, bar.advance)
                metrics["train_time"] = time.perf_counter() - start
                metrics.update(self.evaluate())
                metrics["epoch_time"] = time.perf_counter() - start
                self.history.append(metrics)
                if self.world.main:
                    # Log first, then checkpoint: a kill in between re-runs (and re-logs) this epoch on resume.
                    if self.on_epoch is not None:
                        self.on_epoch(epoch, metrics)
                    if self.checkpoint_path is not None:
                        save_checkpoint(self.state(epoch + 1), self.checkpoint_path)
                barrier(self.world)
                bar.end_epoch(epoch, metrics)
        return self.final_metrics()

    def train_epoch(self, epoch: int, advance: Callable[[], None] = lambda: None) -> dict[str, float]:
        self.model.train()
        log_end = float(getattr(self.criterion, "log_end", self.cfg.loss.log_end))
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        # sums: ce, correct, p_target, past log_end (per example); loss x examples, examples, grad norm, steps.
        # Few kernels and no host sync per step: a small model's step is bound by kernel launches on a GPU.
        sums = torch.zeros(8, dtype=torch.float64, device=self.device)
        one = torch.ones((), device=self.device)
        for x, y in self.train_batches.epoch(epoch):
            if self.perturb is not None:
                x = self.perturb(x, y)
            with autocast(self.device, self.amp):
                logits = self.model(x)
            logits = logits.float()
            loss = self.criterion(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip < math.inf:
                grad_norm = nn.utils.clip_grad_norm_(self.params, clip)
            else:  # only measure: clip_grad_norm_ would also rescale every gradient by 1.0
                grad_norm = nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
            self.optimizer.step()
            self.scheduler.step()
            with torch.no_grad():
                log_p_y = logits.log_softmax(1).gather(1, y.unsqueeze(1)).squeeze(1)
                p_y = log_p_y.exp()
                n = y.numel()
                per_example = torch.stack([-log_p_y, (logits.argmax(1) == y).float(), p_y, (p_y > log_end).float()])
                per_step = torch.stack([loss.detach() * n, one * n, grad_norm.float(), one])
                sums += torch.cat([per_example.sum(1), per_step]).double()
            advance()
        all_reduce_sum(sums, self.world)
        ce_sum, correct, p_sum, past, loss_sum, count, gn_sum, steps = sums.tolist()
        steps = steps / self.world.size
        return {
            "epoch": epoch,
            "train_loss": loss_sum / count,
            "train_ce": ce_sum / count,
            "train_bonus": (loss_sum - ce_sum) / count,
            "train_acc": correct / count,
            "p_target": p_sum / count,
            "frac_past_log_end": past / count,
            "grad_norm": gn_sum / self.world.size / steps,
            "lr": self.optimizer.param_groups[0]["lr"],
        }

    @torch.no_grad()
    def evaluate(self, batches: Any = None, prefix: str = "test") -> dict[str, float]:
        """Cross-entropy and accuracy over every example of ``batches`` (default: the test set)."""
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        one = torch.ones((), dtype=torch.float64, device=self.device)
        for x, y in (batches or self.test_batches).epoch(0):
            with autocast(self.device, self.amp):
                logits = self.model(x)
            logits = logits.float()
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 (logits.argmax(1) == y).double().sum(), one * y.numel()])
        loss, correct, count = all_reduce_sum(sums, self.world).tolist()
        return {f"{prefix}_loss": loss / count, f"{prefix}_acc": correct / count}

    def final_metrics(self) -> dict[str, float]:
        if not self.history:
            return {}
        best = max(self.history, key=lambda m: m["test_acc"])
        last = self.history[-1]
        return {
            "best_test_acc": best["test_acc"],
            "best_epoch": best["epoch"],
            "final_test_acc": last["test_acc"],
            "final_train_acc": last["train_acc"],
            "final_test_loss": last["test_loss"],
            "final_p_target": last["p_target"],
            "train_time": sum(m["train_time"] for m in self.history),
        }
