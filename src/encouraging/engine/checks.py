"""Every problem with a config, found before anything is loaded, claimed or trained.

:func:`config_problems` checks the engine's sections (ranges and names, the trackers and their packages), the loss
(its preset, its schedule, and its module's own argument checks) and the task's section
(:meth:`~encouraging.engine.task.Task.check`); it returns one message per problem, each naming the field and the
value, so a grid can refuse all of them in one message.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterable
from typing import Any

from .config import Config
from .runtime import AMP_MODES
from .trackers import tracker_problems

# (dotted field, test, what it must be)
_RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("optim.lr", lambda v: v > 0 and math.isfinite(v), "> 0"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.gamma", lambda v: v > 0, "> 0"),
    ("optim.step_epochs", lambda v: v > 0, "> 0"),
    ("optim.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("optim.grad_clip", lambda v: v >= 0, ">= 0 (0 = no clipping)"),
    ("optim.accumulate", lambda v: v >= 1, ">= 1 (1 = a step per batch)"),
    ("optim.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("optim.milestones", lambda v: all(isinstance(m, int | float) and m >= 0 for m in v), "epochs >= 0"),
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.threads", lambda v: v >= 0, ">= 0 (0 = torch's default)"),
    ("train.patience", lambda v: v >= 0, ">= 0 (0 = no early stopping)"),
    ("train.select_on", lambda v: v in ("", "loss"), "'' (the task's primary metric) or 'loss'"),
    ("train.average_last", lambda v: v >= 0, ">= 0 (0 = no checkpoint averaging)"),
    ("train.amp", lambda v: v in AMP_MODES, f"one of {AMP_MODES}"),
    ("train.on_diverge", lambda v: v in ("stop", "continue"), "one of stop, continue"),
    ("train.adversarial.eps", lambda v: v >= 0, ">= 0"),
    ("train.adversarial.alpha", lambda v: v >= 0, ">= 0"),
    ("train.adversarial.steps", lambda v: v >= 1, ">= 1"),
)


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def field_problems(prefix: str, section: Any, rules: Iterable[tuple[str, bool, str]]) -> list[str]:
    """``"<prefix>.<name> must be <rule>, got <value>"`` for each rule ``(name, ok, rule)`` of ``section`` that
    failed: a task's checks of its own config section."""
    return [f"{prefix}.{name} must be {rule}, got {getattr(section, name)!r}" for name, ok, rule in rules if not ok]


def missing_modules(task: str, modules: Iterable[str], extra: str) -> list[str]:
    """One message per module of ``modules`` that is not installed (looked up, not imported: PyG and Transformers
    take seconds to import, and a grid checks every config before it trains)."""
    return [f"task {task} needs {module}: pip install 'encouraging[{extra}]'" for module in modules
            if importlib.util.find_spec(module) is None]


def config_problems(cfg: Config) -> list[str]:
    """One message per problem in ``cfg`` (empty when it can run)."""
    from .criteria import build_criterion, build_schedule, canonical
    from .optim import OPTIMIZERS, SCHEDULES
    from .task import DataStats, build_task

    problems = []
    for key, ok, allowed in _RANGES:
        value = _get(cfg, key)
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            problems.append(f"{key} must be {allowed}, got {value!r}")
    if cfg.optim.name not in OPTIMIZERS:
        problems.append(f"optim.name must be one of {OPTIMIZERS}, got {cfg.optim.name!r}")
    if cfg.optim.schedule not in SCHEDULES:
        problems.append(f"optim.schedule must be one of {SCHEDULES}, got {cfg.optim.schedule!r}")
    if cfg.optim.schedule == "inverse_sqrt" and cfg.optim.warmup_epochs <= 0:
        problems.append("optim.schedule=inverse_sqrt needs optim.warmup_epochs > 0 (its peak)")
    problems += tracker_problems(cfg.train.trackers)
    device = cfg.train.device
    if device not in ("auto", "cpu", "mps") and not (device == "cuda" or device.startswith("cuda:")):
        problems.append(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    try:  # the loss module's own checks (log_end in [0, 1], scales >= 0, ...) and its schedule
        loss = canonical(cfg.loss)
        build_criterion(loss, DataStats(num_classes=2, class_counts=(1, 1)))
        build_schedule(loss)
    except (ValueError, TypeError) as error:
        problems.append(f"loss {cfg.loss.name!r}: {error}")
    try:
        problems += build_task(cfg).check()
    except ValueError as error:
        problems.append(str(error))
    return problems
