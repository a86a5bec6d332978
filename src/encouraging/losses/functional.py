r"""The encouraging loss (EL) as a function: cross-entropy plus a bonus that rewards correct predictions.

For logits :math:`f`, :math:`p = \mathrm{softmax}(f)`, target class :math:`y`, class weights :math:`w`, bonus
class weights :math:`v`, ``bonus_scale`` :math:`\rho` and label smoothing :math:`\varepsilon` over :math:`C`
classes, with :math:`q = (1 - \varepsilon) e_y + \varepsilon / C` (or smoothed probability targets):

.. math::

    L = \sum_k q_k \left( -w_k \log p_k + \rho\, v_k\, b(p_k) \right)

which for hard labels without smoothing is :math:`-w_y \log p_y + \rho v_y b(p_y)`; :math:`b` is a bonus of
:mod:`encouraging.losses.bonus` (default ``log``: :math:`\log(1 - p)`, linear past ``log_end``).

Numerics: everything but the bonus is ``F.cross_entropy``'s own computation (``log_softmax`` once, the target
column gathered), so with ``bonus_scale=0`` every configuration equals ``F.cross_entropy``. The target bonus is
computed on the target column only, O(N) work; the full bonus (``log_end=1``) uses the exact
:math:`\log(1 - p_y) = \operatorname{logsumexp}_{k \ne y} f_k - \operatorname{lse}(f)`, finite for any logits.
Label smoothing and probability targets add one pass over all classes (:mod:`._dense`), where the full log bonus
is floored at :math:`1 - p_k \ge 10^{-5}` for the non-target classes as in the paper's code.

Gradient identity (hard labels, no smoothing, log bonus):
:math:`\partial L / \partial f = s\,(p - e_y)` with :math:`s = w_y + \rho v_y p_y / (1 - p_y)` for
:math:`p_y \le LE` and :math:`s = w_y + \rho v_y p_y / (1 - LE)` beyond: EL is CE with a per-example gradient
multiplier.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernel
from ._checks import check_class_vector, check_nonnegative, check_range, check_reduction
from ._dense import dense_bonus_sum
from ._targets import Targets, class_terms, mean_normalizer, prepare, reduce, smoothed
from .bonus import BonusParams, bonus_value, get_bonus
from .fused import Options, fused_encouraging_loss

IMPLS = ("auto", "torch", "cpp", "triton", "autograd")  # see encouraging_loss's impl


class LossParts(NamedTuple):
    """The loss and its per-element parts (shape of the target, without the class dimension).

    ``ce`` is the (weighted, smoothed) cross-entropy part, ``bonus`` the scaled bonus part (the paper's "reward",
    usually negative), ``p_target`` the detached target probability (for probability targets, that of their
    most likely class) and ``valid`` marks the elements that are not ``ignore_index``. ``loss`` is
    ``ce + bonus`` reduced as ``reduction`` asks.
    """

    loss: Tensor
    ce: Tensor
    bonus: Tensor
    p_target: Tensor
    valid: Tensor


def resolve_bonus_weight(bonus_weight: Tensor | str | None, weight: Tensor | None,
                         num_classes: int | None = None) -> Tensor | None:
    """The bonus class weights ``v`` (None: all ones), checked; ``num_classes`` None checks only the form."""
    if bonus_weight is None:
        return None
    if isinstance(bonus_weight, str):
        if bonus_weight != "same":
            raise ValueError(f"bonus_weight must be None, 'same' or a (C,) tensor, got {bonus_weight!r}")
        return weight
    check_class_vector("bonus_weight", bonus_weight, num_classes)
    return bonus_weight


def bonus_params(bonus: str, log_end: float, bonus_scale: float, gamma: float, bonus_start: float,
                 bonus_floor: float = 0.0, signed_scale: bool = False) -> BonusParams:
    """Validate the bonus options shared by every encouraging loss and bundle its shape parameters.

    ``signed_scale`` admits a negative ``bonus_scale`` (Poly-1's epsilon may be negative; EL's scale may not).
    """
    get_bonus(bonus)
    check_range("log_end", log_end, 0.0, 1.0)
    if not signed_scale:
        check_nonnegative("bonus_scale", bonus_scale)
    if not gamma > 0.0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    check_range("bonus_start", bonus_start, 0.0, 1.0, high_open=True)
    check_range("bonus_floor", bonus_floor, 0.0, 1.0, high_open=True)
    return BonusParams(float(log_end), float(gamma), float(bonus_start), float(bonus_floor))


def _checked_bonus_weight(t: Targets, bonus: str, log_end: float, bonus_scale: float,
                          bonus_weight: Tensor | str | None, weight: Tensor | None) -> Tensor | None:
    """The checks that need the number of classes; returns the resolved bonus class weights ``v``."""
    if bonus == "log" and log_end == 1.0 and bonus_scale != 0.0 and t.num_classes < 2:
        raise ValueError("the full log bonus (log_end=1) needs at least 2 classes: with C=1, p_y = 1 and "
                         f"log(1 - p_y) = -inf; got input with C={t.num_classes}")
    return resolve_bonus_weight(bonus_weight, weight, t.num_classes)


def _exact_log1m(log_p: Tensor, targets: Targets) -> Tensor:
    """log(1 - p_y) = logsumexp over k != y of log p_k: exact where 1 - p_y would round to 0."""
    masked = log_p.scatter(1, targets.index.unsqueeze(1), -math.inf)
    return torch.logsumexp(masked, dim=1)


def _hard_reward(t: Targets, log_p: Tensor, log_p_y: Tensor, v: Tensor | None, eps: float, rho: float,
                 bonus: str, params: BonusParams) -> Tensor:
    exact = _exact_log1m(log_p, t) if bonus == "log" and params.log_end == 1.0 else None
    v_y = v[t.index] if v is not None else None
    gain = rho * (1.0 - eps + eps / t.num_classes)
    reward = bonus_value(get_bonus(bonus), log_p_y, exact, params)
    reward = gain * (reward if v_y is None else v_y * reward)
    if eps > 0.0:
        share = rho * eps / t.num_classes
        coef = share * t.class_view(v if v is not None else log_p.new_ones(t.num_classes))
        own = (share * v_y).unsqueeze(1) if v_y is not None else log_p_y.new_full((1, 1), share)
        # Every class but the target, floored; the target's term is the exact one above. Removing the target's
        # floored term with the same function keeps value and gradient consistent to rounding.
        reward = reward + dense_bonus_sum(log_p, coef, bonus, params)
        reward = reward - dense_bonus_sum(log_p_y.unsqueeze(1), own, bonus, params)
    return t.masked(reward)


def _soft_reward(t: Targets, log_p: Tensor, v: Tensor | None, eps: float, rho: float, bonus: str,
                 params: BonusParams) -> Tensor:
    q = smoothed(t, eps)
    return dense_bonus_sum(log_p, rho * (q * t.class_view(v) if v is not None else q), bonus, params)


def encouraging_loss_parts(
    input: Tensor,
    target: Tensor,
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
    _signed_scale: bool = False,
) -> LossParts:
    """:func:`encouraging_loss` together with its per-element parts (see :class:`LossParts`).

    ``_signed_scale=True`` (internal, for Poly-1's negative epsilon) admits a negative ``bonus_scale``.

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> parts = encouraging_loss_parts(logits, torch.randint(10, (8,)), log_end=0.75)
        >>> parts.ce.shape, bool((parts.bonus <= 0).all())   # per element; the bonus rewards (it is <= 0)
        (torch.Size([8]), True)
        >>> parts.loss.backward()
    """
    t = prepare(input, target, weight, ignore_index, reduction, label_smoothing)
    params = bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor, _signed_scale)
    v = _checked_bonus_weight(t, bonus, log_end, bonus_scale, bonus_weight, weight)
    v = v.to(t.x.dtype) if v is not None else None
    log_p = t.x if log_probs else F.log_softmax(t.x, dim=1)
    eps, rho = float(label_smoothing), float(bonus_scale)
    # One gather of the target column serves the CE term, the bonus and p_target: every differentiable gather
    # of log_p would add an (N, C) zero-and-scatter pass to backward.
    log_p_y = t.gather(log_p) if t.hard else None
    ce = class_terms(t, log_p, torch.neg, weight, eps, log_p_y)
    if rho == 0.0:
        reward = torch.zeros_like(ce)
    elif t.hard:
        reward = _hard_reward(t, log_p, log_p_y, v, eps, rho, bonus, params)
    else:
        reward = _soft_reward(t, log_p, v, eps, rho, bonus, params)
    loss = reduce(ce + reward, mean_normalizer(t, weight), reduction, t)
    if t.hard:
        p_target = log_p_y.detach().exp()
    else:
        p_target = log_p.detach().gather(1, t.probs.argmax(1, keepdim=True)).squeeze(1).exp()
    valid = t.valid if t.hard else torch.ones_like(ce, dtype=torch.bool)
    return LossParts(loss, t.finish(ce), t.finish(reward), t.finish(p_target),
                     valid.squeeze(0) if t.unbatched else valid)


def encouraging_loss(
    input: Tensor,
    target: Tensor,
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
    impl: str = "auto",
) -> Tensor:
    r"""Encouraging loss: ``F.cross_entropy`` plus :math:`\rho\, v_y\, b(p_y)` (math in the module docstring).

    Args:
        input: logits ``(C)``, ``(N, C)`` or ``(N, C, d1, ..., dK)``; log-probabilities with ``log_probs=True``.
            Half precision is computed in float32 and returned in the input dtype.
        target: class indices ``()``, ``(N)`` or ``(N, d1, ..., dK)`` with values in ``[0, C)`` or
            ``ignore_index``; or probabilities with the input's shape.
        weight: ``(C,)`` class weights of the cross-entropy term, as in ``F.cross_entropy``.
        ignore_index: class index that contributes nothing (class-index targets only).
        reduction: ``'none'`` (per element), ``'sum'``, or ``'mean'`` (divided by the summed target weights of
            the non-ignored elements; by the number of elements for probability targets), as torch does.
        label_smoothing: :math:`\varepsilon \in [0, 1]`; smooths both the CE and the bonus term.
        log_end: :math:`LE \in [0, 1]`: the log bonus follows :math:`\log(1-p)` up to ``p = LE`` and its tangent
            after. 0.75 is the paper's default, 1.0 the full bonus, 0 gives :math:`b(p) = -p`.
        bonus_scale: :math:`\rho \ge 0`; 0 gives exactly ``F.cross_entropy``.
        bonus: ``'log'``, ``'power'`` (:math:`-p^\gamma`) or ``'cosine'`` (:math:`\cos(\pi p) - 1`); see
            :func:`encouraging.losses.list_bonuses`.
        gamma: exponent of the power bonus (> 0).
        bonus_start: :math:`s \in [0, 1)`: the "aggressive" bonus :math:`b(p) - b(s)` for :math:`p \ge s`, 0 below.
        bonus_weight: per-class bonus weights :math:`v`: None (all ones), ``'same'`` (the CE ``weight``) or a
            ``(C,)`` tensor.
        bonus_floor: the paper's clamp for the log bonus, :math:`\log\max(1 - p, \text{floor})` (its code uses
            1e-5): the bonus stops rewarding an example once :math:`1 - p_y <` floor. 0 (default) is the exact
            bonus. With ``log_end=1`` the exact bonus never stops pushing logits apart and can diverge at
            learning rates where the paper's clamped version trains (see the README's demo).
        log_probs: ``input`` already holds log-probabilities (e.g. a PyG or fairseq model's ``log_softmax``).
        impl: how it is computed, every way to the same value and gradient: ``'torch'`` computes the loss and
            its gradient together in forward (:mod:`encouraging.losses.fused`: CE's passes over the logits and
            its memory), ``'cpp'`` does so in one compiled CPU kernel with a C++ backward
            (:mod:`encouraging.losses.cpu_kernel`: 2-D logits, class-index targets, the log bonus without
            ``bonus_start``; label smoothing with ``log_end < 1``), ``'triton'`` in one CUDA kernel
            (class indices or probabilities, any input shape, the log bonus without ``bonus_start``; plain ``(N, C)``
            calls in as many launches as ``F.cross_entropy``: :mod:`encouraging.losses.triton.loss`),
            ``'autograd'`` is the op-by-op form (it alone has second derivatives, gradients for ``weight``,
            ``bonus_weight`` or probability targets, runs under ``torch.func`` transforms, and takes
            ``log_probs``); ``'auto'`` picks ``F.cross_entropy`` itself when ``bonus_scale=0``, ``'autograd'``
            where only it applies, else the CPU kernel (CPU) or Triton (CUDA; 2-D input) where it applies, else
            ``'torch'``.

    Returns:
        A scalar, or a tensor of the target's shape for ``reduction='none'``.

    Example:
        >>> logits = torch.randn(8, 10, requires_grad=True)
        >>> target = torch.randint(10, (8,))
        >>> loss = encouraging_loss(logits, target, log_end=0.75)
        >>> loss.backward()
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    kernel = _plain_kernel(impl, input, target, weight, bonus_weight, ignore_index, label_smoothing, bonus, log_end,
                           bonus_scale, bonus_start, bonus_floor, log_probs)
    if kernel is not None:
        check_reduction(reduction)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0)
        bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor)
        v = weight if isinstance(bonus_weight, str) else bonus_weight
        return kernel.encouraging_loss(input, target, weight, v, ignore_index, reduction, float(label_smoothing),
                                       float(log_end), float(bonus_scale), float(bonus_floor))
    learned = [name for name, x in (("weight", weight), ("bonus_weight", bonus_weight), ("target", target))
               if isinstance(x, Tensor) and x.requires_grad]
    functorch = torch._C._are_functorch_transforms_active()  # torch.func's grad / vmap: op by op only
    if impl == "autograd" or (impl == "auto" and (log_probs or learned or functorch)):
        return encouraging_loss_parts(
            input, target, weight, ignore_index, reduction, label_smoothing, log_end=log_end,
            bonus_scale=bonus_scale, bonus=bonus, gamma=gamma, bonus_start=bonus_start, bonus_weight=bonus_weight,
            bonus_floor=bonus_floor, log_probs=log_probs,
        ).loss
    if log_probs:
        raise ValueError(f"impl={impl!r} computes the gradient from logits; log_probs=True needs impl='autograd'")
    if learned:
        raise ValueError(f"impl={impl!r} differentiates the input only, but {learned[0]} requires grad; use "
                         "impl='autograd'")
    if functorch:
        raise ValueError(f"impl={impl!r} does not run under torch.func transforms (grad, vmap, ...); use "
                         "impl='autograd'")
    t = prepare(input, target, weight, ignore_index, reduction, label_smoothing, upcast=False)
    bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor)
    v = _checked_bonus_weight(t, bonus, log_end, bonus_scale, bonus_weight, weight)
    if impl == "auto" and bonus_scale == 0.0:  # the bonus is off: CE is torch's own, at its speed
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
    if _use_cpp(impl, t, label_smoothing, bonus, log_end, bonus_start, bonus_floor):
        loss = cpu_kernel.encouraging_loss(t.x, t.raw, weight, v, ignore_index, reduction, float(label_smoothing),
                                           float(log_end), float(bonus_scale), float(bonus_floor))
        return t.finish(loss) if reduction == "none" else loss
    opts = Options(ignore_index, float(label_smoothing), float(log_end), float(bonus_scale), bonus, float(gamma),
                   float(bonus_start), float(bonus_floor))
    use_triton = _use_triton(impl, t, opts)
    loss = fused_encouraging_loss(t.x, t.raw if t.hard else t.probs, weight, v, reduction,
                                  mean_normalizer(t, weight), opts, use_triton, t.all_valid)
    return t.finish(loss) if reduction == "none" else loss.to(t.out_dtype)


def _plain_kernel(impl: str, input: Tensor, target: Tensor, weight: Tensor | None,
                  bonus_weight: Tensor | str | None, ignore_index: int, label_smoothing: float, bonus: str,
                  log_end: float, bonus_scale: float, bonus_start: float, bonus_floor: float, log_probs: bool):
    """The kernel module that takes this call straight, skipping :func:`prepare`'s layout work (at 10 classes the
    Python and the small ops around a kernel cost as much as the kernel), or None: the compiled CPU kernel
    (:mod:`.cpu_kernel`) on the CPU, the few-launch Triton path (:mod:`.triton.loss`) on CUDA or, with
    ``impl='triton'``, under the interpreter. Both need eager ``(N, C)`` logits with ``C >= 2``, ``(N,)`` int64
    targets (the Triton path also ``(N, C)`` probabilities without an ``ignore_index`` >= 0) and plain ``(C,)``
    class and bonus weights (or ``'same'``) on the logits' device, none of them needing a gradient. Every other
    call, and every bad argument, takes the general path, which gives the errors; the kernels check the target
    range themselves."""
    if not (isinstance(input, Tensor) and isinstance(target, Tensor) and input.dim() == 2 and input.shape[1] >= 2):
        return None
    soft = target.is_floating_point()
    if not ((target.shape == input.shape if soft else (target.dtype == torch.int64 and target.dim() == 1
                                                        and target.shape[0] == input.shape[0]))
            and target.device == input.device and not target.requires_grad and not log_probs
            and _plain_vector(weight, input) and (_plain_vector(bonus_weight, input) or bonus_weight == "same")
            and not torch._C._are_functorch_transforms_active()):
        return None
    if input.device.type == "cpu" and impl in ("auto", "cpp"):
        if soft:
            return None
        usable = ((bonus_scale != 0.0 or impl == "cpp")
                  and cpu_kernel.unsupported(input, target, label_smoothing, bonus, log_end, bonus_start,
                                             bonus_floor) is None
                  and cpu_kernel.available())
        return cpu_kernel if usable else None
    if (impl in ("auto", "triton") and (input.device.type == "cuda" or impl == "triton") and input.shape[0] > 0
            and input.stride(1) == 1 and input.dtype in (torch.float32, torch.float16, torch.bfloat16)
            and bonus == "log" and bonus_start == 0.0 and (bonus_scale != 0.0 or impl == "triton")
            and (not soft or ignore_index < 0) and not torch.compiler.is_compiling()):
        from .triton import available, loss

        return loss if available(input.device) else None
    return None


def _plain_vector(vector: Tensor | str | None, input: Tensor) -> bool:
    """None, or a floating ``(C,)`` tensor on ``input``'s device that needs no gradient (False for a string, so
    that ``bonus_weight == 'same'`` is only compared for strings)."""
    return vector is None or (isinstance(vector, Tensor) and vector.is_floating_point() and vector.dim() == 1
                              and vector.shape[0] == input.shape[1] and vector.device == input.device
                              and not vector.requires_grad)


def _use_cpp(impl: str, t: Targets, label_smoothing: float, bonus: str, log_end: float, bonus_start: float,
             bonus_floor: float) -> bool:
    """Whether the compiled CPU kernel computes this call: for ``impl='cpp'`` (refused where it cannot), and for
    ``'auto'`` on the CPU wherever it applies and builds."""
    if impl not in ("cpp", "auto") or (impl == "auto" and t.x.device.type != "cpu"):
        return False
    why = cpu_kernel.unsupported(t.x, t.raw if t.hard else t.probs, label_smoothing, bonus, log_end, bonus_start,
                                 bonus_floor)
    if impl == "cpp" and why is not None:
        raise ValueError(f"impl='cpp' does not support {why}; use impl='torch' or 'auto'")
    if why is not None:
        return False
    reason = cpu_kernel.unavailable_reason()
    if impl == "cpp" and reason is not None:
        raise RuntimeError(f"impl='cpp' is unavailable: {reason}; use impl='torch' or 'auto'")
    return reason is None


def _triton_unsupported(t: Targets, opts: Options) -> str | None:
    """What keeps the Triton kernel from computing this call, or None."""
    x = t.x
    if x.dtype == torch.float64:
        return "float64 input"
    if not opts.triton_ready:
        return "a bonus other than 'log', or bonus_start > 0"
    if x.dim() == 2 and x.stride(1) != 1:
        return "non-contiguous rows"
    from .triton import available

    if not available(x.device):
        return f"a {x.device.type} tensor (the kernel needs CUDA and triton, or TRITON_INTERPRET=1)"
    return None


def _use_triton(impl: str, t: Targets, opts: Options) -> bool:
    """Whether the Triton kernel computes this call: for ``impl='triton'`` (refused where it cannot), and for
    ``'auto'`` on CUDA wherever it applies."""
    if impl == "torch" or (impl == "auto" and t.x.device.type != "cuda"):
        return False
    if impl == "auto" and t.x.dim() > 2:
        # Not timed on a GPU yet: K-dim input runs the kernel as (N d1 ..., C) rows, one program per row, which
        # may lose to the eager fused path where rows are a few classes (segmentation); GPU queue entry 8.
        return False
    why = _triton_unsupported(t, opts)
    if impl == "triton" and why is not None:
        raise ValueError(f"impl='triton' does not support {why}; use impl='torch' or 'auto'")
    return why is None
