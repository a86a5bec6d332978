"""Experiment configuration: nested dataclasses, YAML files, typed ``--section.key=value`` overrides.

A config file sets the defaults below; overrides must keep each field's type; an unknown key raises with the
valid names (the rules of nanoGPT's configurator, without its ``exec``). The resolved config is saved with every
run, and :func:`config_hash` identifies a recipe for the results database (the seed and where things are
stored are not part of it).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    name: str = "small_cnn"  # registry name (`encouraging list models`) or timm:<name>
    kwargs: dict = field(default_factory=dict)  # passed to the model's constructor


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | adamw | rmsprop
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    schedule: str = "cosine"  # constant | multistep | cosine | exp_step
    milestones: list = field(default_factory=list)  # epochs at which multistep multiplies by gamma
    gamma: float = 0.1  # multistep / exp_step factor
    step_epochs: float = 1.0  # exp_step: multiply by gamma every this many epochs
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs (fractional allowed)
    grad_clip: float = 0.0  # max global gradient norm (0 = no clipping)
    accumulate: int = 1  # batches whose gradients make one optimizer step (fairseq's --update-freq)


@dataclass
class LossConfig:
    name: str = "ce"  # ce | ce_ls | el | el_ls | poly1 | focal | hfl | mse_el | ... (`encouraging list losses`)
    log_end: float = 0.75
    bonus_scale: float = 1.0
    bonus: str = "log"
    gamma: float = 2.0  # exponent of the power bonus and of the mirror bonus (mse_el, mae_el, ...)
    bonus_start: float = 0.0
    bonus_floor: float = 0.0  # the paper's clamp log(max(1 - p, floor)); its code uses 1e-5 (0 = exact)
    label_smoothing: float = 0.0  # ce_ls / el_ls use 0.1 when this is 0
    epsilon: float = 1.0  # Poly-1
    focal_gamma: float = 2.0  # focal / halted focal
    halt: float = 0.5  # halted focal
    schedule: str = "constant"  # BonusSchedule kind
    schedule_length: float = 0.0  # epochs
    defer: float = 0.0  # epochs of plain CE before the bonus starts
    schedule_target: str = "bonus_scale"  # or log_end
    cb_beta: float = 0.9999  # cb / cb_el: effective-number class weights (Cui et al. 2019)
    drw_from: float = 0.0  # cb / ldam (and _el): class-balanced weights only from this epoch on (DRW; 0 = cb from
    #                        the start, ldam never)
    ldam_margin: float = 0.5  # ldam / ldam_el: the largest class margin (Cao et al. 2019)
    ldam_scale: float = 30.0  # ldam / ldam_el: the logit scale s
    la_tau: float = 1.0  # la / la_el: logit adjustment's tau (Menon et al. 2021)


@dataclass
class AdversarialConfig:
    """Adversarial training (engine/adversarial.py): each training batch is replaced by attacked examples."""

    attack: str = "none"  # none | fgsm | pgd (L-inf) | pgd_l2
    eps: float = 0.3  # budget in [0, 1] pixel units (L-inf or L2 by the attack)
    alpha: float = 0.1  # step size (pgd, pgd_l2); the paper's adversarial training uses 0.1 with 7 steps
    steps: int = 7
    random_start: bool = True


@dataclass
class TrainConfig:
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: str = "auto"  # auto (bf16 autocast on CUDA) | bf16 | fp32
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic algorithms (slower on GPU)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    patience: int = 0  # early stopping: stop after this many epochs without a better validation metric (0 = off)
    select_on: str = ""  # the validation metric selection and patience use: "" (the task's primary) | loss
    average_last: int = 0  # also report the test metric of the mean weights of the last N epochs (0 = off)
    on_diverge: str = "stop"  # a non-finite training loss: stop (the run is stored as diverged) | continue
    trackers: list = field(default_factory=list)  # mirrors of the per-epoch metrics: tensorboard, wandb (never hashed)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


@dataclass
class Config:
    name: str = "unnamed"  # recipe name: runs of one recipe are compared in reports
    task: str = "image"  # registered task (`encouraging list tasks`); it owns the `data` and `model` sections
    data: Any = None  # the task's data section (its `data_config`); None: the task's defaults
    model: Any = None  # the task's model section (its `model_config`)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        data_cls, model_cls = task_sections(self.task)
        self.data = _section(self.data, data_cls, "data")
        self.model = _section(self.model, model_cls, "model")


# --- task sections -------------------------------------------------------------------------------------------------
# Each task registers the dataclasses of its `data` and `model` sections (engine.task.register_task does it), so
# the engine checks every task's fields without knowing any task.

_SECTIONS: dict[str, tuple[type, type]] = {}


def register_sections(task: str, data: type, model: type = ModelConfig) -> None:
    for cls in (data, model):
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"task {task!r}: config sections must be dataclasses, got {cls!r}")
    _SECTIONS[task] = (data, model)


def task_sections(task: str) -> tuple[type, type]:
    try:
        return _SECTIONS[task]
    except KeyError:
        hint = "" if _SECTIONS else " (no task is registered: call encouraging.load_plugins() first)"
        raise ValueError(f"config key 'task' must be one of {sorted(_SECTIONS)}, got {task!r}{hint}") from None


def _section(value: Any, cls: type, name: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):  # dataclasses.replace() and asdict() round trips
        section = cls()
        for key, item in value.items():
            set_value(section, key, item, prefix=name)
        return section
    raise TypeError(f"config section {name!r} of this task must be {cls.__name__}, got {type(value).__name__}")


# --- the recipe hash -----------------------------------------------------------------------------------------------

# Fields that say where or how fast things run, or where the metrics are mirrored, not what is computed, never enter
# the hash. A task marks its own with ``field(..., metadata={"hash": False})`` (data roots, worker counts, evaluation
# batch sizes).
UNHASHED = {"train.seed", "train.device", "train.threads", "train.trackers"}

# The fields of hash version 1: they always enter the hash, so recipes hashed then keep their hashes (and their
# finished runs stay finished). Every field added since enters only when its value differs from its default, so a
# new field never re-hashes an existing recipe. ``train.adversarial.*`` enters only when an attack is on.
HASH_V1_KEYS = frozenset("""
    name task data.dataset data.test_set data.train_subset data.test_subset data.batch_size data.shuffle
    data.augment data.crop_padding data.normalize data.image_size model.name model.kwargs optim.name optim.lr
    optim.momentum optim.nesterov optim.weight_decay optim.betas optim.schedule optim.milestones optim.gamma
    optim.step_epochs optim.warmup_epochs optim.grad_clip loss.name loss.log_end loss.bonus_scale loss.bonus
    loss.gamma loss.bonus_start loss.bonus_floor loss.label_smoothing loss.epsilon loss.focal_gamma loss.halt
    loss.schedule loss.schedule_length loss.defer loss.schedule_target train.epochs train.amp train.compile
    train.deterministic train.adversarial.attack train.adversarial.eps train.adversarial.alpha
    train.adversarial.steps train.adversarial.random_start
""".split())


def config_hash(cfg: Config) -> str:
    """A short stable hash of everything that determines the result (seed and locations excluded).

    It covers the fields of :data:`HASH_V1_KEYS` and every other field whose value is not its default.
    """
    defaults = dict(_leaves(Config(task=cfg.task)))
    adversarial = cfg.train.adversarial.attack != "none"
    flat = {}
    for key, value in _leaves(cfg, hashed_only=True):
        if key.startswith("train.adversarial.") and not adversarial:
            continue
        if key in HASH_V1_KEYS or value != defaults.get(key):
            flat[key] = value
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --- reading and writing -------------------------------------------------------------------------------------------


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested dict (a YAML file's content); unknown keys raise with the valid ones.

    ``task`` is read first: it decides which fields the ``data`` and ``model`` sections have.
    """
    cfg = copy.deepcopy(base) if base is not None else Config(task=data.get("task", "image"))
    if base is not None and "task" in data:
        set_value(cfg, "task", data["task"])
    _set_nested(cfg, {k: v for k, v in data.items() if k != "task"}, "")
    return cfg


def _set_nested(target: Any, data: dict[str, Any], prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        current = getattr(target, key, None) if isinstance(key, str) else None
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            _set_nested(current, value, dotted + ".")
        else:
            set_value(target, key, value, prefix=prefix.rstrip("."))


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply ``--key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must hold a mapping at the top level, got {type(data).__name__}")
    cfg = from_dict(data)
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--section.key=value`` (or ``section.key=value``) strings; values are parsed as YAML scalars.

    A ``--task=...`` override is applied first: the other keys are checked against that task's sections.
    """
    cfg = copy.deepcopy(cfg)
    parsed = []
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(f"override must look like --section.key=value, got {item!r}")
        key, raw = text.split("=", 1)
        parsed.append((key.strip(), raw))
    parsed.sort(key=lambda kv: kv[0] != "task")
    for key, raw in parsed:
        set_value(cfg, key, yaml.safe_load(raw) if raw != "" else "", raw=raw)
    return cfg


def set_value(cfg: Any, key: str, value: Any, raw: str | None = None, prefix: str = "") -> None:
    """Set a dotted key, checking that it exists and that the value has the field's type.

    ``raw`` is the override's text: a string field takes it as written (YAML would read ``off`` as False).
    Setting ``task`` gives the config that task's ``data`` and ``model`` sections (fields of the same name keep
    their values).
    """
    *path, name = key.split(".")
    target: Any = cfg
    for i, part in enumerate(path):
        valid = [f.name for f in dataclasses.fields(target)]
        if part not in valid or not dataclasses.is_dataclass(getattr(target, part)):
            where = ".".join(filter(None, [prefix, *path[:i + 1]]))
            raise ValueError(f"unknown config section {where!r}; valid: {_sections(target)}")
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)}
    full = ".".join(filter(None, [prefix, key]))
    if name not in fields or dataclasses.is_dataclass(getattr(target, name)):
        where = ".".join(filter(None, [prefix, *path]))
        valid = sorted(f"{where}.{n}" if where else n for n in fields)
        raise ValueError(f"unknown config key {full!r}; valid keys here: {valid}")
    hint = typing.get_type_hints(type(target))[name]
    takes_text = str in (hint, *typing.get_args(hint))
    if raw is not None and takes_text and not (value is None and raw.strip() in ("null", "~")):
        value = raw
    value = _coerce(full, value, hint)
    if isinstance(target, Config) and name == "task" and value != target.task:
        _switch_task(target, value)
        return
    setattr(target, name, value)


def _switch_task(cfg: Config, task: str) -> None:
    """Give ``cfg`` the sections of ``task``; values set away from the old section's defaults carry over where the
    new section has a field of that name (a task's defaults are never replaced by another task's)."""
    data_cls, model_cls = task_sections(task)
    cfg.task = task
    for section, cls in (("data", data_cls), ("model", model_cls)):
        old, new = getattr(cfg, section), cls()
        names, defaults = {f.name for f in dataclasses.fields(cls)}, type(old)()
        for f in dataclasses.fields(old):
            if f.name in names and getattr(old, f.name) != getattr(defaults, f.name):
                setattr(new, f.name, getattr(old, f.name))
        setattr(cfg, section, new)


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _leaves(obj: Any, prefix: str = "", hashed_only: bool = False):
    """``(dotted key, value)`` of every leaf field; dict-valued fields (``model.kwargs``) are values."""
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, key + ".", hashed_only)
        elif not hashed_only or (key not in UNHASHED and f.metadata.get("hash", True)):
            yield key, copy.deepcopy(value)


def _sections(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj) if dataclasses.is_dataclass(getattr(obj, f.name))]


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against a field's annotation; ints and numeric strings (``1e-5``) are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except TypeError:
                continue
        raise TypeError(f"config key {key!r} expects {hint}, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads an exponent without a dot (1e-5) as a string
            return float(value)
        except ValueError:
            pass
    expected = origin or hint
    if expected is float and isinstance(value, float):
        return value
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    if expected is list and isinstance(value, tuple):
        return list(value)
    raise TypeError(f"config key {key!r} expects {getattr(expected, '__name__', expected)}, got {value!r}")
