r"""The encouraging loss of a linear layer's output, computed in chunks of tokens: the (N, V) logits never exist.

``linear_encouraging_loss(hidden, weight, target, bias)`` equals
``encouraging_loss(hidden @ weight.T + bias, target, ...)`` (same options), for language-model heads where
``N`` tokens times a ``V``-word vocabulary of float32 logits would take gigabytes (8192 x 128256: 4.2 GB, and
the materialized path holds two or three such buffers at its peak).

How: the tokens are cut into chunks. For each chunk the logits are computed, the loss of every token and the
gradient with respect to the chunk's logits are taken (by the Triton kernel of :mod:`encouraging.losses.triton`
on CUDA, the compiled kernel of :mod:`encouraging.losses.cpu_kernel` on the CPU, where they apply, else by the
closed-form PyTorch twin), and the gradient is turned at once into the
chunk's rows of ``d hidden = d logits @ weight`` and its share of ``d weight = d logits^T @ hidden`` and
``d bias``. Then the chunk's logits are freed.

When the gradients are computed: with ``reduction='mean'`` or ``'sum'`` the upstream gradient is one scalar, so
the gradients are computed during the forward pass and backward only multiplies them by it (as Liger-Kernel
does). This costs the three matrix products of the materialized path (logits, d hidden, d weight) and no more;
recomputing the logits in backward would add a fourth, about 1.33x the time. It holds ``d hidden`` and
``d weight`` (the size of ``hidden`` and ``weight``) from forward to backward. With ``reduction='none'`` the
upstream gradient differs per token and ``d weight`` cannot be rescaled after the fact, so forward computes the
loss only and backward recomputes each chunk's logits.

The chunk loop runs inside one ``torch.library`` custom op, so ``torch.compile(fullgraph=True)`` traces a
call as one opaque node (no graph break) in forward and backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernel
from ._checks import check_class_vector, check_floating, check_range, check_reduction, check_target_range
from .functional import bonus_params, resolve_bonus_weight
from .fused import Options, _worth_reading, loss_and_grad
from .modules import EncouragingOptions

IMPLS = ("auto", "torch", "triton")


class _Chunking(NamedTuple):
    """The loss options and how the chunks are computed; :attr:`flat` is the custom op's trailing arguments."""

    loss: Options
    chunk_size: int
    impl: str

    @property
    def flat(self) -> tuple:
        return (*self.loss, self.chunk_size, self.impl)


def default_chunk_size(num_tokens: int, vocab: int, hidden: int) -> int:
    """Tokens per chunk: the smallest power of two with ``chunk * V >= N * H``, at least 128, at most ``N``.

    So one chunk of logits has about as many elements as the hidden states, the memory the caller holds anyway.
    At N=8192, H=1024, V=128256: N*H/V = 65.4, so 128 tokens per chunk, 64 chunks; one float32 chunk of logits is
    128 * 128256 * 4 B = 66 MB and the loss's working set on it (logits, log-probabilities, their gradient: about
    three such buffers) about 200 MB, against 4.2 GB for one buffer of the full logits. At V=32000: 262.1, so 512
    tokens (66 MB). The floor of 128: every chunk re-reads and re-writes the whole (V, H) weight gradient in
    ``addmm_``, 2 * chunk * V * H flops for 8 * V * H bytes of traffic, which is memory-bound below about a
    hundred tokens (at H=64, V=32000 chunks of 4 tokens ran 8x slower than chunks of 64 on the CPU). A power of
    two keeps the matrix products on well-tiled shapes.
    """
    target = max(128, -(-num_tokens * hidden // vocab))
    return min(num_tokens, 1 << (target - 1).bit_length())


def _triton_supported(logits: Tensor, opts: Options) -> bool:
    """Whether ``impl='auto'`` uses the Triton kernel: CUDA (never the CPU interpreter: triton is not even
    imported there), float32 or half precision, and options the kernel implements (log bonus, no start shift)."""
    if logits.device.type != "cuda" or logits.dtype == torch.float64 or not opts.triton_ready:
        return False
    from .triton import available

    return available(logits.device)


def _chunk_kernel(hidden: Tensor, target: Tensor, opts: Options, impl: str) -> str:
    """What computes each chunk's loss and gradient: ``'triton'`` (asked for, or CUDA where it applies), ``'cpp'``
    (the compiled CPU kernel, for ``impl='auto'`` on the CPU where it applies and builds) or ``'torch'``."""
    if impl == "triton" or (impl == "auto" and _triton_supported(hidden, opts)):
        return "triton"
    if (impl == "auto" and hidden.device.type == "cpu"
            and cpu_kernel.unsupported(hidden, target, opts.label_smoothing, opts.bonus, opts.log_end,
                                       opts.bonus_start, opts.bonus_floor) is None
            and cpu_kernel.available()):
        return "cpp"
    return "torch"


def _chunk_computer(kernel: str, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                    token_grad: Tensor | None, opts: Options):
    """``compute(logits, rows, out)`` for the chunks of one call: writes the per-token losses of the chunk of
    logits of tokens ``rows`` (a slice) into ``out`` (float32 or float64) and returns, if ``token_grad`` is
    given, ``d sum_i token_grad_i L_i / d logits`` in the logits' dtype. For the Triton kernel the per-call work
    (casting the weights and the token scales, checking the targets' layout) happens here once, and each chunk
    is one launch that writes its losses into ``out`` and its gradient over the logits (the loop owns them)."""
    if kernel == "triton":
        from .triton.el import float32_on, launch

        w, v, scale = (float32_on(t, target.device) for t in (class_weight, bonus_weight, token_grad))
        labels = target.long().contiguous()
        ignore = opts.ignore_index if opts.ignore_index is not None else -1

        def compute(logits: Tensor, rows: slice, out: Tensor) -> Tensor | None:
            grad = logits if scale is not None else None
            launch(logits, labels[rows], w, v, out, grad, ignore, opts.label_smoothing, opts.log_end,
                   opts.bonus_scale, opts.bonus_floor, scale=scale[rows] if scale is not None else None)
            return grad

        return compute

    def compute(logits: Tensor, rows: slice, out: Tensor) -> Tensor | None:
        chunk_grad = token_grad[rows] if token_grad is not None else None
        if kernel == "cpp":
            loss, grad = cpu_kernel.loss_and_grad(logits, target[rows], class_weight, bonus_weight, chunk_grad,
                                                  opts.ignore_index, opts.label_smoothing, opts.log_end,
                                                  opts.bonus_scale, opts.bonus_floor)
        else:
            loss, grad = loss_and_grad(logits, target[rows], class_weight, bonus_weight, chunk_grad, opts)
        out.copy_(loss)
        return grad

    return compute


@torch.library.custom_op("encouraging::linear_el_chunks", mutates_args=())
def _linear_el_chunks(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, class_weight: Tensor | None,
    bonus_weight: Tensor | None, token_grad: Tensor | None, needs: list[bool], ignore_index: int,
    label_smoothing: float, log_end: float, bonus_scale: float, bonus: str, gamma: float, bonus_start: float,
    bonus_floor: float, chunk_size: int, impl: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-token losses and, with ``token_grad``, the gradients of ``sum_i token_grad_i L_i`` for (hidden,
    weight, bias) as ``needs`` asks (an empty tensor where not asked)."""
    opts = Options(ignore_index, label_smoothing, log_end, bonus_scale, bonus, gamma, bonus_start, bonus_floor)
    n = hidden.shape[0]
    loss = torch.empty(n, dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32,
                       device=hidden.device)
    with_grad = token_grad is not None
    d_hidden = hidden.new_empty(hidden.shape) if with_grad and needs[0] else hidden.new_empty(0)
    d_weight = torch.zeros_like(weight) if with_grad and needs[1] else weight.new_empty(0)
    d_bias = torch.zeros_like(bias) if with_grad and bias is not None and needs[2] else hidden.new_empty(0)
    compute = _chunk_computer(_chunk_kernel(hidden, target, opts, impl), target, class_weight, bonus_weight,
                              token_grad, opts)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        h = hidden[start:stop]
        logits = F.linear(h, weight, bias)
        d_logits = compute(logits, slice(start, stop), loss[start:stop])
        if not with_grad:
            continue
        if d_hidden.numel():
            torch.mm(d_logits, weight, out=d_hidden[start:stop])
        if d_weight.numel():
            d_weight.addmm_(d_logits.t(), h)
        if d_bias.numel():
            d_bias.add_(d_logits.sum(0))
        del logits, d_logits  # free the chunk before the next one is allocated
    return loss, d_hidden, d_weight, d_bias


@_linear_el_chunks.register_fake
def _(hidden, weight, bias, target, class_weight, bonus_weight, token_grad, needs, *args):
    loss = hidden.new_empty(hidden.shape[0], dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32)
    with_grad = token_grad is not None
    d_hidden = torch.empty_like(hidden) if with_grad and needs[0] else hidden.new_empty(0)
    d_weight = torch.empty_like(weight) if with_grad and needs[1] else weight.new_empty(0)
    d_bias = torch.empty_like(bias) if with_grad and bias is not None and needs[2] else hidden.new_empty(0)
    return loss, d_hidden, d_weight, d_bias


class _LinearEncouragingLoss(torch.autograd.Function):
    """``token_grad`` given: returns ``sum_i token_grad_i L_i`` with the gradients computed in forward; None:
    returns the per-token losses and recomputes the chunks in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, class_weight, bonus_weight, token_grad, opts):
        needs = [bool(ctx.needs_input_grad[0]), bool(ctx.needs_input_grad[1]), bool(ctx.needs_input_grad[2])]
        precompute = token_grad is not None and any(needs)
        loss, d_hidden, d_weight, d_bias = _linear_el_chunks(
            hidden, weight, bias, target, class_weight, bonus_weight, token_grad if precompute else None, needs,
            *opts.flat)
        ctx.precompute, ctx.needs, ctx.opts, ctx.has_bias = precompute, needs, opts, bias is not None
        if precompute:
            # Kept as attributes, not saved tensors: backward scales them in place and hands them over as the only
            # reference, so autograd accumulates them into .grad without a copy (a saved tensor stays referenced
            # by the graph until backward ends, and a scaled copy of d weight would double the peak).
            ctx.grads = [d_hidden, d_weight, d_bias]
        else:
            ctx.save_for_backward(hidden, weight, bias, target, class_weight, bonus_weight)
        if token_grad is not None:
            return (loss * token_grad.to(loss.dtype)).sum()
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.precompute:
            if ctx.grads is None:
                raise RuntimeError("linear_encouraging_loss with reduction 'mean' or 'sum' computes its gradients in "
                                   "forward and hands them over once: backward through it twice (retain_graph) is "
                                   "not supported; use reduction='none' and reduce outside")
            grads, ctx.grads = ctx.grads, None
            largest = max(grads, key=Tensor.numel)
            if not (_worth_reading(grad_out, largest) and float(grad_out) == 1.0):
                # loss.backward() of the loss itself skips this: a read and a write of d weight (V, H), 0.1 ms
                # per call at 8192x32000x1024 bf16 on an H200 (benchmarks/records/profile-cuda-8192x32000x1024-*)
                for g in grads:
                    g.mul_(grad_out.to(g.dtype))
            grads = [g if need else None for g, need in zip(grads, ctx.needs, strict=True)]
        else:
            hidden, weight, bias, target, class_weight, bonus_weight = ctx.saved_tensors
            out = _linear_el_chunks(hidden, weight, bias, target, class_weight, bonus_weight,
                                    grad_out.contiguous(), ctx.needs, *ctx.opts.flat)
            grads = [g if need else None for g, need in zip(out[1:], ctx.needs, strict=True)]
        if not ctx.has_bias:
            grads[2] = None
        return grads[0], grads[1], grads[2], None, None, None, None, None


def _check_linear_args(hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None, impl: str,
                       chunk_size: int | None) -> None:
    check_floating("hidden", hidden)
    check_floating("weight", weight)
    if hidden.dim() < 1:
        raise ValueError("hidden must have shape (..., H), got a 0-d tensor")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape (V, H) with H={hidden.shape[-1]} (hidden's last dimension), "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have hidden's dtype {hidden.dtype}, got {weight.dtype}")
    if bias is not None:
        check_floating("bias", bias)
        if bias.shape != (weight.shape[0],) or bias.dtype != hidden.dtype:
            raise ValueError(f"bias must be a ({weight.shape[0]},) tensor of dtype {hidden.dtype}, got shape "
                             f"{tuple(bias.shape)} and dtype {bias.dtype}")
    if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError("target must be a tensor of class indices (integer dtype); probability targets would be "
                        f"a full (N, V) tensor, got {getattr(target, 'dtype', type(target).__name__)}")
    if tuple(target.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(f"target must have shape {tuple(hidden.shape[:-1])} (hidden without its last dimension), "
                         f"got {tuple(target.shape)}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def linear_encouraging_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Tensor | None = None,
    class_weight: Tensor | None = None,
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
    chunk_size: int | None = None,
    impl: str = "auto",
) -> Tensor:
    r"""``encouraging_loss(F.linear(hidden, weight, bias), target, class_weight, ...)`` without the logits.

    .. math::

        L_i = \mathrm{EL}(W h_i + b,\ y_i), \quad\text{computed over chunks of tokens } i

    Args:
        hidden: ``(..., H)`` features (e.g. a language model's last hidden states).
        weight: ``(V, H)`` classifier weight (``lm_head.weight``), same dtype as ``hidden``.
        target: ``(...)`` class indices in ``[0, V)`` or ``ignore_index``.
        bias: ``(V,)`` classifier bias, optional.
        class_weight: ``(V,)`` class weights of the CE term (``weight`` of :func:`encouraging_loss`).
        ignore_index, reduction, label_smoothing, log_end, bonus_scale, bonus, gamma, bonus_start, bonus_weight,
            bonus_floor: as in :func:`encouraging.losses.encouraging_loss`.
        chunk_size: tokens per chunk; None picks :func:`default_chunk_size` (chunk logits about the size of
            ``hidden``).
        impl: ``'auto'`` (the Triton kernel on CUDA when triton is installed and the options are the log bonus
            without ``bonus_start``; on the CPU the compiled kernel where it applies; PyTorch otherwise),
            ``'torch'`` or ``'triton'``.

    Half precision is computed in float32 within a chunk; ``d weight`` is accumulated over chunks in the
    weight's dtype. ``reduction='none'`` returns a tensor of ``target``'s shape; the others a scalar.

    Example:
        >>> hidden = torch.randn(2, 5, 16, requires_grad=True)
        >>> head = torch.nn.Linear(16, 100, bias=False)
        >>> loss = linear_encouraging_loss(hidden, head.weight, torch.randint(100, (2, 5)))
        >>> loss.backward()
    """
    _check_linear_args(hidden, weight, target, bias, impl, chunk_size)
    check_reduction(reduction)
    check_range("label_smoothing", label_smoothing, 0.0, 1.0)
    bonus_params(bonus, log_end, bonus_scale, gamma, bonus_start, bonus_floor)
    vocab = weight.shape[0]
    check_class_vector("weight", class_weight, vocab)
    v = resolve_bonus_weight(bonus_weight, class_weight, vocab)
    if bonus == "log" and log_end == 1.0 and bonus_scale != 0.0 and vocab < 2:
        raise ValueError(f"the full log bonus (log_end=1) needs at least 2 classes, got weight with V={vocab}")
    if impl == "triton":
        if hidden.dtype == torch.float64:
            raise TypeError("impl='triton' computes in float32: hidden must be float32, float16 or bfloat16, got "
                            "float64 (use impl='torch')")
        if bonus != "log" or bonus_start != 0.0:
            raise ValueError(f"impl='triton' implements the log bonus without bonus_start; got bonus={bonus!r}, "
                             f"bonus_start={bonus_start} (use impl='torch' or 'auto')")
        from .triton import available

        if not available(hidden.device):
            raise RuntimeError(f"impl='triton' needs triton and a CUDA device (or TRITON_INTERPRET=1 set before "
                               f"triton is imported); hidden is on {hidden.device}")

    h = hidden.reshape(-1, hidden.shape[-1])
    t = target.reshape(-1).long()
    valid = t != ignore_index
    check_target_range(t, torch.where(valid, t, 0), vocab, ignore_index)
    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    cw = class_weight.to(dtype) if class_weight is not None else None
    v = v.to(dtype) if v is not None else None
    opts = _Chunking(Options(ignore_index, float(label_smoothing), float(log_end), float(bonus_scale), bonus,
                             float(gamma), float(bonus_start), float(bonus_floor)),
                     chunk_size or default_chunk_size(max(h.shape[0], 1), vocab, h.shape[1]), impl)
    if reduction == "none":
        loss = _LinearEncouragingLoss.apply(h, weight, bias, t, cw, v, None, opts)
        return loss.to(hidden.dtype).reshape(target.shape)
    # 'sum' weighs every token by 1, 'mean' by 1 / (summed class weights of the non-ignored tokens), as
    # F.cross_entropy: all tokens ignored gives 0 / 0 = nan, as there.
    if reduction == "sum":
        token_grad = torch.ones(h.shape[0], dtype=dtype, device=h.device)
    else:
        normalizer = valid.sum().to(dtype) if cw is None else torch.where(valid, cw[torch.where(valid, t, 0)],
                                                                          0.0).sum()
        token_grad = (1.0 / normalizer).expand(h.shape[0]).contiguous()
    return _LinearEncouragingLoss.apply(h, weight, bias, t, cw, v, token_grad, opts).to(hidden.dtype)


class LinearEncouragingLoss(EncouragingOptions):
    """Module form of :func:`linear_encouraging_loss`: ``forward(hidden, weight, target, bias=None)``.

    Options are stored as in :class:`~encouraging.losses.EncouragingLoss` (``weight`` there is ``class_weight``
    here, since ``weight`` is the classifier's).

    Example:
        >>> criterion = LinearEncouragingLoss(log_end=0.75)
        >>> head = torch.nn.Linear(16, 100)
        >>> hidden = torch.randn(8, 16, requires_grad=True)
        >>> criterion(hidden, head.weight, torch.randint(100, (8,)), head.bias).backward()
    """

    def __init__(
        self,
        class_weight: Tensor | None = None,
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
        chunk_size: int | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__("class_weight", class_weight, ignore_index, reduction, label_smoothing, log_end, bonus_scale,
                         bonus, gamma, bonus_start, bonus_weight, bonus_floor)
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.chunk_size = chunk_size
        self.impl = impl

    def forward(self, hidden: Tensor, weight: Tensor, target: Tensor, bias: Tensor | None = None) -> Tensor:
        return linear_encouraging_loss(
            hidden, weight, target, bias, self.class_weight, self.ignore_index, self.reduction,
            self.label_smoothing, log_end=self.log_end, bonus_scale=self.bonus_scale, bonus=self.bonus,
            gamma=self.gamma, bonus_start=self.bonus_start, bonus_weight=self.bonus_weight,
            bonus_floor=self.bonus_floor, chunk_size=self.chunk_size, impl=self.impl,
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, impl={self.impl!r}"
