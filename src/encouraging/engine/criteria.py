"""Named training losses (``ce``, ``ce_ls``, ``el``, ...) built from a :class:`LossConfig`.

A loss spec on the command line is a preset name with optional field overrides, e.g. ``el(log_end=1.0)``. Each
preset resolves to a canonical :class:`LossConfig` (fields it does not use reset to their defaults), so equal
losses get equal recipe hashes, and to a short label for tables (``EL (LE=0.75)``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import yaml
from torch import nn

from ..losses import BonusSchedule, EncouragingLoss, FocalLoss, HaltedFocalLoss, PolyLoss
from .config import LossConfig

_BONUS_FIELDS = ("log_end", "bonus_scale", "bonus", "gamma", "bonus_start", "bonus_floor", "schedule",
                 "schedule_length", "defer", "schedule_target")
DEFAULT_SMOOTHING = 0.1


@dataclass(frozen=True)
class LossPreset:
    name: str
    description: str
    uses: tuple[str, ...]  # LossConfig fields that matter for this preset


PRESETS = {
    p.name: p
    for p in (
        LossPreset("ce", "cross-entropy", ()),
        LossPreset("ce_ls", "label-smoothed cross-entropy", ("label_smoothing",)),
        LossPreset("el", "encouraging loss", _BONUS_FIELDS + ("label_smoothing",)),
        LossPreset("el_ls", "encouraging loss with label smoothing", _BONUS_FIELDS + ("label_smoothing",)),
        LossPreset("poly1", "Poly-1 (cross-entropy + epsilon (1 - p))", ("epsilon", "label_smoothing")),
        LossPreset("focal", "softmax focal loss", ("focal_gamma",)),
        LossPreset("hfl", "halted focal loss", ("focal_gamma", "halt")),
    )
}


def list_losses() -> list[str]:
    return sorted(PRESETS)


def parse_loss_spec(spec: str, base: LossConfig | None = None) -> LossConfig:
    """``name`` or ``name(key=value, ...)`` -> a canonical LossConfig (base supplies the other fields)."""
    spec = spec.strip()
    name, _, rest = spec.partition("(")
    cfg = dataclasses.replace(base or LossConfig(), name=name.strip())
    if rest:
        if not rest.endswith(")"):
            raise ValueError(f"loss spec must look like name(key=value, ...), got {spec!r}")
        for item in filter(None, (s.strip() for s in rest[:-1].split(","))):
            key, sep, raw = item.partition("=")
            if not sep or key.strip() not in {f.name for f in dataclasses.fields(LossConfig)} - {"name"}:
                valid = sorted(f.name for f in dataclasses.fields(LossConfig) if f.name != "name")
                raise ValueError(f"bad loss option {item!r} in {spec!r}; valid keys: {valid}")
            value = yaml.safe_load(raw)
            field_type = type(getattr(cfg, key.strip()))
            cfg = dataclasses.replace(cfg, **{key.strip(): field_type(value)})
    return canonical(cfg)


def split_loss_specs(text: str) -> list[str]:
    """Split ``ce,el(log_end=1.0, bonus_scale=0.5),poly1`` on the commas outside parentheses."""
    specs, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            specs.append(current)
            current = ""
        else:
            current += char
    specs.append(current)
    return [s.strip() for s in specs if s.strip()]


def canonical(cfg: LossConfig) -> LossConfig:
    """Reset the fields the preset does not use; give the smoothed presets their default smoothing."""
    if cfg.name not in PRESETS:
        raise ValueError(f"loss must be one of {list_losses()}, got {cfg.name!r}")
    defaults = LossConfig()
    used = PRESETS[cfg.name].uses
    values = {f.name: getattr(cfg, f.name) if f.name in used else getattr(defaults, f.name)
              for f in dataclasses.fields(LossConfig) if f.name != "name"}
    if cfg.name in ("ce_ls", "el_ls") and values["label_smoothing"] == 0.0:
        values["label_smoothing"] = DEFAULT_SMOOTHING
    return LossConfig(name=cfg.name, **values)


def loss_label(cfg: LossConfig) -> str:
    """A short human label, e.g. ``EL (LE=0.75)`` or ``CE+LS (0.1)``."""
    cfg = canonical(cfg)
    ls = f", LS={cfg.label_smoothing:g}" if cfg.label_smoothing else ""
    if cfg.name in ("el", "el_ls"):
        extra = f"LE={cfg.log_end:g}" if cfg.bonus == "log" else f"{cfg.bonus}"
        if cfg.bonus == "power":
            extra += f" gamma={cfg.gamma:g}"
        if cfg.bonus_scale != 1.0:
            extra += f", rho={cfg.bonus_scale:g}"
        if cfg.bonus_start:
            extra += f", start={cfg.bonus_start:g}"
        if cfg.bonus_floor:
            extra += f", floor={cfg.bonus_floor:g}"
        if cfg.defer or cfg.schedule != "constant":
            extra += f", {cfg.schedule} defer={cfg.defer:g}"
        return f"EL ({extra}{ls})"
    return {
        "ce": "CE",
        "ce_ls": f"CE+LS ({cfg.label_smoothing:g})",
        "poly1": f"Poly-1 (eps={cfg.epsilon:g}{ls})",
        "focal": f"Focal (gamma={cfg.focal_gamma:g})",
        "hfl": f"HFL (gamma={cfg.focal_gamma:g}, halt={cfg.halt:g})",
    }[cfg.name]


def build_criterion(cfg: LossConfig) -> nn.Module:
    """The training loss as a module; CE presets are EncouragingLoss with the bonus off (same computation)."""
    cfg = canonical(cfg)
    if cfg.name in ("ce", "ce_ls"):
        return EncouragingLoss(label_smoothing=cfg.label_smoothing, bonus_scale=0.0)
    if cfg.name in ("el", "el_ls"):
        return EncouragingLoss(label_smoothing=cfg.label_smoothing, log_end=cfg.log_end, bonus_scale=cfg.bonus_scale,
                               bonus=cfg.bonus, gamma=cfg.gamma, bonus_start=cfg.bonus_start,
                               bonus_floor=cfg.bonus_floor)
    if cfg.name == "poly1":
        return PolyLoss(label_smoothing=cfg.label_smoothing, epsilon=cfg.epsilon)
    if cfg.name == "focal":
        return FocalLoss(gamma=cfg.focal_gamma)
    return HaltedFocalLoss(gamma=cfg.focal_gamma, halt=cfg.halt)


def build_schedule(cfg: LossConfig) -> BonusSchedule | None:
    """The bonus schedule of an EL preset, or None when the bonus is constant from the start."""
    cfg = canonical(cfg)
    if cfg.name not in ("el", "el_ls") or (cfg.schedule == "constant" and cfg.defer == 0):
        return None
    base = cfg.log_end if cfg.schedule_target == "log_end" else cfg.bonus_scale
    return BonusSchedule(cfg.schedule, length=cfg.schedule_length, defer=cfg.defer, target=cfg.schedule_target,
                         base=base)
