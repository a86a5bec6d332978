r"""The binary (sigmoid) encouraging loss, mirroring ``BCEWithLogitsLoss``, for binary and multi-label data.

With :math:`\sigma = \mathrm{sigmoid}(x)`, target :math:`y \in [0, 1]`, ``pos_weight`` :math:`\pi` and
``weight`` :math:`w`, each side is rewarded for the probability it gives the correct answer:

.. math::

    L = w \left[ \pi\, y \left(-\log \sigma + \rho\, b(\sigma)\right)
        + (1 - y) \left(-\log (1 - \sigma) + \rho\, b(1 - \sigma)\right) \right]

Both :math:`\log \sigma = -\mathrm{softplus}(-x)` and :math:`\log(1 - \sigma) = -\mathrm{softplus}(x)` are
exact, so every bonus, the full log bonus included, is finite for any logit with no clamp. With
``bonus_scale=0`` this equals ``F.binary_cross_entropy_with_logits``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_floating, check_reduction
from .bonus import bonus_value, get_bonus
from .functional import bonus_params
from .modules import BonusOptions


def _check_broadcast(name: str, tensor: Tensor | None, shape: torch.Size) -> None:
    if tensor is None:
        return
    check_floating(name, tensor)
    try:
        ok = torch.broadcast_shapes(tensor.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} of shape {tuple(tensor.shape)} does not broadcast to the input's {tuple(shape)}")


def binary_encouraging_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
    *,
    log_end: float = 0.75,
    bonus_scale: float = 1.0,
    bonus: str = "log",
    gamma: float = 2.0,
    bonus_start: float = 0.0,
    bonus_floor: float = 0.0,
) -> Tensor:
    r"""Binary encouraging loss on logits (math in the module docstring).

    Args:
        input: logits of any shape.
        target: the input's shape, values in [0, 1] (soft labels allowed).
        weight: broadcasts to the input; rescales each element.
        reduction: ``'none'``, ``'mean'`` (over all elements) or ``'sum'``.
        pos_weight: broadcasts along the last (class) dimension; weights the positive side.
        log_end, bonus_scale, bonus, gamma, bonus_start, bonus_floor: as in :func:`encouraging_loss`.

    Example:
        >>> logits = torch.randn(4, 3, requires_grad=True)
        >>> binary_encouraging_loss(logits, torch.randint(2, (4, 3)).float()).backward()
    """
    check_floating("input", input)
    if not isinstance(target, Tensor) or target.shape != input.shape:
        shape = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
        raise ValueError(f"target must have the input's shape {tuple(input.shape)}, got {shape}")
    check_reduction(reduction)
    params = bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor)
    _check_broadcast("weight", weight, input.shape)
    _check_broadcast("pos_weight", pos_weight, input.shape)

    x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    y = target.to(x.dtype)
    log_pos, log_neg = -F.softplus(-x), -F.softplus(x)
    pos, neg = -log_pos, -log_neg
    if bonus_scale > 0.0:
        entry = get_bonus(bonus)
        pos = pos + bonus_scale * bonus_value(entry, log_pos, log_neg, params)
        neg = neg + bonus_scale * bonus_value(entry, log_neg, log_pos, params)
    if pos_weight is not None:
        pos = pos * pos_weight.to(x.dtype)
    loss = y * pos + (1.0 - y) * neg
    if weight is not None:
        loss = loss * weight.to(x.dtype)
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.to(input.dtype)


class BinaryEncouragingLoss(BonusOptions):
    """Module form of :func:`binary_encouraging_loss`, a drop-in for ``nn.BCEWithLogitsLoss``.

    Example:
        >>> criterion = BinaryEncouragingLoss(log_end=0.75)   # was: nn.BCEWithLogitsLoss()
        >>> logits = torch.randn(4, 3, requires_grad=True)
        >>> criterion(logits, torch.randint(2, (4, 3)).float()).backward()
    """

    def __init__(
        self,
        weight: Tensor | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
        *,
        log_end: float = 0.75,
        bonus_scale: float = 1.0,
        bonus: str = "log",
        gamma: float = 2.0,
        bonus_start: float = 0.0,
        bonus_floor: float = 0.0,
    ) -> None:
        super().__init__(reduction, log_end, bonus_scale, bonus, gamma, bonus_start, bonus_floor)
        for name, tensor in (("weight", weight), ("pos_weight", pos_weight)):
            if tensor is not None:
                check_floating(name, tensor)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_encouraging_loss(
            input, target, self.weight, self.reduction, self.pos_weight, log_end=self.log_end,
            bonus_scale=self.bonus_scale, bonus=self.bonus, gamma=self.gamma, bonus_start=self.bonus_start,
            bonus_floor=self.bonus_floor,
        )
