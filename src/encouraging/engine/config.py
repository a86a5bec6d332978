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
class DataConfig:
    dataset: str = "mnist"  # registry name (`encouraging list datasets`) or an array folder
    root: str | None = None  # data root; default: $ENCOURAGING_DATA, then the user cache dir
    download: bool = False  # fetch through torchvision when the data is not found locally
    test_set: str = "default"  # dataset-specific choice (CIFAR-10: default = JPEG 10k, exact1000)
    train_subset: int = 0  # keep this many training examples (0 = all), a fixed random subset
    test_subset: int = 0  # keep this many test examples (0 = all)
    batch_size: int = 128  # per process; the global batch is batch_size x world size
    eval_batch_size: int = 1000
    shuffle: bool = True  # the paper's adversarial MNIST recipe trains without shuffling
    augment: str = "none"  # none | flip | crop | flip_crop (batched, on device)
    crop_padding: int = 4  # pixels of padding for random crops
    normalize: bool = True  # per-channel mean/std; false keeps pixels in [0, 1] (adversarial recipes)
    image_size: int = 0  # resize batches to this side (0 = native), e.g. 224 for the paper's CIFAR recipe
    in_memory: bool = True  # keep tensors on the device (folders always use a DataLoader)
    num_workers: int = 2  # DataLoader workers (folder datasets)


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


@dataclass
class LossConfig:
    name: str = "ce"  # ce | ce_ls | el | el_ls | poly1 | focal | hfl (`encouraging list losses`)
    log_end: float = 0.75
    bonus_scale: float = 1.0
    bonus: str = "log"
    gamma: float = 2.0  # exponent of the power bonus
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
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


@dataclass
class Config:
    name: str = "unnamed"  # recipe name: runs of one recipe are compared in reports
    task: str = "image"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Fields that say where or how fast things run, not what is computed: left out of the recipe hash.
UNHASHED = {"train.seed", "train.device", "train.threads", "data.root", "data.download", "data.num_workers",
            "data.in_memory", "data.eval_batch_size"}


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested dict (a YAML file's content); unknown keys raise with the valid ones."""
    cfg = copy.deepcopy(base) if base is not None else Config()
    for key, value in _flatten(data).items():
        set_value(cfg, key, value)
    return cfg


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
    """Apply ``--section.key=value`` (or ``section.key=value``) strings; values are parsed as YAML scalars."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ValueError(f"override must look like --section.key=value, got {item!r}")
        key, raw = text.split("=", 1)
        set_value(cfg, key.strip(), yaml.safe_load(raw) if raw != "" else "", raw=raw)
    return cfg


def set_value(cfg: Config, key: str, value: Any, raw: str | None = None) -> None:
    """Set a dotted key, checking that it exists and that the value has the field's type.

    ``raw`` is the override's text: a string field takes it as written (YAML would read ``off`` as False).
    """
    *path, name = key.split(".")
    target: Any = cfg
    for i, part in enumerate(path):
        valid = [f.name for f in dataclasses.fields(target)]
        if part not in valid or not dataclasses.is_dataclass(getattr(target, part)):
            raise ValueError(f"unknown config section {'.'.join(path[:i + 1])!r}; valid: {_sections(target)}")
        target = getattr(target, part)
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields or dataclasses.is_dataclass(getattr(target, name)):
        prefix = ".".join(path)
        valid = sorted(f"{prefix}.{n}" if prefix else n for n in fields)
        raise ValueError(f"unknown config key {key!r}; valid keys here: {valid}")
    hint = typing.get_type_hints(type(target))[name]
    takes_text = str in (hint, *typing.get_args(hint))
    if raw is not None and takes_text and not (value is None and raw.strip() in ("null", "~")):
        value = raw
    setattr(target, name, _coerce(key, value, hint))


def config_hash(cfg: Config) -> str:
    """A short stable hash of everything that determines the result (seed and locations excluded).

    ``train.adversarial`` enters only when it is on, so recipes without it keep the hashes they had before the
    section existed (their finished runs stay finished).
    """
    flat = {k: v for k, v in _flatten(to_dict(cfg)).items() if k not in UNHASHED}
    if cfg.train.adversarial.attack == "none":
        flat = {k: v for k, v in flat.items() if not k.startswith("train.adversarial.")}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:12]


def save_config(cfg: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        # a dict-valued field (model.kwargs) is a value, not a section
        if isinstance(value, dict) and dotted not in {"model.kwargs"}:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


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
