r"""The losses the paper compares EL with, with ``F.cross_entropy``'s API and target conventions.

* Poly-1 (Leng et al. 2022): :math:`-\log p_y + \epsilon (1 - p_y)`; with smoothing :math:`\epsilon(1 - p_t)`,
  :math:`p_t = \sum_k q_k p_k`. It is EL with the ``poly`` term, so it shares EL's implementation.
* Focal loss (Lin et al. 2017), softmax form: :math:`-(1 - p_y)^\gamma \log p_y`.
* Halted focal loss (paper.md §2.8): focal loss up to :math:`p_y = h` (``halt``, default 0.5), then
  cross-entropy shifted to meet it, :math:`-\log p_y - \beta` with
  :math:`\beta = -\log h + (1 - h)^\gamma \log h`, so the down-weighting of easy examples stops at ``h``.

Class weights multiply each term (``weight[y]``), ``ignore_index``, label smoothing
(:math:`\sum_k q_k w_k \phi(\log p_k)`), probability targets, K-dim inputs and reductions follow
``F.cross_entropy``; with ``gamma=0`` (and any ``halt``) focal and halted focal equal cross-entropy.
Label-smoothed cross-entropy itself is ``EncouragingLoss(bonus_scale=0, label_smoothing=...)`` or torch's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_class_vector, check_range, check_reduction
from ._targets import class_terms, mean_normalizer, prepare, reduce
from .functional import encouraging_loss_parts


def poly_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    epsilon: float = 1.0,
) -> Tensor:
    r"""Poly-1: cross-entropy plus :math:`\epsilon (1 - p_t)`, weighted like the cross-entropy term.

    ``epsilon >= -1`` (the Poly paper also uses negative values). Arguments otherwise as ``F.cross_entropy``.

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> poly_loss(logits, torch.randint(10, (8,)), epsilon=1.0).backward()
    """
    if not epsilon >= -1.0:
        raise ValueError(f"epsilon must be >= -1, got {epsilon}")
    return encouraging_loss_parts(
        input, target, weight, ignore_index, reduction, label_smoothing, bonus="poly", bonus_scale=epsilon,
        bonus_weight="same", _signed_scale=True,
    ).loss


def _focal_term(gamma: float) -> Callable[[Tensor], Tensor]:
    def term(log_p: Tensor) -> Tensor:
        # Floor the base at the smallest normal: at p = 1 exactly (log p rounds to 0 for logits of +-1e4) the slope
        # of u^gamma is infinite for gamma < 1, and inf * log p = inf * 0 gave NaN gradients. The clamp's zero
        # gradient there is the true limit (d/dlog p of (1 - p)^gamma log p -> 0); values change by < tiny^gamma.
        base = (-torch.expm1(log_p)).clamp(min=torch.finfo(log_p.dtype).tiny)
        return -torch.pow(base, gamma) * log_p

    return term


def _halted_focal_term(gamma: float, halt: float) -> Callable[[Tensor], Tensor]:
    log_h = math.log(halt)
    shift = -log_h + (1.0 - halt) ** gamma * log_h  # CE(h) - FL(h): makes the two pieces meet at p = h
    focal = _focal_term(gamma)

    def term(log_p: Tensor) -> Tensor:
        # The clamp keeps the focal branch away from p = 1, where (1 - p)^gamma has no finite slope for gamma < 1.
        return torch.where(log_p <= log_h, focal(log_p.clamp(max=log_h)), -log_p - shift)

    return term


def _class_loss(input: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str,
                label_smoothing: float, term: Callable[[Tensor], Tensor]) -> Tensor:
    t = prepare(input, target, weight, ignore_index, reduction, label_smoothing)
    elementwise = class_terms(t, F.log_softmax(t.x, dim=1), term, weight, float(label_smoothing))
    return reduce(elementwise, mean_normalizer(t, weight), reduction, t)


def _check_gamma(gamma: float) -> None:
    if not gamma >= 0.0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def _check_halt(halt: float) -> None:
    if not 0.0 < halt <= 1.0:
        raise ValueError(f"halt must be in (0, 1], got {halt}")


def focal_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    gamma: float = 2.0,
) -> Tensor:
    r"""Softmax focal loss :math:`-w_y (1 - p_y)^\gamma \log p_y`; ``weight`` plays the role of alpha.

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> focal_loss(logits, torch.randint(10, (8,)), gamma=2.0).backward()
    """
    _check_gamma(gamma)
    return _class_loss(input, target, weight, ignore_index, reduction, label_smoothing, _focal_term(gamma))


def halted_focal_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    gamma: float = 2.0,
    halt: float = 0.5,
) -> Tensor:
    r"""Halted focal loss: focal loss for :math:`p_y \le` ``halt``, shifted cross-entropy above (module docs).

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> halted_focal_loss(logits, torch.randint(10, (8,)), gamma=2.0, halt=0.5).backward()
    """
    _check_gamma(gamma)
    _check_halt(halt)
    return _class_loss(input, target, weight, ignore_index, reduction, label_smoothing,
                       _halted_focal_term(gamma, halt))


class _WeightedLoss(nn.Module):
    """Stores ``F.cross_entropy``'s shared options (class weights as a buffer) for the baseline modules."""

    def __init__(self, weight: Tensor | None, ignore_index: int, reduction: str, label_smoothing: float) -> None:
        super().__init__()
        check_reduction(reduction)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        check_class_vector("weight", weight)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = label_smoothing

    def _common(self) -> tuple:
        return self.weight, self.ignore_index, self.reduction, self.label_smoothing


class PolyLoss(_WeightedLoss):
    """Module form of :func:`poly_loss`.

    Example:
        >>> criterion = PolyLoss(epsilon=1.0)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, epsilon: float = 1.0) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        if not epsilon >= -1.0:
            raise ValueError(f"epsilon must be >= -1, got {epsilon}")
        self.epsilon = epsilon

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return poly_loss(input, target, *self._common(), epsilon=self.epsilon)


class FocalLoss(_WeightedLoss):
    """Module form of :func:`focal_loss`.

    Example:
        >>> criterion = FocalLoss(gamma=2.0)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, gamma: float = 2.0) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        _check_gamma(gamma)
        self.gamma = gamma

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return focal_loss(input, target, *self._common(), gamma=self.gamma)


class HaltedFocalLoss(_WeightedLoss):
    """Module form of :func:`halted_focal_loss`.

    Example:
        >>> criterion = HaltedFocalLoss(gamma=2.0, halt=0.5)
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> criterion(logits, torch.randint(10, (8,))).backward()
    """

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0, *, gamma: float = 2.0, halt: float = 0.5) -> None:
        super().__init__(weight, ignore_index, reduction, label_smoothing)
        _check_gamma(gamma)
        _check_halt(halt)
        self.gamma = gamma
        self.halt = halt

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return halted_focal_loss(input, target, *self._common(), gamma=self.gamma, halt=self.halt)
