"""``EncouragingLoss``: the module form of :func:`encouraging_loss`, a drop-in for ``nn.CrossEntropyLoss``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import check_class_vector, check_range, check_reduction
from .functional import IMPLS, LossParts, bonus_params, encouraging_loss, encouraging_loss_parts, resolve_bonus_weight


class BonusOptions(nn.Module):
    """The reduction and bonus options of every encouraging-loss module, checked once and stored as plain
    attributes, so a :class:`~encouraging.losses.BonusSchedule` can change ``bonus_scale`` or ``log_end``."""

    def __init__(self, reduction: str, log_end: float, bonus_scale: float, bonus: str, gamma: float,
                 bonus_start: float, bonus_floor: float) -> None:
        super().__init__()
        check_reduction(reduction)
        bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor)
        self.reduction = reduction
        self.log_end = log_end
        self.bonus_scale = bonus_scale
        self.bonus = bonus
        self.gamma = gamma
        self.bonus_start = bonus_start
        self.bonus_floor = bonus_floor


class EncouragingOptions(BonusOptions):
    """The options :class:`EncouragingLoss` and :class:`~encouraging.losses.LinearEncouragingLoss` share: the
    bonus options, label smoothing and ignore_index; the class weights are a buffer named ``weight_name``, and a
    tensor ``bonus_weight`` is a buffer too."""

    def __init__(self, weight_name: str, weight: Tensor | None, ignore_index: int, reduction: str,
                 label_smoothing: float, log_end: float, bonus_scale: float, bonus: str, gamma: float,
                 bonus_start: float, bonus_weight: Tensor | str | None, bonus_floor: float) -> None:
        super().__init__(reduction, log_end, bonus_scale, bonus, gamma, bonus_start, bonus_floor)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        check_class_vector(weight_name, weight)
        self.register_buffer(weight_name, weight)
        resolve_bonus_weight(bonus_weight, weight)
        if isinstance(bonus_weight, Tensor):
            self.register_buffer("bonus_weight", bonus_weight)
        else:
            self.bonus_weight = bonus_weight
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def extra_repr(self) -> str:
        return (f"log_end={self.log_end}, bonus_scale={self.bonus_scale}, bonus={self.bonus!r}, "
                f"label_smoothing={self.label_smoothing}, reduction={self.reduction!r}")


class EncouragingLoss(EncouragingOptions):
    """Cross-entropy plus the bonus ``log(1 - p_y)``, linear past ``log_end``. Math and shapes:
    :func:`encouraging.losses.encouraging_loss`; arguments as there.

    ``bonus_scale`` and ``log_end`` are plain attributes, so a :class:`~encouraging.losses.BonusSchedule` can set
    them each epoch or step. With ``track_stats=True`` every call stores detached diagnostics in
    :attr:`last_stats`: the mean CE part, the mean bonus part (the "reward"), the mean target probability and the
    fraction of elements past ``log_end``. They never change the returned value; they need the op-by-op path, so
    a tracking module computes with ``impl='autograd'`` whatever ``impl`` says.

    Example:
        >>> criterion = EncouragingLoss(log_end=0.75)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        log_end: float = 0.75,
        bonus_scale: float = 1.0,
        bonus: str = "log",
        gamma: float = 2.0,
        bonus_start: float = 0.0,
        bonus_weight: Tensor | str | None = None,
        bonus_floor: float = 0.0,
        log_probs: bool = False,
        track_stats: bool = False,
        impl: str = "auto",
    ) -> None:
        super().__init__("weight", weight, ignore_index, reduction, label_smoothing, log_end, bonus_scale, bonus,
                         gamma, bonus_start, bonus_weight, bonus_floor)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.log_probs = log_probs
        self.track_stats = track_stats
        self.impl = impl
        self.last_stats: dict[str, Tensor] = {}

    def adjust(self, input: Tensor, target: Tensor) -> Tensor:
        """The logits the loss is taken of: ``input`` itself (subclasses adjust them, e.g. for class imbalance)."""
        return input

    def parts(self, input: Tensor, target: Tensor) -> LossParts:
        """The loss with its per-element CE part, bonus part and target probability."""
        return encouraging_loss_parts(
            self.adjust(input, target), target, self.weight, self.ignore_index, self.reduction, self.label_smoothing,
            log_end=self.log_end, bonus_scale=self.bonus_scale, bonus=self.bonus, gamma=self.gamma,
            bonus_start=self.bonus_start, bonus_weight=self.bonus_weight, bonus_floor=self.bonus_floor,
            log_probs=self.log_probs,
        )

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if not self.track_stats:
            return encouraging_loss(
                self.adjust(input, target), target, self.weight, self.ignore_index, self.reduction,
                self.label_smoothing,
                log_end=self.log_end, bonus_scale=self.bonus_scale, bonus=self.bonus, gamma=self.gamma,
                bonus_start=self.bonus_start, bonus_weight=self.bonus_weight, bonus_floor=self.bonus_floor,
                log_probs=self.log_probs, impl=self.impl)
        parts = self.parts(input, target)  # the per-element parts exist on the op-by-op path only
        self.last_stats = summarize(parts, self.log_end)
        return parts.loss


@torch.no_grad()
def summarize(parts: LossParts, log_end: float) -> dict[str, Tensor]:
    """Means over the non-ignored elements: ``ce``, ``bonus`` (reward), ``p_target``, ``frac_past_log_end``.

    Returned as 0-d tensors on the loss's device, so logging them costs no host sync until they are read.
    """
    valid = parts.valid
    count = valid.sum().clamp(min=1)

    def mean(x: Tensor) -> Tensor:
        return torch.where(valid, x.float(), 0.0).sum() / count

    return {
        "ce": mean(parts.ce),
        "bonus": mean(parts.bonus),
        "p_target": mean(parts.p_target),
        "frac_past_log_end": mean((parts.p_target > log_end).float()),
    }
