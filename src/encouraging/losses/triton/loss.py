r"""The encouraging loss of ``(N, C)`` logits on CUDA in as few launches as ``F.cross_entropy``.

At 10 to 1000 classes a GPU does a loss's arithmetic in microseconds and the host's launches set the time: the
general fused path (:mod:`encouraging.losses.fused`) runs the row kernel beside 18 small PyTorch kernels (the
target-range check, the ignore mask, the 'mean' normalizer, casts). Here one forward is

1. :func:`~.el.target_stats`: one program reads the targets once and writes :math:`1 / \sum_i w_{y_i}` over the
   non-ignored ones and whether every index is in range (no host read),
2. ``torch._assert_async`` on that flag (CUDA's device-side assert, as ``F.cross_entropy``'s own),
3. the row kernel of :mod:`~.el`: per-row losses and the logits' gradient, both already scaled by the 'mean'
   reciprocal, which it reads from device memory,
4. the sum of the per-row losses,

and backward multiplies the saved gradient by the upstream one (skipped where that is exactly 1 and the gradient
large, as in the fused path). ``'sum'`` and ``'none'`` skip the scaling, and without data checks
(:func:`~encouraging.losses.disable_checks`) step 1 runs for ``'mean'`` only and step 2 not at all. The row
kernel never reads outside a row: an out-of-range target gives a NaN loss and gradient row where the assert is off.
Probability targets (``(N, C)``, no range to check, ``'mean'`` divides by N) replace steps 1-2 by one fill of the
reciprocal (for ``'mean'``) and take the probability-target row kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import assert_targets_in_range, data_checks_enabled
from ..fused import saved_grad_times
from .el import float32_on, launch, target_stats


class _TritonEncouragingLoss(torch.autograd.Function):
    """Forward: the steps of the module docstring, saving the (scaled) gradient; backward: it times the upstream
    gradient (:func:`~encouraging.losses.fused.saved_grad_times`)."""

    @staticmethod
    def forward(ctx, logits, target, weight, bonus_weight, ignore_index, reduction, label_smoothing, log_end,
                bonus_scale, bonus_floor):
        n, vocab = logits.shape
        mean, soft = reduction == "mean", target.is_floating_point()
        check = data_checks_enabled() and not soft
        if soft:  # 'mean' over probability targets divides by N, as F.cross_entropy
            stats = torch.full((1,), 1.0 / n, dtype=torch.float32, device=logits.device) if mean else None
        else:
            stats = target_stats(target, weight, vocab, ignore_index) if mean or check else None
        if check:
            assert_targets_in_range(stats[1], target, vocab, ignore_index)
        loss = torch.empty(n, dtype=torch.float32, device=logits.device)
        grad = torch.empty_like(logits) if ctx.needs_input_grad[0] else None
        launch(logits, target, weight, bonus_weight, loss, grad, ignore_index, label_smoothing, log_end, bonus_scale,
               bonus_floor, scale=stats if mean else None, shared_scale=mean)
        ctx.save_for_backward(grad)
        ctx.per_element = reduction == "none"
        return loss if ctx.per_element else loss.sum()

    @staticmethod
    def backward(ctx, grad_out):
        return saved_grad_times(ctx, grad_out), None, None, None, None, None, None, None, None, None


def encouraging_loss(logits: Tensor, target: Tensor, weight: Tensor | None, bonus_weight: Tensor | None,
                     ignore_index: int, reduction: str, label_smoothing: float, log_end: float, bonus_scale: float,
                     bonus_floor: float) -> Tensor:
    """The loss of ``(N, C)`` logits (float32, float16 or bfloat16, contiguous rows, ``N > 0``) against ``(N,)``
    int64 class indices or ``(N, C)`` probabilities, with the log bonus without ``bonus_start``, in the logits'
    dtype; every argument checked by the caller (:func:`encouraging.losses.encouraging_loss`)."""
    loss = _TritonEncouragingLoss.apply(logits, target.contiguous(), float32_on(weight, logits.device),
                                        float32_on(bonus_weight, logits.device), ignore_index, reduction,
                                        label_smoothing, log_end, bonus_scale, bonus_floor)
    return loss.to(logits.dtype)
