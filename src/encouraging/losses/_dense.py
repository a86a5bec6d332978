r"""The bonus summed over all classes, :math:`\sum_k a_k\, b(p_k)`, as one autograd Function.

Label smoothing and probability targets put weight on every class, so their bonus term needs :math:`b(p_k)` for
the whole (N, C) block. Written with autograd, that chain of elementwise ops would save several (N, C)
intermediates and run as many passes again in backward. Here forward saves only :math:`\log p` (which
``log_softmax`` saves anyway, so no extra memory) and backward recomputes the one elementwise derivative
:math:`p\,b'(p)` in place: two (N, C) temporaries at most, each freed before returning.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .bonus import BonusParams, dense_bonus_grad, dense_bonus_value, get_bonus


def _class_sum(values: Tensor, coef: Tensor) -> Tensor:
    """``sum_k coef_k values_k`` over dim 1; a matrix-vector product when ``coef`` is one row of C weights."""
    if values.dim() == 2 and coef.dim() == 2 and coef.shape[0] == 1:
        return values @ coef.squeeze(0)
    return values.mul_(coef).sum(1)


class _DenseBonusSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_p: Tensor, coef: Tensor, name: str, log_end: float, gamma: float, start: float,
                floor: float):
        params = BonusParams(log_end, gamma, start, floor)
        with torch.no_grad():
            out = _class_sum(dense_bonus_value(get_bonus(name), log_p, params), coef)
        ctx.save_for_backward(log_p, coef)
        ctx.bonus = (name, params)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        if torch.is_grad_enabled():  # autograd runs backward in grad mode only for create_graph=True
            raise RuntimeError(
                "second derivatives (create_graph=True) of the encouraging loss are implemented for class-index "
                "targets without label smoothing only; the label-smoothing / probability-target bonus is "
                "first-order (its backward is hand-written and in place)"
            )
        log_p, coef = ctx.saved_tensors
        name, params = ctx.bonus
        bonus = get_bonus(name)
        g = grad_out.unsqueeze(1)
        grad_log_p = grad_coef = None
        if ctx.needs_input_grad[0]:
            grad_log_p = dense_bonus_grad(bonus, log_p, params).mul_(coef).mul_(g)
        if ctx.needs_input_grad[1]:
            grad_coef = dense_bonus_value(bonus, log_p, params).mul_(g).sum_to_size(coef.shape)
        return grad_log_p, grad_coef, None, None, None, None, None


def dense_bonus_sum(log_p: Tensor, coef: Tensor, name: str, params: BonusParams) -> Tensor:
    """:math:`\\sum_k coef_k\\, b(p_k)` over dim 1 of ``log_p (N, C, *)``; ``coef`` broadcasts to it."""
    return _DenseBonusSum.apply(log_p, coef, name, params.log_end, params.gamma, params.start, params.floor)
