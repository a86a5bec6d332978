"""Optimizers and learning-rate schedules of the paper's recipes, stepped once per optimizer step.

The schedule is a function of the fractional epoch ``e = step / steps_per_epoch``: linear warm-up over
``warmup_epochs``, then ``constant``, ``multistep`` (times ``gamma`` at each milestone epoch), ``cosine`` (to 0 at
the last step), ``exp_step`` (times ``gamma`` every ``step_epochs``: timm's EfficientNet recipe) or
``inverse_sqrt`` (``sqrt(warmup_epochs / e)`` after the warm-up: fairseq's translation schedule, in epochs; it
needs ``warmup_epochs`` > 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from .config import OptimConfig

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "multistep", "cosine", "exp_step", "inverse_sqrt")


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name must be one of {OPTIMIZERS}, got {cfg.name!r}")


def lr_factor(cfg: OptimConfig, epoch: float, total_epochs: float) -> float:
    """Multiplier of ``cfg.lr`` at fractional epoch ``epoch``."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return epoch / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        span = max(total_epochs - cfg.warmup_epochs, 1e-12)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - cfg.warmup_epochs) / span, 1.0)))
    if cfg.schedule == "exp_step":
        return cfg.gamma ** math.floor(epoch / cfg.step_epochs)
    if cfg.schedule == "inverse_sqrt":
        if cfg.warmup_epochs <= 0:
            raise ValueError("optim.schedule=inverse_sqrt needs optim.warmup_epochs > 0 (its peak)")
        return math.sqrt(cfg.warmup_epochs / epoch)
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, steps_per_epoch: int) -> LambdaLR:
    lr_factor(cfg, 0.0, epochs)  # validates the schedule name up front
    return LambdaLR(optimizer, lambda step: lr_factor(cfg, step / steps_per_epoch, epochs))
