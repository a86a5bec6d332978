"""Input/target layout shared by the softmax losses, following ``torch.nn.functional.cross_entropy``.

Accepted layouts (class dimension 1, as in torch):

* ``input (C)`` with ``target ()`` (class index) or ``target (C)`` (probabilities): unbatched;
* ``input (N, C)`` with ``target (N)`` or ``(N, C)``;
* ``input (N, C, d1, ..., dK)`` with ``target (N, d1, ..., dK)`` or ``(N, C, d1, ..., dK)``.

Half-precision inputs are computed in float32 and the result is cast back to the input dtype, as torch does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import (
    all_targets_valid,
    check_class_vector,
    check_floating,
    check_range,
    check_reduction,
    check_target_range,
)


@dataclass
class Targets:
    """A batched view of (input, target) with everything the losses need, computed once."""

    x: Tensor  # (N, C, *) float32 or float64
    num_classes: int
    unbatched: bool
    out_dtype: torch.dtype
    # class-index targets
    index: Tensor | None = None  # (N, *) long, ignored positions replaced by 0 (safe to gather)
    mask: Tensor | None = None  # (N, *) bool, False where target == ignore_index; None when all_valid
    all_valid: bool = False  # checked: no element is ignored (the mask is all True and never built)
    # probability targets
    probs: Tensor | None = None  # (N, C, *)
    raw: Tensor | None = None  # (N, *) long class indices as given, ignore_index included

    @property
    def compute_dtype(self) -> torch.dtype:
        """float64 for float64 input, else float32 (half precision is computed in float32)."""
        return torch.float64 if self.x.dtype == torch.float64 else torch.float32

    @property
    def hard(self) -> bool:
        return self.index is not None

    @property
    def valid(self) -> Tensor:
        """(N, *) bool, False where target == ignore_index."""
        if self.mask is None:
            self.mask = torch.ones_like(self.index, dtype=torch.bool)
        return self.mask

    def masked(self, elementwise: Tensor) -> Tensor:
        """``elementwise`` with ignored elements set to 0."""
        return elementwise if self.all_valid else torch.where(self.valid, elementwise, 0.0)

    def class_view(self, vector: Tensor) -> Tensor:
        """Reshape a (C,) vector so that it broadcasts along the class dimension of ``x``."""
        return vector.view((1, -1) + (1,) * (self.x.dim() - 2))

    def gather(self, tensor: Tensor) -> Tensor:
        """The target column of a (N, C, *) tensor, shape (N, *)."""
        return tensor.gather(1, self.index.unsqueeze(1)).squeeze(1)

    def finish(self, elementwise: Tensor) -> Tensor:
        """Cast back to the input dtype and drop the batch dimension of unbatched input."""
        out = elementwise.to(self.out_dtype)
        return out.squeeze(0) if self.unbatched else out


def prepare(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    upcast: bool = True,
) -> Targets:
    """Validate the arguments every softmax loss shares and build the batched layout; ``upcast=False`` keeps
    half-precision input as it is (for a caller that reads it in float32 itself)."""
    check_floating("input", input)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    check_reduction(reduction)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    if input.dim() == 0:
        raise ValueError("input must have at least 1 dimension (C) or (N, C, d1, ..., dK), got a 0-d tensor")
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    num_classes = x.shape[1]
    check_class_vector("weight", weight, num_classes)
    out_dtype = input.dtype
    if upcast and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()

    if target.is_floating_point():
        if target.shape != input.shape:
            raise ValueError(
                f"probability targets must have the input's shape {tuple(input.shape)}, "
                f"got target of shape {tuple(target.shape)}"
            )
        if ignore_index >= 0:  # torch refuses this too: a class index means nothing for probabilities
            raise ValueError(f"ignore_index={ignore_index} is not supported for probability (floating) targets")
        probs = (target.unsqueeze(0) if unbatched else target).to(
            x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32)
        return Targets(x, num_classes, unbatched, out_dtype, probs=probs)

    if target.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"target must hold class indices (integer dtype) or probabilities, got {target.dtype}")
    expected = (input.shape[0],) + tuple(input.shape[2:]) if not unbatched else ()
    if tuple(target.shape) != expected:
        raise ValueError(
            f"class-index target must have shape {expected} for input of shape {tuple(input.shape)}, "
            f"got {tuple(target.shape)}"
        )
    target = target.unsqueeze(0) if unbatched else target
    target = target.long()
    if all_targets_valid(target, num_classes, ignore_index):  # the common case on the CPU: no mask to build
        return Targets(x, num_classes, unbatched, out_dtype, index=target, raw=target, all_valid=True)
    valid = target != ignore_index
    index = torch.where(valid, target, 0)
    check_target_range(target, index, num_classes, ignore_index)
    return Targets(x, num_classes, unbatched, out_dtype, index=index, mask=valid, raw=target)


def reduce(elementwise: Tensor, normalizer: Tensor | float, reduction: str, targets: Targets) -> Tensor:
    """Apply ``reduction`` the way ``F.cross_entropy`` does; ``normalizer`` is the 'mean' denominator."""
    if reduction == "none":
        return targets.finish(elementwise)
    total = elementwise.sum()
    if reduction == "mean":
        total = total / normalizer
    return total.to(targets.out_dtype)


def mean_normalizer(targets: Targets, weight: Tensor | None) -> Tensor | float:
    """Denominator of 'mean': the summed target class weights of non-ignored elements (class indices), or the
    number of elements (probabilities), exactly as ``F.cross_entropy``."""
    if not targets.hard:
        return float(targets.probs.numel() // targets.num_classes)
    if weight is None:
        return float(targets.index.numel()) if targets.all_valid else targets.valid.sum().to(targets.compute_dtype)
    return targets.masked(weight.to(targets.compute_dtype)[targets.index]).sum()


def smoothed(targets: Targets, label_smoothing: float) -> Tensor:
    """Probability targets with smoothing applied: ``t (1 - eps) + eps / C``."""
    if label_smoothing == 0.0:
        return targets.probs
    return targets.probs * (1.0 - label_smoothing) + label_smoothing / targets.num_classes


def class_sum(x: Tensor, w: Tensor | None, t: Targets) -> Tensor:
    """``sum_k w_k x_k`` over dim 1 (``w`` None: plain sum); a matrix-vector product for 2-D input."""
    if w is None:
        return x.sum(1)
    return x @ w if x.dim() == 2 else (x * t.class_view(w)).sum(1)


def class_terms(t: Targets, log_p: Tensor, term, weight: Tensor | None, label_smoothing: float,
                log_p_y: Tensor | None = None) -> Tensor:
    r"""Per-element :math:`\sum_k q_k w_k\, \phi(\log p_k)` with ``F.cross_entropy``'s target conventions.

    ``term`` is :math:`\phi`, applied elementwise to log-probabilities (``torch.neg`` gives cross-entropy).
    ``log_p_y``: the target column when the caller has gathered it already (each gather of ``log_p`` costs an
    (N, C) buffer in backward).
    For class indices :math:`q = (1 - \varepsilon) e_y + \varepsilon / C` and ignored elements give 0; for
    probability targets :math:`q` is the smoothed target.
    """
    w = weight.to(log_p.dtype) if weight is not None else None
    if not t.hard:
        q = smoothed(t, label_smoothing)
        return (term(log_p) * (q * t.class_view(w) if w is not None else q)).sum(1)
    out = term(t.gather(log_p) if log_p_y is None else log_p_y)
    if w is not None:
        out = out * w[t.index]
    if label_smoothing > 0.0:
        if term is torch.neg:  # cross-entropy is linear in log p: sum first, negate after (no (N, C) temporary)
            spread = -class_sum(log_p, w, t)
        else:
            spread = class_sum(term(log_p), w, t)
        out = (1.0 - label_smoothing) * out + (label_smoothing / t.num_classes) * spread
    return t.masked(out)
