r"""The encouraging loss and its logits gradient in closed form, computed together in the forward pass.

Written op by op with autograd, EL of ``(N, C)`` logits runs dozens of small ops and keeps their intermediates
for backward. Its gradient has a closed form, so forward can compute it beside the loss, as Liger-Kernel's
cross-entropy does, and backward only scales it by the upstream gradient. With
:math:`c_k = q_k(-w_k + \rho v_k \beta_k)`, :math:`\beta_k = p_k b'(p_k)` and the target distribution :math:`q`
(one-hot, smoothed, or given), the gradient of :math:`L = \sum_k q_k(-w_k \log p_k + \rho v_k b(p_k))` is

.. math::

    \partial L / \partial f = c - p \textstyle\sum_k c_k .

For a class-index target without smoothing :math:`c = c_y e_y` and the gradient is :math:`-c_y (p - e_y)`:
CE's gradient times a per-example multiplier, one pass over the logits after ``log_softmax``. Values follow
:func:`~encouraging.losses.encouraging_loss` term by term (exact target bonus, floored non-target bonus under
smoothing). :func:`loss_and_grad` is the PyTorch form (any device, float64 included); on CUDA the Triton kernel
of :mod:`encouraging.losses.triton` computes the same in one launch. :mod:`.linear` uses both on chunks of a
linear layer's output.

:func:`fused_encouraging_loss` wraps them for materialized logits: one ``torch.library`` custom op (so
``torch.compile(fullgraph=True)`` sees one opaque node) inside one autograd Function. It holds one ``(N, C)``
buffer from forward to backward (the gradient), as ``F.cross_entropy`` holds its log-probabilities. Backward
returns the gradient times the upstream one, a new buffer; when the upstream gradient is exactly 1
(``loss.backward()`` of a mean or sum; read on the CPU always, on a GPU for gradients of 2^24 elements and more,
where skipping a pass over them costs more than waiting for the GPU) it returns the saved gradient itself, which
autograd then hands to the logits without a copy (after ``retain_graph=True`` autograd copies it; only
``torch.autograd.grad`` with ``retain_graph=True`` returns the saved tensor itself, which must not be modified in
place before the next backward). It is first-order: ``create_graph=True`` through it raises
(``impl='autograd'`` has second derivatives).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .bonus import P_CAP, Bonus, BonusParams, bonus_value, dense_bonus_grad, dense_bonus_value, get_bonus


class Options(NamedTuple):
    """The loss options the closed form reads (see :func:`~encouraging.losses.encouraging_loss`);
    ``ignore_index=None``: the caller has checked that no element is ignored (no mask is built)."""

    ignore_index: int | None
    label_smoothing: float
    log_end: float
    bonus_scale: float
    bonus: str
    gamma: float
    bonus_start: float
    bonus_floor: float

    @property
    def params(self) -> BonusParams:
        return BonusParams(self.log_end, self.gamma, self.bonus_start, self.bonus_floor)

    @property
    def triton_ready(self) -> bool:
        """Whether the Triton kernel implements these options (the log bonus without a start shift)."""
        return self.bonus == "log" and self.bonus_start == 0.0


def _class_view(vector: Tensor, like: Tensor) -> Tensor:
    """A ``(C,)`` vector shaped to broadcast along dim 1 of ``like`` ``(N, C, *)``."""
    return vector.view((1, -1) + (1,) * (like.dim() - 2))


def _class_dot(x: Tensor, vector: Tensor) -> Tensor:
    """``sum_k x_k vector_k`` over dim 1 of ``(N, C, *)``: a matrix-vector product, no ``(N, C)`` temporary."""
    return x @ vector if x.dim() == 2 else x.movedim(1, -1) @ vector


def _target_beta(bonus: Bonus, log_p_y: Tensor, params: BonusParams) -> Tensor:
    """``p_y b'(p_y)`` of the target's exact bonus (not the full log bonus, see below): the registry's dense
    derivative, except where that one floors the log bonus (p > ``P_CAP`` = 1 - 1e-5, below a ``log_end`` in
    (P_CAP, 1)) and the exact bonus still has the slope ``-p / (1 - p)``."""
    beta = dense_bonus_grad(bonus, log_p_y, params)
    if bonus.name != "log" or params.log_end <= P_CAP:
        return beta
    log1m = torch.log(-torch.expm1(log_p_y))
    region = (log_p_y > math.log(P_CAP)) & (log_p_y <= math.log(params.log_end))
    if params.floor > 0.0:
        region &= log1m >= math.log(params.floor)
    if params.start > 0.0:
        region &= log_p_y >= math.log(params.start)
    return torch.where(region, -torch.exp(log_p_y - log1m), beta)


def _log_softmax(logits: Tensor) -> Tensor:
    """float32 (float64 stays) log-probabilities over dim 1: half precision is read once, never copied."""
    return torch.log_softmax(logits, 1, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)


class _Target(NamedTuple):
    """The target column of a batch: ``valid`` (not ``ignore_index``; None when no element is ignored),
    ``index`` ``(N, 1, *)`` (ignored elements at class 0, safe to gather), ``log_p_y``, and the target's class and
    bonus weights (1.0 without them)."""

    valid: Tensor | None
    index: Tensor
    log_p_y: Tensor
    w_y: Tensor | float
    v_y: Tensor | float


def _target(log_p: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
            ignore_index: int | None) -> _Target:
    valid = target != ignore_index if ignore_index is not None else None
    flat = torch.where(valid, target, 0) if valid is not None else target
    index = flat.unsqueeze(1)
    return _Target(valid, index, log_p.gather(1, index).squeeze(1),
                   class_weight[flat] if class_weight is not None else 1.0,
                   bonus_weight[flat] if bonus_weight is not None else 1.0)


def _masked(x: Tensor, valid: Tensor | None) -> Tensor:
    """``x`` with ignored elements set to 0 (each eager op costs microseconds: none when nothing is ignored)."""
    return x if valid is None else torch.where(valid, x, 0.0)


def _as(x: Tensor | float, dtype: torch.dtype) -> Tensor | float:
    """``x.to(dtype)``, without the dispatch when it already has it (a float stays)."""
    return x if not isinstance(x, Tensor) or x.dtype == dtype else x.to(dtype)


def _column(x: Tensor | float) -> Tensor | float:
    """A per-element ``(N, *)`` tensor shaped to broadcast along dim 1; a 0-d one or a float as it is."""
    return x.unsqueeze(1) if isinstance(x, Tensor) and x.dim() else x


def _scale(token_grad: Tensor | float, valid: Tensor | None, dtype: torch.dtype) -> Tensor | float:
    """The per-element upstream gradient ``token_grad`` (a float, or a tensor broadcastable to the target) in
    ``dtype``, 0 at ignored elements."""
    if isinstance(token_grad, float):
        return token_grad if valid is None else valid.to(dtype).mul_(token_grad)
    return _masked(_as(token_grad, dtype), valid)


def _times(x: Tensor, factor: Tensor | float) -> Tensor:
    """``x * factor``, skipping the op for the factor 1.0 (no class or bonus weights)."""
    return x if isinstance(factor, float) and factor == 1.0 else x * factor


def _tiny(dtype: torch.dtype) -> float:
    """A floor for a sum of probabilities computed as ``exp(log p)``: above it, every term that matters is a
    normal float (below, ``exp`` underflows and the sum must be taken by ``logsumexp``)."""
    return 1e-30 if dtype != torch.float64 else 1e-290


def _others(logits: Tensor, log_p: Tensor, index: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | float]:
    r"""The other classes' probabilities, :math:`1 - p_y` and its log computed exactly (from their sum, no
    cancellation), and a per-row divisor: :math:`p_k /` ``divisor`` is the softmax over the other classes (0 at
    the target).

    On the CPU the sum of :math:`p_k = \exp(\log p_k)` is taken directly, over ``log_p`` in place, unless a row's
    sum falls below :func:`_tiny` (one host read, free on the CPU); then, as on accelerators (no sync),
    ``logsumexp`` over log-probabilities recomputed from ``logits``."""
    if logits.device.type == "cpu" and log_p.numel():
        probs = log_p.exp_().scatter_(1, index, 0.0)
        one_minus = probs.sum(1)
        if float(one_minus.min()) > _tiny(probs.dtype):
            return probs, one_minus, torch.log(one_minus), one_minus
        log_p = _log_softmax(logits)
    log_p_other = log_p.scatter_(1, index, -math.inf)
    log1m = torch.logsumexp(log_p_other, 1)
    return log_p_other.sub_(log1m.unsqueeze(1)).exp_(), torch.exp(log1m), log1m, 1.0


def _plain_loss_and_grad(logits: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                         token_grad: Tensor | None, opts: Options) -> tuple[Tensor, Tensor | None]:
    r""":func:`loss_and_grad` of the log bonus without smoothing or start shift, in few passes over ``(N, C)``
    and few ops (at 10 classes each eager op costs as much as the arithmetic).

    Conservative (``log_end < 1``), with :math:`\bar p = \min(p_y, LE)`: :math:`b = \log(1 - \bar p) - (p_y -
    \bar p) / (1 - LE)`; the gradient is :math:`s\,(p - e_y)` with :math:`s = w_y + \rho v_y p_y / (1 - \bar p)`,
    its target column :math:`-s\,(1 - p_y)` with the exact :math:`1 - p_y`. Full (``log_end = 1``):
    :math:`b = \log(1 - p_y)` exactly (the other classes' probability sum); with :math:`r = w_y (1 - p_y) + \rho
    v_y p_y` the gradient is :math:`r\, p_k / (1 - p_y)` off the target and :math:`-r` on it, bounded for any
    logits (``bonus_floor`` switches the bonus off where :math:`1 - p_y <` floor)."""
    log_p = _log_softmax(logits)
    valid, index, log_p_y, w_y, v_y = _target(log_p, target, class_weight, bonus_weight, opts.ignore_index)
    v_y = opts.bonus_scale * v_y
    if opts.log_end == 1.0:
        others, one_minus, log1m, divisor = _others(logits, log_p, index)
        bonus, slope = log1m, v_y
        if opts.bonus_floor > 0.0:  # the clamped bonus is the constant log(floor) where 1 - p_y < floor
            bonus = log1m.clamp(min=math.log(opts.bonus_floor))
            slope = torch.where(one_minus >= opts.bonus_floor, v_y, 0.0)
    else:
        gap = 1.0 - opts.log_end
        one_minus = torch.expm1(log_p_y).neg_()
        capped = one_minus.clamp(min=gap)
        bonus = torch.log(capped).add_(one_minus - capped, alpha=1.0 / gap)
    loss = _masked(_times(bonus, v_y).sub_(_times(log_p_y, w_y)), valid)
    if token_grad is None:
        return loss, None
    scale = _scale(token_grad, valid, log_p.dtype)
    p_y = log_p_y.exp_()  # log p_y is spent (the ops here cost more than their arithmetic: none allocates)
    if opts.log_end == 1.0:
        # r over the computed total probability, one_minus + p_y = 1 up to log_softmax's rounding: the same
        # relative error then cancels (r is exactly w_y where w_y = slope), as it does in p_k / divisor
        r = torch.add(_times(one_minus, w_y), _times(p_y, slope)).div_(one_minus + p_y).mul_(scale)
        grad = others.mul_((r / divisor).unsqueeze(1))
        target_column = r.neg_()
    else:
        s = _times(p_y.div_(capped), v_y).add_(w_y).mul_(scale)
        grad = log_p.exp_().mul_(s.unsqueeze(1))
        target_column = s.mul_(one_minus).neg_()
    grad.scatter_(1, index, target_column.unsqueeze(1))
    return loss, _as(grad, logits.dtype)


def _smoothed_loss_and_grad(logits: Tensor, target: Tensor, class_weight: Tensor | None,
                            bonus_weight: Tensor | None, token_grad: Tensor | None,
                            opts: Options) -> tuple[Tensor, Tensor | None]:
    r""":func:`loss_and_grad` of the conservative log bonus with label smoothing (the paper's translation
    setting), in two ``(N, C)`` buffers: the log-probabilities, turned into probabilities in place, and
    :math:`1 - u` with :math:`u_k = \min(p_k, LE)`, turned into the gradient.

    The other classes' bonus is :math:`\sum_{k \ne y} v_k b(p_k) = \sum v_k \log(1 - u_k) - \sum v_k
    (p_k - LE)^+ / (1 - LE)`, their :math:`\beta_k = -p_k / (1 - u_k)`; the target's terms are exact, as in
    :func:`_plain_loss_and_grad`. Without bonus weights the log-sum is the log of a product (one read, no
    elementwise log: the factors lie in :math:`[1 - LE, 1]` and the product stays above :math:`LE(1 - LE)`), and
    for :math:`LE \ge 1/2` at most one other class can pass ``LE``, so the excess is that of the largest."""
    log_p = _log_softmax(logits)
    vocab = log_p.shape[1]
    le, eps, rho = opts.log_end, opts.label_smoothing, opts.bonus_scale
    gain, share = 1.0 - eps + eps / vocab, eps / vocab  # q_y and q_k for k != y
    valid, index, log_p_y, w_y, v_y = _target(log_p, target, class_weight, bonus_weight, opts.ignore_index)

    def dot(x: Tensor, vector: Tensor | None) -> Tensor:
        return _class_dot(x, vector) if vector is not None else x.sum(1)

    ce_all = dot(log_p, class_weight)  # sum_k w_k log p_k
    probs = log_p.exp_().scatter_(1, index, 0.0)  # the other classes' p (the target's terms are exact, below)
    kept = torch.rsub(probs, 1.0).clamp_(min=1.0 - le)  # 1 - u
    log_kept = torch.log(kept.prod(1)) if bonus_weight is None else dot(torch.log(kept), bonus_weight)
    if le >= 0.5 and bonus_weight is None:
        excess = probs.amax(1).sub_(le).clamp_(min=0.0)
    else:
        excess = dot(torch.sub(probs, le).clamp_(min=0.0), bonus_weight)
    one_minus = torch.expm1(log_p_y).neg_()
    capped = one_minus.clamp(min=1.0 - le)
    bonus_y = torch.log(capped).add_(one_minus - capped, alpha=1.0 / (1.0 - le))
    loss = bonus_y.mul_(rho * gain * v_y).add_(log_kept.sub_(excess, alpha=1.0 / (1.0 - le)), alpha=rho * share)
    loss = _masked(loss.sub_(_times(log_p_y, (1.0 - eps) * w_y)).sub_(ce_all, alpha=share), valid)
    if token_grad is None:
        return loss, None
    scale = _scale(token_grad, valid, probs.dtype)
    ratio = torch.div(probs, kept, out=kept)  # -beta_k
    if bonus_weight is not None:
        ratio.mul_(_class_view(bonus_weight, ratio))
    # c_k = -share (rho v_k ratio_k + w_k) off the target (0 on it), c_y = gain (rho v_y beta_y - w_y)
    w_other = (class_weight.sum() if class_weight is not None else float(vocab)) - w_y  # sum_{k != y} w_k
    c_other = ratio.sum(1).mul_(rho).add_(w_other).mul_(-share)
    p_y = torch.exp(log_p_y)
    c_y = (p_y / capped).mul_(-rho * v_y).sub_(w_y).mul_(gain)
    # grad_k = scale (c_k - p_k (c_other + c_y)) off the target
    grad = ratio.mul_(_column(scale * (-share * rho)))
    if class_weight is None:
        grad.sub_(_column(scale * share))
    elif isinstance(scale, float):
        grad.sub_(_class_view(class_weight, grad), alpha=share * scale)
    else:
        grad.addcmul_(_class_view(class_weight, grad), _column(scale), value=-share)
    grad.addcmul_(probs, _column((c_other + c_y).mul_(scale)), value=-1.0)
    # the target column c_y (1 - p_y) - p_y sum_{k != y} c_k, with the exact 1 - p_y
    grad.scatter_(1, index, _column(c_y.mul_(one_minus).sub_(p_y.mul_(c_other)).mul_(scale)))
    return loss, _as(grad, logits.dtype)


def loss_and_grad(logits: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                  token_grad: Tensor | None, opts: Options) -> tuple[Tensor, Tensor | None]:
    r"""Per-element loss ``(N, *)`` (float32 or float64) of logits ``(N, C, *)`` against class indices ``(N, *)``
    and, when ``token_grad`` (broadcastable to the target) is given, :math:`\partial \sum_i s_i L_i /
    \partial f` in the logits' dtype (``s`` = ``token_grad``, 0 at ignored elements).

    The full log bonus of the target, :math:`A \log(1 - p_y) = A(\operatorname{lse}_{k \ne y} f_k -
    \operatorname{lse} f)` with :math:`A = \rho q_y v_y`, is kept out of :math:`c_y` (its :math:`\beta_y = -p_y /
    (1 - p_y)` overflows as :math:`p_y \to 1`): its gradient :math:`A(p^{\ne y} - p)`, with :math:`p^{\ne y}`
    the softmax over the other classes, is bounded for any logits. No autograd: it runs below autograd.
    """
    if (opts.label_smoothing == 0.0 and opts.bonus == "log" and opts.bonus_start == 0.0 and opts.bonus_scale != 0.0
            and (opts.log_end == 1.0 or opts.bonus_floor <= 1.0 - opts.log_end)):  # a floor below 1 - LE never acts
        return _plain_loss_and_grad(logits, target, class_weight, bonus_weight, token_grad, opts)
    if (opts.bonus == "log" and opts.bonus_start == 0.0 and opts.log_end <= P_CAP
            and opts.bonus_floor <= 1.0 - opts.log_end):  # every class's bonus exact, no floor acting
        return _smoothed_loss_and_grad(logits, target, class_weight, bonus_weight, token_grad, opts)
    log_p = _log_softmax(logits)
    vocab = log_p.shape[1]
    valid, index, log_p_y, w_y, v_y = _target(log_p, target, class_weight, bonus_weight, opts.ignore_index)
    bonus, params = get_bonus(opts.bonus), opts.params
    eps, rho = opts.label_smoothing, opts.bonus_scale
    gain, share = 1.0 - eps + eps / vocab, eps / vocab  # q_y and q_k for k != y
    full = opts.bonus == "log" and opts.log_end == 1.0 and rho != 0.0
    # exact log(1 - p_y) = logsumexp_{k != y} log p_k, and the other classes' log-softmax
    log_p_other = log_p.scatter(1, index, -math.inf) if full else None
    log1m = torch.logsumexp(log_p_other, 1) if full else None
    loss = -(1.0 - eps) * w_y * log_p_y
    if rho != 0.0:
        loss = loss + rho * gain * v_y * bonus_value(bonus, log_p_y, log1m, params)
    if full:
        active = torch.ones_like(log_p_y, dtype=torch.bool)
        if params.floor > 0.0:  # the clamped bonus is constant below the floor
            active &= log1m >= math.log(params.floor)
        if params.start > 0.0:
            active &= log_p_y >= math.log(params.start)
        full_coef = active.to(log_p.dtype) * (rho * gain * v_y)
        c_y = -gain * w_y * torch.ones_like(log_p_y)
    else:
        full_coef = 0.0
        c_y = -gain * w_y if rho == 0.0 else gain * (-w_y + rho * v_y * _target_beta(bonus, log_p_y, params))
        c_y = c_y * torch.ones_like(log_p_y)
    if eps > 0.0:
        w = class_weight if class_weight is not None else log_p.new_ones(vocab)
        v = bonus_weight if bonus_weight is not None else log_p.new_ones(vocab)
        loss = loss - share * _class_dot(log_p, w)
        if rho != 0.0:
            own = dense_bonus_value(bonus, log_p_y.unsqueeze(1), params).squeeze(1)
            loss = loss + rho * share * (_class_dot(dense_bonus_value(bonus, log_p, params), v) - v_y * own)
    loss = _masked(loss, valid)
    if token_grad is None:
        return loss, None
    scale = _scale(token_grad, valid, log_p.dtype)
    # The target column is c_y (1 - p_y) - p_y (sum_{k != y} c_k + A), with the exact 1 - p_y: as
    # c_y - p_y sum_k c_k it would cancel catastrophically when p_y -> 1.
    one_minus = torch.exp(log1m) if full else -torch.expm1(log_p_y)
    p_y = torch.exp(log_p_y)
    if eps > 0.0:
        c = dense_bonus_grad(bonus, log_p, params).mul_(_class_view(rho * v, log_p)) if rho != 0.0 else None
        c = (c.sub_(_class_view(w, log_p)) if c is not None else -_class_view(w, log_p).expand_as(log_p).clone())
        c.mul_(share).scatter_(1, index, 0.0)
        c_other = c.sum(1)
        grad = c.sub_(log_p.exp_().mul_((c_other + c_y + full_coef).unsqueeze(1))).mul_(_column(scale))
    else:  # c = c_y e_y: the gradient is -c_y (p - e_y), EL's per-token multiplier times CE's gradient
        c_other = 0.0
        grad = log_p.exp_().mul_((-(c_y + full_coef) * scale).unsqueeze(1))
    if full:  # + A p^{!=y}: exp(log p_k - log(1 - p_y)) = p_k / (1 - p_y) <= 1, 0 at y
        grad.add_(log_p_other.sub_(log1m.unsqueeze(1)).exp_().mul_((full_coef * scale).unsqueeze(1)))
    grad.scatter_(1, index, ((c_y * one_minus - p_y * (c_other + full_coef)) * scale).unsqueeze(1))
    return loss, grad.to(logits.dtype)


def soft_loss_and_grad(logits: Tensor, probs: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                       token_grad: Tensor | None, opts: Options) -> tuple[Tensor, Tensor | None]:
    r""":func:`loss_and_grad` for probability targets ``probs`` (the logits' shape): :math:`q` is ``probs``
    smoothed, every class's bonus is the floored dense one (as :func:`~encouraging.losses.encouraging_loss`)."""
    log_p = _log_softmax(logits)
    vocab = log_p.shape[1]
    bonus, params = get_bonus(opts.bonus), opts.params
    eps, rho = opts.label_smoothing, opts.bonus_scale
    q = probs.to(log_p.dtype)
    if eps > 0.0:
        q = q * (1.0 - eps) + eps / vocab
    w = _class_view(class_weight, log_p) if class_weight is not None else 1.0
    v = _class_view(bonus_weight, log_p) if bonus_weight is not None else 1.0
    # c_k = q_k (-w_k + rho v_k beta_k); the loss sum_k q_k (-w_k log p_k + rho v_k b(p_k))
    terms = log_p * -w
    if rho != 0.0:
        terms = terms.add_(dense_bonus_value(bonus, log_p, params).mul_(rho * v))
    loss = (terms.mul_(q)).sum(1)
    if token_grad is None:
        return loss, None
    c = dense_bonus_grad(bonus, log_p, params).mul_(rho * v).sub_(w) if rho != 0.0 else -w * torch.ones_like(log_p)
    c.mul_(q)
    scale = _column(_scale(token_grad, None, log_p.dtype))
    grad = c.sub_(log_p.exp_().mul_(c.sum(1, keepdim=True))).mul_(scale)
    return loss, grad.to(logits.dtype)


def triton_loss_and_grad(logits: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                         token_grad: Tensor | None, opts: Options) -> tuple[Tensor, Tensor | None]:
    """:func:`loss_and_grad` (or :func:`soft_loss_and_grad` for probability targets) by the Triton kernels
    (``opts.triton_ready``). ``(N, C, d1, ..., dK)`` logits are computed as ``(N d1 ... dK, C)`` rows: a copy with
    the classes last (the kernel reads a row's classes contiguously), which then takes the gradient in place, so
    the call holds one ``(N, C, *)`` buffer, as ``F.cross_entropy`` holds its log-probabilities; logits already
    laid out with the classes last (channels-last) are read as they are."""
    from .triton import el_loss_and_grad

    positions = (logits.shape[0],) + tuple(logits.shape[2:])
    rows, inplace = logits, False
    if logits.dim() > 2:
        classes_last = logits.movedim(1, -1)
        inplace = not classes_last.is_contiguous()  # reshape copies: the copy is ours to overwrite
        rows = classes_last.reshape(-1, logits.shape[1])
        target = target.movedim(1, -1).reshape(rows.shape) if target.is_floating_point() else target.reshape(-1)
    scale = (torch.as_tensor(token_grad, dtype=torch.float32, device=logits.device).expand(positions)
             .reshape(-1).contiguous() if token_grad is not None else None)
    loss, grad = el_loss_and_grad(
        rows, target, class_weight, opts.ignore_index if opts.ignore_index is not None else -1,
        opts.label_smoothing, log_end=opts.log_end,
        bonus_scale=opts.bonus_scale, bonus_weight=bonus_weight, bonus_floor=opts.bonus_floor, grad_scale=scale,
        compute_grad=token_grad is not None, inplace=inplace)
    if logits.dim() > 2:
        loss = loss.view(positions)
        grad = grad.view(positions + (logits.shape[1],)).movedim(-1, 1) if grad is not None else None
    return loss, grad


def _any_loss_and_grad(
    logits: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
    token_grad: Tensor | None, ignore_index: int | None, label_smoothing: float, log_end: float, bonus_scale: float,
    bonus: str, gamma: float, bonus_start: float, bonus_floor: float, use_triton: bool,
) -> tuple[Tensor, Tensor]:
    """Per-element losses and, with ``token_grad``, their weighted sum's logits gradient (else an empty tensor)."""
    opts = Options(ignore_index, label_smoothing, log_end, bonus_scale, bonus, gamma, bonus_start, bonus_floor)
    if use_triton:
        compute = triton_loss_and_grad
    else:
        compute = soft_loss_and_grad if target.is_floating_point() else loss_and_grad
    loss, grad = compute(logits, target, class_weight, bonus_weight, token_grad, opts)
    return loss, grad if grad is not None else logits.new_empty(0)


_el_loss_and_grad = torch.library.custom_op("encouraging::el_loss_and_grad", _any_loss_and_grad, mutates_args=())


@_el_loss_and_grad.register_fake
def _(logits, target, class_weight, bonus_weight, token_grad, *args):
    shape = (logits.shape[0],) + tuple(logits.shape[2:])
    loss = logits.new_empty(shape, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    return loss, torch.empty_like(logits) if token_grad is not None else logits.new_empty(0)


# Reading a CUDA scalar waits for the GPU (Liger-Kernel's cross-entropy does it on every call); skipping the
# multiplication saves a read and a write of the gradient, so it pays from about 2^24 elements (64 MB in float32:
# ~45 us of H100 memory traffic) up; below, the multiplication is cheaper than the wait.
_SYNC_WORTH = 1 << 24


def _worth_reading(grad_out: Tensor, grad: Tensor) -> bool:
    """Whether backward reads the upstream gradient's value to skip the multiplication by 1: always on the CPU
    (no wait), on an accelerator for large gradients, never while compiling (no data-dependent branch) or while a
    CUDA graph is being captured (no host read allowed)."""
    if torch.compiler.is_compiling():
        return False
    if grad_out.device.type == "cpu":
        return True
    capturing = grad_out.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return grad.numel() >= _SYNC_WORTH and not capturing


class _FusedEncouragingLoss(torch.autograd.Function):
    """Forward returns the per-element losses (``per_element``) or their sum scaled by ``token_grad`` and saves
    the gradient of that; backward returns it times the upstream gradient (a new tensor, so the saved one stays
    valid for ``retain_graph``: one ``(N, C)`` buffer held and one made, as ``F.cross_entropy``'s backward), or
    the saved gradient itself when the upstream gradient of a reduced loss is exactly 1 (:func:`_worth_reading`)."""

    @staticmethod
    def forward(ctx, logits, target, class_weight, bonus_weight, token_grad, per_element, opts, use_triton):
        needs = bool(ctx.needs_input_grad[0])
        # the custom op is for torch.compile (one opaque node); eager calls skip its dispatch (tens of us)
        compute = _any_loss_and_grad
        if torch.compiler.is_compiling():
            compute = _el_loss_and_grad
            token_grad = torch.as_tensor(token_grad, device=logits.device,
                                         dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
        loss, grad = compute(logits, target, class_weight, bonus_weight, token_grad if needs else None, *opts,
                             use_triton)
        if needs:
            ctx.save_for_backward(grad)
        ctx.per_element = per_element
        # out of place: torch 2.11's Dynamo drops the gradient of a Function whose forward output is modified in
        # place (all-zero gradients under torch.compile; fixed in later releases)
        return loss if per_element else loss.sum() * _as(token_grad, loss.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return saved_grad_times(ctx, grad_out), None, None, None, None, None, None, None


def saved_grad_times(ctx, grad_out: Tensor) -> Tensor:
    """Backward of a fused loss: the gradient its forward saved (``ctx.saved_tensors``) times ``grad_out``, one
    per row when ``ctx.per_element``; the saved tensor itself when a reduced loss's upstream gradient is exactly 1
    (:func:`_worth_reading`). Refuses ``create_graph=True`` (first-order only)."""
    if torch.is_grad_enabled():  # autograd runs backward in grad mode only for create_graph=True
        raise RuntimeError("the fused encouraging loss is first-order: for second derivatives "
                           "(create_graph=True) compute it with impl='autograd'")
    (grad,) = ctx.saved_tensors
    if not ctx.per_element and _worth_reading(grad_out, grad) and float(grad_out) == 1.0:
        # loss.backward() of the loss itself: the saved gradient is the answer. Autograd releases the saved
        # tensor before passing this on, so the leaf takes it without a copy (with retain_graph it copies).
        return grad
    scale = grad_out.unsqueeze(1) if ctx.per_element else grad_out
    return grad * scale.to(grad.dtype)


def fused_encouraging_loss(logits: Tensor, target: Tensor, class_weight: Tensor | None,
                           bonus_weight: Tensor | None, reduction: str, normalizer: Tensor | float, opts: Options,
                           use_triton: bool, all_valid: bool = False) -> Tensor:
    """The loss of batched logits ``(N, C, *)`` (checked by the caller) through :class:`_FusedEncouragingLoss`:
    ``reduction`` ``'none'``, ``'sum'`` or ``'mean'`` (the sum divided by ``normalizer``), float32 or float64;
    ``all_valid``: the caller has checked that no target is ``ignore_index`` (no mask is built)."""
    if all_valid:
        opts = opts._replace(ignore_index=None)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    scale = 1.0 / normalizer if reduction == "mean" else 1.0
    # a float where it can be (the sum over an unweighted batch): a 0-d tensor costs microseconds per use
    token_grad = _as(scale, dtype) if isinstance(scale, Tensor) else scale
    cw, bw = (x.to(device=logits.device, dtype=dtype) if x is not None else None for x in (class_weight, bonus_weight))
    return _FusedEncouragingLoss.apply(logits, target, cw, bw, token_grad, reduction == "none", opts, use_triton)
