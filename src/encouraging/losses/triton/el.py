r"""Online-softmax kernel of the encouraging loss (log bonus): per-row loss and logits gradient in one launch.

One program per row (token) of a ``(N, V)`` block of logits. With :math:`q` the (smoothed) target distribution,
class weights :math:`w`, bonus weights :math:`v` and :math:`\beta_k = p_k b'(p_k) = \partial b / \partial \log p_k`:

.. math::

    L = \sum_k q_k \left(-w_k \log p_k + \rho v_k b(p_k)\right), \qquad
    \frac{\partial L}{\partial f_j} = c_j - p_j \sum_k c_k, \quad c_k = q_k (-w_k + \rho v_k \beta_k).

Passes over the row (each reads ``V`` logits):

1. online max and sum of exponentials, so ``lse``; for the full bonus (``log_end=1``) a second online sum over
   the classes other than the target gives the exact :math:`\log(1 - p_y) = \operatorname{lse}_{k \ne y} f_k -
   \operatorname{lse}`; with smoothing, :math:`\sum_k w_k f_k` for the CE term (linear in :math:`\log p_k`).
2. label smoothing only: the bonus of every non-target class and :math:`\sum_k c_k` (the one extra reduction
   over the vocabulary). Without smoothing :math:`c = c_y e_y`, so :math:`\sum_k c_k = c_y` is known after pass 1:
   the gradient is :math:`s(p_y)(p - e_y)` with :math:`s = -c_y`, EL's per-example multiplier.
3. the gradient, times the row's upstream scale, written to the output (the logits buffer itself with
   ``inplace=True``: every element is read before it is written, by the same program).

Numerics match :func:`encouraging.losses.encouraging_loss`: float32 inside for every input dtype, the target's
bonus exact, the non-target (smoothing) log bonus floored at :math:`1 - p \ge 10^{-5}` as in the paper's code.
Probability targets (mixup, cutmix, distillation) take a second kernel with the same passes, every class's bonus
the floored one (no class is the target).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._checks import check_class_vector, check_floating, check_range
from ..bonus import P_CAP


@triton.jit
def _dense_bonus(p, log_end, cap, FULL: tl.constexpr, one_minus=None):
    """b(p) and p b'(p) of the floored log bonus for the non-target classes (bonus.py's dense form); with
    ``one_minus``, 1 - p as the caller computed it exactly. (Two spellings of the same expressions: the first
    is the one the class-index kernel was measured with; ptxas allocates registers differently for the second.)"""
    if one_minus is None:
        value = tl.log(1.0 - tl.minimum(p, tl.minimum(log_end, cap)))
        beta = tl.where((p <= log_end) & (p <= cap), -p / (1.0 - tl.minimum(p, log_end)), 0.0)
    else:
        value = tl.log(tl.maximum(one_minus, 1.0 - tl.minimum(log_end, cap)))
        beta = tl.where((p <= log_end) & (p <= cap), -p / tl.maximum(one_minus, 1.0 - log_end), 0.0)
    if not FULL:
        past = p > log_end
        value += tl.where(past, (p - log_end) / (log_end - 1.0), 0.0)
        beta += tl.where(past, p / (log_end - 1.0), 0.0)
    return value, beta


@triton.jit
def _smoothed_target(q_row, offs, mask, eps, V):
    """A block of a row of probability targets, smoothed: (1 - eps) t + eps / V, 0 in masked lanes."""
    return tl.where(mask, tl.load(q_row + offs, mask=mask, other=0.0).to(tl.float32) * (1.0 - eps) + eps / V, 0.0)


@triton.jit
def _el_kernel(
    x_ptr, x_stride, g_ptr, g_stride, y_ptr, scale_ptr, scale_stride, w_ptr, v_ptr, loss_ptr,
    V, ignore_index, eps, rho, log_end, cap, log_floor,
    HAS_W: tl.constexpr, HAS_V: tl.constexpr, HAS_SCALE: tl.constexpr, SCALE_LOSS: tl.constexpr,
    SMOOTH: tl.constexpr, FULL: tl.constexpr, HAS_FLOOR: tl.constexpr, COMPUTE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # int64: row * stride overflows int32 once N * V > 2^31 (16k tokens at V = 128k).
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    g_row = g_ptr + row * g_stride
    y = tl.load(y_ptr + row)
    if HAS_SCALE:  # per row (scale_stride 1) or one for all rows (0: the 'mean' reciprocal)
        scale = tl.load(scale_ptr + row * scale_stride)
    else:
        scale = 1.0
    if (y == ignore_index) | (y < 0) | (y >= V):
        # ignored: loss and gradient 0. Out of range (the caller asserts on it; never read out of bounds): NaN.
        fill = tl.where(y == ignore_index, 0.0, float("nan"))
        # times the shared scale: 0 * inf = NaN is torch's 'mean' of an all-ignored batch (0 / 0)
        tl.store(loss_ptr + row, fill * scale if SCALE_LOSS else fill)
        if COMPUTE_GRAD:
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                tl.store(g_row + offs, (tl.zeros([BLOCK], tl.float32) + fill).to(g_ptr.dtype.element_ty),
                         mask=offs < V)
        return

    # ---- pass 1: lse (online), lse over k != y (full bonus), sum_k w_k f_k (smoothing)
    m = -float("inf")
    s = 0.0
    m_o = -float("inf")
    s_o = 0.0
    sum_wf = 0.0
    sum_w = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        f = tl.load(x_row + offs, mask=mask, other=-float("inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(f, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(f - m_new), 0)
        m = m_new
        if FULL:
            f_o = tl.where(offs == y, -float("inf"), f)
            m_o_new = tl.maximum(m_o, tl.max(f_o, 0))
            ref = tl.where(m_o_new == -float("inf"), 0.0, m_o_new)  # a block holding only y: no -inf - -inf
            s_o = s_o * tl.exp(m_o - ref) + tl.sum(tl.exp(f_o - ref), 0)
            m_o = m_o_new
        if SMOOTH:
            if HAS_W:
                w = tl.load(w_ptr + offs, mask=mask, other=0.0)
                sum_wf += tl.sum(w * tl.where(mask, f, 0.0), 0)
                sum_w += tl.sum(w, 0)
            else:
                sum_wf += tl.sum(tl.where(mask, f, 0.0), 0)
    lse = m + tl.log(s)
    log_p_y = tl.load(x_row + y).to(tl.float32) - lse
    p_y = tl.exp(log_p_y)
    if HAS_W:
        w_y = tl.load(w_ptr + y)
    else:
        w_y = 1.0
        sum_w = V * 1.0
    if HAS_V:
        v_y = tl.load(v_ptr + y)
    else:
        v_y = 1.0

    # ---- the target's bonus b(p_y) and beta_y = p_y b'(p_y), exact. The full bonus A log(1 - p_y), A = rho q_y
    # v_y, stays out of c_y (beta_y = -p_y / (1 - p_y) overflows as p_y -> 1): its gradient is A (p_other - p),
    # p_other the softmax over the classes k != y, bounded for any logits.
    gain = 1.0 - eps + eps / V  # q_y
    if FULL:
        lse_o = m_o + tl.log(s_o)
        head = lse_o - lse
        one_minus = tl.exp(head)
        full_coef = rho * gain * v_y
        if HAS_FLOOR:  # the paper's clamp log(max(1 - p, floor)): constant, so no gradient, below the floor
            full_coef = tl.where(head < log_floor, 0.0, full_coef)
            head = tl.maximum(head, log_floor)
        tangent = 0.0
        beta_y = 0.0
    else:
        lse_o = 0.0
        full_coef = 0.0
        one_minus = 1.0 - p_y  # c_y is at most 1 / (1 - LE) here: no cancellation to amplify
        clamped = tl.minimum(p_y, log_end)
        head = tl.log(1.0 - clamped)
        beta_head = tl.where(p_y <= log_end, -p_y / (1.0 - clamped), 0.0)
        if HAS_FLOOR:
            beta_head = tl.where(head < log_floor, 0.0, beta_head)
            head = tl.maximum(head, log_floor)
        past = p_y > log_end
        tangent = tl.where(past, (p_y - log_end) / (log_end - 1.0), 0.0)
        beta_y = beta_head + tl.where(past, p_y / (log_end - 1.0), 0.0)
    loss = -(1.0 - eps) * w_y * log_p_y + rho * gain * v_y * (head + tangent)
    c_y = gain * (-w_y + rho * v_y * beta_y)
    c_other = 0.0  # sum of c_k over k != y

    # ---- pass 2 (smoothing): the non-target classes' bonus and their share of sum_k c_k
    share = eps / V
    if SMOOTH:
        loss += -share * (sum_wf - lse * sum_w)
        dense = 0.0
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            keep = (offs < V) & (offs != y)
            p = tl.exp(tl.load(x_row + offs, mask=keep, other=0.0).to(tl.float32) - lse)
            value, beta = _dense_bonus(p, log_end, cap, FULL)
            w = tl.load(w_ptr + offs, mask=keep, other=0.0) if HAS_W else 1.0
            v = tl.load(v_ptr + offs, mask=keep, other=0.0) if HAS_V else 1.0
            dense += tl.sum(tl.where(keep, v * value, 0.0), 0)
            c_other += tl.sum(tl.where(keep, share * (-w + rho * v * beta), 0.0), 0)
        loss += rho * share * dense
    tl.store(loss_ptr + row, loss * scale if SCALE_LOSS else loss)

    # ---- pass 3: d L / d f_j = c_j - p_j sum_k c_k, times the row's upstream gradient. The target's entry is
    # c_y (1 - p_y) - p_y sum_{k != y} c_k with the exact 1 - p_y: c_y - p_y sum_k c_k would cancel
    # catastrophically as p_y -> 1 under the full bonus, where c_y ~ -1 / (1 - p_y).
    if COMPUTE_GRAD:
        c_sum = c_y + c_other + full_coef
        grad_y = c_y * one_minus - p_y * (c_other + full_coef)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < V
            f = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(f - lse)
            if SMOOTH:
                _, beta = _dense_bonus(p, log_end, cap, FULL)
                w = tl.load(w_ptr + offs, mask=mask, other=0.0) if HAS_W else 1.0
                v = tl.load(v_ptr + offs, mask=mask, other=0.0) if HAS_V else 1.0
                grad = share * (-w + rho * v * beta) - p * c_sum
            else:
                grad = -p * c_sum
            if FULL:
                grad += full_coef * tl.exp(f - lse_o)
            grad = tl.where(offs == y, grad_y, grad) * scale
            tl.store(g_row + offs, grad.to(g_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _el_soft_kernel(
    x_ptr, x_stride, g_ptr, g_stride, q_ptr, q_stride, scale_ptr, scale_stride, w_ptr, v_ptr, loss_ptr,
    V, eps, rho, log_end, cap,
    HAS_W: tl.constexpr, HAS_V: tl.constexpr, HAS_SCALE: tl.constexpr, SCALE_LOSS: tl.constexpr,
    FULL: tl.constexpr, COMPUTE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    # Probability targets t: q = (1 - eps) t + eps / V, every class's bonus the floored dense one. Pass 1: lse,
    # sum_k q_k w_k f_k and sum_k q_k w_k (the CE term, linear in log p); pass 2: the bonus and sum_k c_k; pass 3:
    # the gradient c - p sum_k c_k. 1 - p_k is exact for every class: pass 1 keeps the largest logit apart (its
    # index t, and the others' sum relative to it, online), so the one class whose p can near 1 gets 1 - p as the
    # others' share instead of a difference that cancels (every other class has p <= 1/2); and its gradient is
    # c_t (1 - p_t) - p_t sum_{k != t} c_k, as the class-index kernel's target column (c_t - p_t sum_k c_k would
    # cancel where c_t ~ -1 / (1 - p_t) is large).
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    g_row = g_ptr + row * g_stride
    q_row = q_ptr + row * q_stride
    if HAS_SCALE:
        scale = tl.load(scale_ptr + row * scale_stride)
    else:
        scale = 1.0
    m = -float("inf")
    top = 0  # the index of the largest logit so far (the first of ties)
    others = 0.0  # sum of exp(f_k - m) over k != top
    sum_qwf = 0.0
    sum_qw = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        f = tl.load(x_row + offs, mask=mask, other=-float("inf")).to(tl.float32)
        block_max = tl.max(f, 0)
        block_top = start + tl.argmax(f, 0)
        new_top = block_max > m
        m_new = tl.maximum(m, block_max)
        # the previous top joins the others when a larger logit arrives (exp(-inf) = 0 on the first block)
        others = others * tl.exp(m - m_new) + tl.where(new_top, tl.exp(m - m_new), 0.0)
        others += tl.sum(tl.where(offs == tl.where(new_top, block_top, -1), 0.0, tl.exp(f - m_new)), 0)
        top = tl.where(new_top, block_top, top)
        m = m_new
        qw = _smoothed_target(q_row, offs, mask, eps, V)
        if HAS_W:
            qw *= tl.load(w_ptr + offs, mask=mask, other=0.0)
        sum_qwf += tl.sum(tl.where(mask, qw * f, 0.0), 0)
        sum_qw += tl.sum(qw, 0)
    lse = m + tl.log(1.0 + others)
    top_one_minus = others / (1.0 + others)
    dense = 0.0
    c_top = 0.0
    c_other = 0.0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < V
        p = tl.exp(tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32) - lse)
        value, beta = _dense_bonus(p, log_end, cap, FULL, tl.where(offs == top, top_one_minus, 1.0 - p))
        q = _smoothed_target(q_row, offs, mask, eps, V)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0) if HAS_W else 1.0
        v = tl.load(v_ptr + offs, mask=mask, other=0.0) if HAS_V else 1.0
        dense += tl.sum(q * v * value, 0)
        c = q * (-w + rho * v * beta)  # 0 in masked lanes (q = 0 there)
        c_top += tl.sum(tl.where(offs == top, c, 0.0), 0)
        c_other += tl.sum(tl.where(offs == top, 0.0, c), 0)
    loss = lse * sum_qw - sum_qwf + rho * dense
    tl.store(loss_ptr + row, loss * scale if SCALE_LOSS else loss)
    if COMPUTE_GRAD:
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < V
            p = tl.exp(tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32) - lse)
            _, beta = _dense_bonus(p, log_end, cap, FULL, tl.where(offs == top, top_one_minus, 1.0 - p))
            q = _smoothed_target(q_row, offs, mask, eps, V)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0) if HAS_W else 1.0
            v = tl.load(v_ptr + offs, mask=mask, other=0.0) if HAS_V else 1.0
            c = q * (-w + rho * v * beta)
            grad = tl.where(offs == top, c_top * top_one_minus - p * c_other, c - p * (c_top + c_other)) * scale
            tl.store(g_row + offs, grad.to(g_ptr.dtype.element_ty), mask=mask)


def _block_size(vocab: int) -> int:
    # A row is read in blocks of up to 8192 elements (32 KiB of float32 state per program), enough to keep a
    # program's loads wide while the whole row (V up to 256k) streams through in a few dozen iterations.
    return min(triton.next_power_of_2(vocab), 8192)


def _num_warps(block: int, smooth: bool = False) -> int:
    # Timed on an H200 (benchmarks/tune_triton.py, records tune-triton-cuda-7d42d06.json): at blocks of 8192 the
    # smoothed kernel runs in 0.77-0.79x the time with 16 warps (half the logits per thread: 98 registers instead of
    # 128 and no spill on sm_90, tune_triton.py --static). Without smoothing the gains were small and split (blocks
    # of 32768 with 16 warps: 0.91x and 0.96x for EL, 1.14x and 1.10x for the full bonus, which shares this rule),
    # so 8 warps stay.
    if smooth and block >= 8192:
        return 16
    return 8 if block >= 4096 else 4


def _soft_launch(vocab: int) -> tuple[int, int]:
    # Not timed yet (no GPU): chosen from the compiled kernel's registers on sm_90. The probability-target kernel
    # holds more per logit; blocks of 8192 with 8 warps need 253 registers per thread (8 resident warps per SM),
    # blocks of 4096 with 16 warps 91 without spilling.
    block = min(triton.next_power_of_2(vocab), 4096)
    return block, 16 if block >= 4096 else _num_warps(block)


def el_loss_and_grad(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    *,
    log_end: float = 0.75,
    bonus_scale: float = 1.0,
    bonus_weight: Tensor | None = None,
    bonus_floor: float = 0.0,
    grad_scale: Tensor | None = None,
    compute_grad: bool = True,
    inplace: bool = False,
    block_size: int | None = None,
    num_warps: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""Per-row encouraging loss (log bonus) of ``(N, V)`` logits and its gradient, in one kernel launch.

    ``target``: ``(N,)`` class indices, or ``(N, V)`` probabilities (every class's bonus then the floored dense
    one, as :func:`~encouraging.losses.encouraging_loss` computes it; ``ignore_index`` unused).
    Returns ``(loss, grad)``: ``loss`` ``(N,)`` float32 equals ``encouraging_loss(logits, target, weight,
    ignore_index, 'none', label_smoothing, log_end=..., bonus_scale=..., bonus_weight=..., bonus_floor=...)``, and
    ``grad`` (logits' dtype) is :math:`\partial \sum_i s_i L_i / \partial\,\mathrm{logits}` with ``s =
    grad_scale`` ``(N,)`` (all ones when None); ``None`` when ``compute_grad=False``.

    ``inplace=True`` writes the gradient over ``logits`` (saves one ``(N, V)`` buffer; the caller's logits are
    lost). Otherwise no input is modified. ``bonus_weight`` is a ``(V,)`` tensor (resolve ``'same'`` first).
    ``block_size`` (a power of two) and ``num_warps`` override the launch configuration (for tuning:
    ``benchmarks/tune_triton.py``).
    """
    check_floating("logits", logits)
    if logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"logits must be float32, float16 or bfloat16 for the Triton kernel, got {logits.dtype}")
    if logits.dim() != 2 or logits.stride(1) != 1:
        raise ValueError(f"logits must be a 2-D (N, V) tensor with contiguous rows, got shape "
                         f"{tuple(logits.shape)} and strides {logits.stride()}")
    n, vocab = logits.shape
    soft = target.is_floating_point()
    if target.shape != ((n, vocab) if soft else (n,)):
        raise ValueError(f"target must be a ({n},) tensor of class indices or ({n}, {vocab}) probabilities, got "
                         f"shape {tuple(target.shape)} and dtype {target.dtype}")
    check_class_vector("weight", weight, vocab)
    check_class_vector("bonus_weight", bonus_weight, vocab)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    check_range("log_end", log_end, 0.0, 1.0)
    check_range("bonus_floor", bonus_floor, 0.0, 1.0, high_open=True)
    if grad_scale is not None and grad_scale.shape != (n,):
        raise ValueError(f"grad_scale must have shape ({n},), got {tuple(grad_scale.shape)}")

    w, v, scale = (float32_on(t, logits.device) for t in (weight, bonus_weight, grad_scale))
    target = target.to(logits.device)
    target = target.contiguous() if soft else target.long().contiguous()
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    grad = (logits if inplace else torch.empty_like(logits)) if compute_grad else None
    launch(logits, target, w, v, loss, grad, ignore_index, label_smoothing, log_end, bonus_scale, bonus_floor,
           scale=scale, block_size=block_size, num_warps=num_warps)
    return loss, grad


def float32_on(vector: Tensor | None, device: torch.device) -> Tensor | None:
    """``vector`` as the kernels read a weight or scale vector: contiguous float32 on ``device`` (None stays)."""
    return vector.to(device=device, dtype=torch.float32).contiguous() if vector is not None else None


def launch(logits: Tensor, target: Tensor, weight: Tensor | None, bonus_weight: Tensor | None, loss: Tensor,
           grad: Tensor | None, ignore_index: int, label_smoothing: float, log_end: float, bonus_scale: float,
           bonus_floor: float, *, scale: Tensor | None = None, shared_scale: bool = False,
           block_size: int | None = None, num_warps: int | None = None) -> None:
    """One launch of the kernel over checked arguments: float32 contiguous ``weight``, ``bonus_weight`` and
    ``scale`` on the logits' device, ``(N,)`` int64 ``target`` or contiguous ``(N, V)`` probabilities, the
    ``(N,)`` float32 ``loss`` and the ``grad`` (None: loss only) to write. ``scale`` is one per row, or with
    ``shared_scale`` its first element for every row, which then scales the stored losses too (the 'mean'
    reciprocal, see :func:`target_stats`)."""
    n, vocab = logits.shape
    if n == 0:
        return
    out = grad if grad is not None else logits  # not written without COMPUTE_GRAD
    soft, smooth = target.is_floating_point(), label_smoothing > 0.0
    if soft and not block_size:
        block, warps = _soft_launch(vocab)
    else:
        block = block_size or _block_size(vocab)
        warps = _num_warps(block, smooth)
    rows = (logits, logits.stride(0), out, out.stride(0))
    tensors = (scale if scale is not None else loss, 0 if shared_scale else 1, weight if weight is not None else loss,
               bonus_weight if bonus_weight is not None else loss, loss)
    options = (float(label_smoothing), float(bonus_scale), float(log_end), min(P_CAP, 1.0 - bonus_floor))
    flags = dict(HAS_W=weight is not None, HAS_V=bonus_weight is not None, HAS_SCALE=scale is not None,
                 SCALE_LOSS=shared_scale, FULL=log_end == 1.0, COMPUTE_GRAD=grad is not None, BLOCK=block,
                 num_warps=num_warps or warps)
    if soft:
        _el_soft_kernel[(n,)](*rows, target, target.stride(0), *tensors, vocab, *options, **flags)
        return
    _el_kernel[(n,)](*rows, target, *tensors, vocab, ignore_index, *options,
                     math.log(bonus_floor) if bonus_floor > 0.0 else 0.0, SMOOTH=smooth,
                     HAS_FLOOR=bonus_floor > 0.0, **flags)


def compile_for(arch: int, kernel: str = "rows", *, dtype: str = "fp32", num_warps: int = 8, **constexprs):
    """Compile a kernel ahead of time for CUDA architecture ``arch`` (90: H100) with Triton's bundled toolchain, no
    GPU needed, and return Triton's compiled kernel (``.asm`` holds its PTX and cubin). ``kernel``: ``'rows'``
    (class indices), ``'soft'`` (probability targets) or ``'stats'`` (:func:`target_stats`); ``constexprs``: its
    flags and ``BLOCK``; ``dtype``: the logits' (``fp32``, ``bf16``, ``fp16``). For compile checks on machines
    without a GPU and resource counts (``benchmarks/tune_triton.py --static``)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = {"rows": _el_kernel, "soft": _el_soft_kernel, "stats": _target_stats_kernel}[kernel]
    types = {"x_ptr": f"*{dtype}", "g_ptr": f"*{dtype}", "y_ptr": "*i64", "q_ptr": "*fp32", "scale_ptr": "*fp32",
             "w_ptr": "*fp32", "v_ptr": "*fp32", "loss_ptr": "*fp32", "out_ptr": "*fp32", "x_stride": "i64",
             "g_stride": "i64", "q_stride": "i64", "scale_stride": "i32", "N": "i32", "V": "i32",
             "ignore_index": "i64", "eps": "fp32", "rho": "fp32", "log_end": "fp32", "cap": "fp32",
             "log_floor": "fp32"}
    signature = {p.name: "constexpr" if p.is_constexpr else types[p.name] for p in kernel.params}
    # constexprs keyed by (argument index,): the form every triton since 3.2 accepts (3.8 also takes names)
    source = ASTSource(kernel, signature, {(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})


@triton.jit
def _target_stats_kernel(y_ptr, w_ptr, out_ptr, N, V, ignore_index, HAS_W: tl.constexpr, BLOCK: tl.constexpr):
    # one program: N targets are a few KiB, far less than the row kernel reads; the order of the sum is fixed
    total = tl.zeros([BLOCK], tl.float32)
    bad = tl.zeros([BLOCK], tl.int32)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        y = tl.load(y_ptr + offs, mask=offs < N, other=ignore_index)
        kept = y != ignore_index
        inside = (y >= 0) & (y < V)
        bad += (kept & ~inside).to(tl.int32)
        if HAS_W:
            total += tl.load(w_ptr + y, mask=kept & inside, other=0.0)
        else:
            total += (kept & inside).to(tl.float32)
    tl.store(out_ptr, 1.0 / tl.sum(total, 0))
    tl.store(out_ptr + 1, tl.where(tl.sum(bad, 0) == 0, 1.0, 0.0))


def target_stats(target: Tensor, weight: Tensor | None, vocab: int, ignore_index: int) -> Tensor:
    r"""``(2,)`` float32 on the target's device, in one launch and no host read: the reciprocal of the 'mean'
    normalizer :math:`1 / \sum_{i:\, y_i \ne \text{ignore}} w_{y_i}` (``F.cross_entropy``'s; ``inf`` when it is
    0) and 1.0 when every target is in ``[0, vocab)`` or ``ignore_index``, else 0.0."""
    out = torch.empty(2, dtype=torch.float32, device=target.device)
    block = min(triton.next_power_of_2(max(target.numel(), 1)), 4096)
    _target_stats_kernel[(1,)](target, weight if weight is not None else out, out, target.numel(), vocab,
                               ignore_index, HAS_W=weight is not None, BLOCK=block)
    return out
