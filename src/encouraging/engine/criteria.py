"""The loss registry: each training loss of a grid (``ce``, ``el``, ``poly1``, ...) is one :class:`LossPreset`.

A preset names the :class:`LossConfig` fields it reads, builds its module from the config and the training-set
statistics (:class:`~encouraging.engine.task.DataStats`: class counts for LDAM, logit adjustment, class-balanced
weights), and labels itself for tables. A loss spec on the command line is a preset name with optional field
overrides, e.g. ``el(log_end=1.0)``; it resolves to a canonical config (fields the preset does not use reset to
their defaults), so equal losses get equal recipe hashes. The runner stores each run's label and
:func:`loss_params` with it; reports display those and re-derive nothing.

Adding a loss is one :func:`register_loss` call (fields it needs that :class:`LossConfig` lacks are added there,
with a default that switches them off, so no existing recipe is re-hashed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from torch import nn

from ..losses import (
    AdjustedEncouragingLoss,
    BonusSchedule,
    EncouragingLoss,
    FocalLoss,
    HaltedFocalLoss,
    MirrorLoss,
    PolyLoss,
    class_balanced_weights,
    ldam_margins,
    logit_offsets,
)
from ..losses.registry import Registry
from .config import LossConfig

BONUS_FIELDS = ("log_end", "bonus_scale", "bonus", "gamma", "bonus_start", "bonus_floor", "schedule",
                "schedule_length", "defer", "schedule_target")


@dataclass(frozen=True)
class LossPreset:
    """One named training loss.

    Args:
        name: the registry name used in configs and specs.
        description: one line for ``encouraging list losses``.
        uses: the :class:`LossConfig` fields it reads; the others are reset to their defaults.
        build: ``(cfg, stats) -> nn.Module`` taking ``(logits, target)``. A run passes its training split's
            statistics; the up-front config check (``engine.checks``) builds once with placeholder statistics
            (2 classes) to run the module's own argument checks; ``stats`` is None outside a run.
        label: ``cfg -> str``, the row label of tables (``EL (LE=0.75)``).
        defaults: values it gives used fields left at :class:`LossConfig`'s default (``ce_ls``: smoothing 0.1).
        shown: used fields always recorded with a run; the others are recorded when switched on (not default).
        scheduled: whether the bonus schedule (``defer``, ramps of ``bonus_scale`` or ``log_end``) applies.
    """

    name: str
    description: str
    uses: tuple[str, ...]
    build: Callable[[LossConfig, Any], nn.Module]
    label: Callable[[LossConfig], str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    shown: tuple[str, ...] = ()
    scheduled: bool = False


_LOSSES: Registry[LossPreset] = Registry("loss")


def register_loss(preset: LossPreset) -> LossPreset:
    unknown = sorted(set(preset.uses) - {f.name for f in dataclasses.fields(LossConfig)})
    if unknown:
        raise ValueError(f"loss {preset.name!r} uses fields LossConfig does not have: {unknown}")
    return _LOSSES.register(preset.name, preset)


def list_losses(filter: str = "*") -> list[str]:
    return _LOSSES.names(filter)


def get_loss(name: str) -> LossPreset:
    return _LOSSES.get(name)


# --- specs and canonical configs -----------------------------------------------------------------------------------


def parse_loss_spec(spec: str, base: LossConfig | None = None) -> LossConfig:
    """``name`` or ``name(key=value, ...)`` -> a canonical LossConfig (base supplies the other fields)."""
    spec = spec.strip()
    name, _, rest = spec.partition("(")
    cfg = dataclasses.replace(base or LossConfig(), name=name.strip())
    if rest:
        if not rest.endswith(")"):
            raise ValueError(f"loss spec must look like name(key=value, ...), got {spec!r}")
        valid = sorted(f.name for f in dataclasses.fields(LossConfig) if f.name != "name")
        for item in filter(None, (s.strip() for s in rest[:-1].split(","))):
            key, sep, raw = item.partition("=")
            if not sep or key.strip() not in valid:
                raise ValueError(f"bad loss option {item!r} in {spec!r}; valid keys: {valid}")
            field_type = type(getattr(cfg, key.strip()))
            try:
                value = field_type(yaml.safe_load(raw))
            except (TypeError, ValueError, yaml.YAMLError):
                raise ValueError(f"bad loss option {item!r} in {spec!r}: {key.strip()} takes a "
                                 f"{field_type.__name__}") from None
            cfg = dataclasses.replace(cfg, **{key.strip(): value})
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
    """Reset the fields the preset does not use; fill the preset's own defaults."""
    preset = get_loss(cfg.name)
    defaults = LossConfig()
    values = {}
    for f in dataclasses.fields(LossConfig):
        if f.name == "name":
            continue
        value = getattr(cfg, f.name) if f.name in preset.uses else getattr(defaults, f.name)
        if f.name in preset.defaults and value == getattr(defaults, f.name):
            value = preset.defaults[f.name]
        values[f.name] = value
    return LossConfig(name=cfg.name, **values)


def loss_label(cfg: LossConfig) -> str:
    """A short human label, e.g. ``EL (LE=0.75)`` or ``CE+LS (0.1)``."""
    cfg = canonical(cfg)
    return get_loss(cfg.name).label(cfg)


def loss_params(cfg: LossConfig) -> dict[str, Any]:
    """What a run records of its loss: the preset's ``shown`` fields and its other used fields that are on."""
    cfg = canonical(cfg)
    preset, defaults = get_loss(cfg.name), LossConfig()
    return {k: getattr(cfg, k) for k in preset.uses
            if k in preset.shown or getattr(cfg, k) != getattr(defaults, k)}


def build_criterion(cfg: LossConfig, stats: Any = None) -> nn.Module:
    """The training loss as a module (``stats``: the training set's :class:`DataStats`, for presets needing it)."""
    cfg = canonical(cfg)
    return get_loss(cfg.name).build(cfg, stats)


@dataclass(frozen=True)
class DeferredReweighting:
    """DRW (Cao et al. 2019): the criterion's class weights are ``deferred_weight`` (a buffer the preset built)
    from epoch ``start`` on, and none before; a bonus with ``bonus_weight="same"`` switches with them (the paper's
    DRW + bonus row). Stateless, like :class:`~encouraging.losses.BonusSchedule`, so a resumed run switches at
    the same epoch."""

    start: float

    def apply(self, criterion: nn.Module, epoch: float) -> None:
        criterion.weight = criterion.deferred_weight if epoch >= self.start else None


@dataclass(frozen=True)
class Schedules:
    """Several schedules applied in turn."""

    parts: tuple[Any, ...]

    def apply(self, criterion: nn.Module, epoch: float) -> None:
        for part in self.parts:
            part.apply(criterion, epoch)


def build_schedule(cfg: LossConfig) -> Any:
    """What changes the criterion during training: the bonus schedule of a scheduled preset, deferred
    re-weighting, both (:class:`Schedules`), or None."""
    cfg = canonical(cfg)
    parts: list[Any] = []
    if get_loss(cfg.name).scheduled and not (cfg.schedule == "constant" and cfg.defer == 0):
        base = cfg.log_end if cfg.schedule_target == "log_end" else cfg.bonus_scale
        parts.append(BonusSchedule(cfg.schedule, length=cfg.schedule_length, defer=cfg.defer,
                                   target=cfg.schedule_target, base=base))
    if "drw_from" in get_loss(cfg.name).uses and cfg.drw_from > 0:
        parts.append(DeferredReweighting(cfg.drw_from))
    return None if not parts else parts[0] if len(parts) == 1 else Schedules(tuple(parts))


# --- the presets ---------------------------------------------------------------------------------------------------


def _smoothing(cfg: LossConfig) -> str:
    return f", LS={cfg.label_smoothing:g}" if cfg.label_smoothing else ""


def _el_settings(cfg: LossConfig) -> str:
    """``LE=0.75, rho=0.5, ...``: the bonus settings a label shows."""
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
    return extra


def _el_label(cfg: LossConfig) -> str:
    return f"EL ({_el_settings(cfg)}{_smoothing(cfg)})"


def _el(cfg: LossConfig, stats: Any) -> nn.Module:
    return EncouragingLoss(label_smoothing=cfg.label_smoothing, log_end=cfg.log_end, bonus_scale=cfg.bonus_scale,
                           bonus=cfg.bonus, gamma=cfg.gamma, bonus_start=cfg.bonus_start, bonus_floor=cfg.bonus_floor)


def _ce(cfg: LossConfig, stats: Any) -> nn.Module:
    # EncouragingLoss with the bonus off is F.cross_entropy (tested to float tolerance): one code path for both
    return EncouragingLoss(label_smoothing=cfg.label_smoothing, bonus_scale=0.0)


def _counts(cfg: LossConfig, stats: Any) -> tuple[int, ...]:
    if stats is None or stats.class_counts is None:
        raise ValueError(f"loss {cfg.name!r} needs the training set's class counts (a task's DataStats)")
    return stats.class_counts


def _bonus(cfg: LossConfig, on: bool) -> dict[str, Any]:
    """EncouragingLoss's bonus arguments: the config's, or the bonus off (the method alone)."""
    if not on:
        return {"bonus_scale": 0.0}
    return {"log_end": cfg.log_end, "bonus_scale": cfg.bonus_scale, "bonus": cfg.bonus, "gamma": cfg.gamma,
            "bonus_start": cfg.bonus_start, "bonus_floor": cfg.bonus_floor}


def _long_tail(kind: str, on: bool) -> Callable[[LossConfig, Any], nn.Module]:
    """The builder of a long-tail method (``cb``, ``ldam``, ``la``, ``bsm``) with or without the bonus."""

    def build(cfg: LossConfig, stats: Any) -> nn.Module:
        counts = _counts(cfg, stats)
        # cb and ldam: class-balanced weights, from the start (cb) or from drw_from on (DRW, LDAM-DRW); the bonus
        # is weighted by the same weights from the same epoch, as in the paper's DRW row
        weights = class_balanced_weights(counts, cfg.cb_beta) if kind == "cb" or cfg.drw_from > 0 else None
        deferred = weights is not None and cfg.drw_from > 0
        weighting = {"weight": None if deferred else weights, "bonus_weight": "same"}
        if kind == "cb":
            loss = EncouragingLoss(**weighting, **_bonus(cfg, on))
        elif kind == "ldam":
            loss = AdjustedEncouragingLoss(margin=ldam_margins(counts, cfg.ldam_margin), scale=cfg.ldam_scale,
                                           **weighting, **_bonus(cfg, on))
        else:
            tau = cfg.la_tau if kind == "la" else 1.0
            loss = AdjustedEncouragingLoss(offset=logit_offsets(counts, tau), **_bonus(cfg, on))
        if deferred:  # DeferredReweighting swaps it in; a buffer, so it follows the criterion to the device
            loss.register_buffer("deferred_weight", weights)
        return loss

    return build


def _drw(cfg: LossConfig) -> str:
    return f", DRW from epoch {cfg.drw_from:g}" if cfg.drw_from else ""


def _long_tail_label(name: str, settings: Callable[[LossConfig], str]) -> Callable[[LossConfig], str]:
    def label(cfg: LossConfig) -> str:
        own = settings(cfg)
        method = f"{name} ({own})" if own else name
        return f"{method} + EL ({_el_settings(cfg)})" if get_loss(cfg.name).scheduled else method

    return label


def _mirror(base: str, link: str, on: bool) -> Callable[[LossConfig, Any], nn.Module]:
    """The builder of an MSE / MAE preset, with (``on``) or without the mirror bonus."""

    def build(cfg: LossConfig, stats: Any) -> nn.Module:
        if on and cfg.schedule_target != "bonus_scale":
            raise ValueError(f"the mirror bonus has no log_end to schedule: schedule_target must be 'bonus_scale', "
                             f"got {cfg.schedule_target!r}")
        return MirrorLoss(base=base, link=link, bonus_scale=cfg.bonus_scale if on else 0.0, gamma=cfg.gamma)

    return build


def _mirror_label(base: str, link: str, on: bool) -> Callable[[LossConfig], str]:
    def label(cfg: LossConfig) -> str:
        name = f"{base.upper()} ({link})"
        if not on:
            return name
        extra = f"gamma={cfg.gamma:g}"
        if cfg.bonus_scale != 1.0:
            extra += f", rho={cfg.bonus_scale:g}"
        if cfg.defer or cfg.schedule != "constant":
            extra += f", {cfg.schedule} defer={cfg.defer:g}"
        return f"{name} + mirror bonus ({extra})"

    return label


_EL_USES = BONUS_FIELDS + ("label_smoothing",)
# The mirror bonus's fields: its scale, its exponent and the schedule of its scale (it has no log_end).
_MIRROR_USES = ("bonus_scale", "gamma", "schedule", "schedule_length", "defer", "schedule_target")
_LS = {"label_smoothing": 0.1}

for _preset in (
    LossPreset("ce", "cross-entropy", (), _ce, lambda c: "CE"),
    LossPreset("ce_ls", "label-smoothed cross-entropy (smoothing 0.1 unless set)", ("label_smoothing",), _ce,
               lambda c: f"CE+LS ({c.label_smoothing:g})", defaults=_LS, shown=("label_smoothing",)),
    LossPreset("el", "encouraging loss", _EL_USES, _el, _el_label, shown=("log_end",), scheduled=True),
    LossPreset("el_ls", "encouraging loss with label smoothing (0.1 unless set)", _EL_USES, _el, _el_label,
               defaults=_LS, shown=("log_end", "label_smoothing"), scheduled=True),
    LossPreset("poly1", "Poly-1 (cross-entropy + epsilon (1 - p))", ("epsilon", "label_smoothing"),
               lambda c, s: PolyLoss(label_smoothing=c.label_smoothing, epsilon=c.epsilon),
               lambda c: f"Poly-1 (eps={c.epsilon:g}{_smoothing(c)})", shown=("epsilon",)),
    LossPreset("focal", "softmax focal loss", ("focal_gamma",), lambda c, s: FocalLoss(gamma=c.focal_gamma),
               lambda c: f"Focal (gamma={c.focal_gamma:g})", shown=("focal_gamma",)),
    LossPreset("hfl", "halted focal loss", ("focal_gamma", "halt"),
               lambda c, s: HaltedFocalLoss(gamma=c.focal_gamma, halt=c.halt),
               lambda c: f"HFL (gamma={c.focal_gamma:g}, halt={c.halt:g})", shown=("focal_gamma", "halt")),
    *(
        LossPreset(name + ("_el" if on else ""), description + (" + the bonus" if on else ""),
                   own + (BONUS_FIELDS if on else ()), _long_tail(name, on), _long_tail_label(title, settings),
                   shown=tuple(f for f in own if f != "drw_from" and (f != "cb_beta" or name == "cb"))
                   + (("log_end",) if on else ()), scheduled=on)
        for name, title, own, settings, description in (
            ("cb", "CB", ("cb_beta", "drw_from"), lambda c: f"beta={c.cb_beta:g}" + _drw(c),
             "class-balanced re-weighting by effective number (weights the bonus too); drw_from: DRW"),
            ("ldam", "LDAM", ("ldam_margin", "ldam_scale", "cb_beta", "drw_from"),
             lambda c: f"m={c.ldam_margin:g}, s={c.ldam_scale:g}" + (f", beta={c.cb_beta:g}" + _drw(c)
                                                                     if c.drw_from else ""),
             "LDAM: label-distribution-aware margins; drw_from: LDAM-DRW"),
            ("la", "LA", ("la_tau",), lambda c: f"tau={c.la_tau:g}", "logit adjustment, loss form"),
            ("bsm", "BSM", (), lambda c: "", "balanced softmax"),
        )
        for on in (False, True)
    ),
    # paper.md §2.6 / §5.9: mse, mse_el (+ the mirror bonus), mse_sigmoid, mse_sigmoid_el, mae, ...
    *(
        LossPreset(base + ("" if link == "softmax" else f"_{link}") + ("_el" if on else ""),
                   f"{base.upper()} of {link} probabilities vs one-hot targets"
                   + (" + the mirror bonus -rho [y p^gamma + (1-y)(1-p)^gamma]" if on else ""),
                   _MIRROR_USES if on else (), _mirror(base, link, on), _mirror_label(base, link, on),
                   shown=("gamma",) if on else (), scheduled=on)
        for base in ("mse", "mae")
        for link in ("softmax", "sigmoid")
        for on in (False, True)
    ),
):
    register_loss(_preset)
