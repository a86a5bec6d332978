"""The chunked linear loss: ``linear_encouraging_loss(h, W, t, b)`` equals ``encouraging_loss(h @ W.T + b, t)`` in
value and in the gradients of h, W and b, across options, reductions, chunk boundaries and dtypes; it compiles
with ``fullgraph=True``; bad arguments raise naming the argument; and it never holds the (N, V) logits (memory
probe in a subprocess, with the materialized loss as the control that shows the probe can fail)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from encouraging import LinearEncouragingLoss, encouraging_loss, linear_encouraging_loss
from encouraging.losses import cpu_kernel
from encouraging.losses.linear import default_chunk_size

from .helpers import TOLERANCES, assert_close, examples

ROOT = Path(__file__).resolve().parents[2]

# id -> options of both losses; "class_weight" True draws (V,) weights in [0.5, 1.5).
OPTIONS = {
    "plain": {},
    "le1": dict(log_end=1.0),
    "le0": dict(log_end=0.0),
    "le0.3-scale2": dict(log_end=0.3, bonus_scale=2.0),
    "smooth": dict(label_smoothing=0.2),
    "smooth-le1": dict(label_smoothing=0.1, log_end=1.0),
    "weights": dict(class_weight=True),
    "weights-same-smooth": dict(class_weight=True, bonus_weight="same", label_smoothing=0.1),
    "floor": dict(log_end=1.0, bonus_floor=1e-3),
    "power": dict(bonus="power", gamma=3.0),
    "cosine-smooth": dict(bonus="cosine", label_smoothing=0.1),
    "start": dict(bonus_start=0.2),
    "ce": dict(bonus_scale=0.0, label_smoothing=0.1),
}


def _inputs(n, v, h, dtype, *, ignore=True, bias=True, scale=1.0, generator=None):
    hidden = (torch.randn(n, h, dtype=torch.float64, generator=generator) * scale).to(dtype).requires_grad_()
    weight = torch.randn(v, h, dtype=torch.float64, generator=generator).to(dtype).requires_grad_()
    b = torch.randn(v, dtype=torch.float64, generator=generator).to(dtype).requires_grad_() if bias else None
    target = torch.randint(v, (n,), generator=generator)
    if ignore and n > 1:
        target[torch.rand(n, generator=generator) < 0.3] = -100
        target[-1] = 0  # at least one kept
    return hidden, weight, b, target


def _options(opts: dict, v: int, dtype) -> dict:
    opts = dict(opts)
    if opts.pop("class_weight", False):
        opts["class_weight"] = torch.rand(v, dtype=torch.float64).add(0.5).to(dtype)
    return opts


def _reference(hidden, weight, bias, target, opts, reduction):
    """The materialized loss, in float64 from the same (rounded) inputs."""
    opts = dict(opts)
    class_weight = opts.pop("class_weight", None)
    logits = hidden.double() @ weight.double().T
    if bias is not None:
        logits = logits + bias.double()
    cw = class_weight.double() if class_weight is not None else None
    return encouraging_loss(logits, target, cw, reduction=reduction, **opts)


def _check_parity(n, v, h, dtype, opts, reduction, chunk_size, *, bias=True, ignore=True, scale=1.0, tol=None,
                  impl="torch"):
    hidden, weight, b, target = _inputs(n, v, h, dtype, bias=bias, ignore=ignore, scale=scale)
    opts = _options(opts, v, dtype)
    params = [p for p in (hidden, weight, b) if p is not None]
    out = linear_encouraging_loss(hidden, weight, target, b, reduction=reduction, chunk_size=chunk_size,
                                  impl=impl, **opts)
    ref = _reference(hidden, weight, b, target, opts, reduction)
    rtol, atol = tol or TOLERANCES[dtype]
    assert out.dtype == dtype and out.shape == ref.shape
    assert_close(out, ref, dtype, rtol=rtol, atol=atol, equal_nan=True, msg="loss")
    upstream = torch.randn(ref.shape, dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * upstream).sum(), params)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params)
    for name, g, r in zip(("hidden", "weight", "bias"), grads, ref_grads, strict=False):
        assert g.dtype == dtype
        assert_close(g, r, dtype, rtol=rtol, atol=atol, msg=f"grad of {name}")


# 'auto' on the CPU: the compiled kernel's loss_and_grad per chunk where it applies (else the same as 'torch')
IMPLS_HERE = ["torch", pytest.param("auto", marks=pytest.mark.skipif(not cpu_kernel.available(),
                                                                     reason="the CPU kernel is unavailable"))]


@pytest.mark.parametrize("impl", IMPLS_HERE)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_parity_float64(name, reduction, impl):
    # 37 tokens in chunks of 8: four full chunks and a short one.
    _check_parity(37, 23, 6, torch.float64, OPTIONS[name], reduction, chunk_size=8, impl=impl)


@pytest.mark.parametrize("impl", IMPLS_HERE)
@pytest.mark.parametrize("name", ["plain", "le1", "smooth", "weights-same-smooth"])
def test_parity_float32(name, impl):
    # float32 logits from a float32 matmul against float64 truth: relative error ~1e-6 of |logits| ~ sqrt(H) * 1.
    _check_parity(50, 301, 16, torch.float32, OPTIONS[name], "mean", chunk_size=16, tol=(1e-4, 1e-5), impl=impl)


@pytest.mark.skipif(not cpu_kernel.available(), reason="the CPU kernel is unavailable")
def test_cpu_chunks_take_the_compiled_kernel_where_it_applies(monkeypatch):
    calls = []
    original = cpu_kernel.loss_and_grad
    monkeypatch.setattr(cpu_kernel, "loss_and_grad", lambda *a: calls.append(a[4] is not None) or original(*a))
    hidden, weight, b, target = _inputs(20, 11, 4, torch.float32)
    linear_encouraging_loss(hidden, weight, target, b, chunk_size=8, label_smoothing=0.1).backward()
    assert calls == [True, True, True]  # three chunks, gradients computed in forward ('mean')
    linear_encouraging_loss(hidden, weight, target, b, chunk_size=8, reduction="none").sum().backward()
    assert calls[3:] == [False] * 3 + [True] * 3  # loss only in forward, recomputed with gradients in backward
    for kwargs in (dict(bonus="power"), dict(impl="torch")):
        linear_encouraging_loss(hidden, weight, target, b, chunk_size=8, **kwargs).backward()
    assert len(calls) == 9


@pytest.mark.parametrize("chunk_size", [1, 7, 37, 64, None])
def test_chunk_boundaries(chunk_size):
    _check_parity(37, 23, 6, torch.float64, OPTIONS["smooth"], "none", chunk_size)


def test_backward_twice_refused():
    hidden, weight, b, target = _inputs(10, 7, 3, torch.float64)
    out = linear_encouraging_loss(hidden, weight, target, b)
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through it twice"):
        out.backward()


def test_backward_scales_by_the_upstream_gradient_unless_it_is_one():
    """The gradients are computed in forward; backward multiplies them by the upstream gradient, and hands them
    over untouched for ``loss.backward()`` (an upstream 1: no pass over the (V, H) weight gradient)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Muls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func in (torch.ops.aten.mul_.Tensor, torch.ops.aten.mul.Tensor)
            return func(*args, **(kwargs or {}))

    hidden, weight, b, target = _inputs(12, 9, 5, torch.float64)
    refs = torch.autograd.grad(_reference(hidden, weight, b, target, {}, "mean"), (hidden, weight, b))
    for upstream, muls in ((1.0, 0), (2.5, 3)):
        out = linear_encouraging_loss(hidden, weight, target, b, chunk_size=5)
        with Muls() as mode:
            grads = torch.autograd.grad(out, (hidden, weight, b), torch.tensor(upstream, dtype=torch.float64))
        assert mode.count == muls
        for g, r in zip(grads, refs, strict=True):
            assert_close(g, upstream * r)


def test_no_bias_and_frozen_weight():
    hidden, weight, _, target = _inputs(20, 15, 4, torch.float64, bias=False)
    weight.requires_grad_(False)
    out = linear_encouraging_loss(hidden, weight, target, chunk_size=6)
    (g,) = torch.autograd.grad(out, hidden)
    (r,) = torch.autograd.grad(_reference(hidden, weight, None, target, {}, "mean"), hidden)
    assert_close(g, r)
    assert weight.grad is None


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored(reduction):
    hidden, weight, b, target = _inputs(9, 11, 3, torch.float64)
    target.fill_(-100)
    out = linear_encouraging_loss(hidden, weight, target, b, reduction=reduction, chunk_size=4)
    ref = _reference(hidden, weight, b, target, {}, reduction)
    assert_close(out, ref, equal_nan=True)  # mean: 0 / 0 = nan, as F.cross_entropy
    grads = torch.autograd.grad(out.sum(), (hidden, weight, b))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_batched_hidden_and_module():
    hidden = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(8, 13, dtype=torch.float64)
    target = torch.randint(13, (2, 5))
    criterion = LinearEncouragingLoss(reduction="none", log_end=0.5, chunk_size=3)
    out = criterion(hidden, head.weight, target, head.bias)
    assert out.shape == (2, 5)
    assert_close(out, encouraging_loss(head(hidden).transpose(1, 2), target, reduction="none", log_end=0.5))
    functional = linear_encouraging_loss(hidden, head.weight, target, head.bias, reduction="none", log_end=0.5)
    assert_close(out, functional)


@pytest.mark.parametrize("top", [30.0, 1e4])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_full_bonus_extreme_logits(top, label_smoothing):
    # p_y within 1e-13 of 1 (or 1 - p_y = e^-10000): the exact full bonus keeps its slope (gradient on f_y exactly
    # -1 per token), which a 1 - p floor would zero, and its beta = -p / (1 - p) overflows; the chunked path must
    # stay finite and reproduce the materialized one.
    hidden = torch.tensor([[top, 0.0], [-5.0, 2.0]], dtype=torch.float64, requires_grad=True)
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.5]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1])
    opts = dict(log_end=1.0, label_smoothing=label_smoothing)
    out = linear_encouraging_loss(hidden, weight, target, reduction="sum", chunk_size=1, **opts)
    ref = _reference(hidden, weight, None, target, opts, "sum")
    assert_close(out, ref)
    for g, r in zip(torch.autograd.grad(out, (hidden, weight)), torch.autograd.grad(ref, (hidden, weight)),
                    strict=True):
        assert_close(g, r)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_error_like_materialized(dtype):
    # Judged as CCE does: against float64 truth, the chunked path's error is at most the materialized half
    # precision path's own error (logits from a half matmul, as autocast computes them) times 2, plus a little.
    hidden, weight, b, target = _inputs(40, 200, 16, torch.float64, scale=0.25)
    truth = _reference(hidden, weight, b, target, {}, "mean")
    g_truth = torch.autograd.grad(truth, (hidden, weight, b))
    half = [t.detach().to(dtype).requires_grad_() for t in (hidden, weight, b)]
    out = linear_encouraging_loss(half[0], half[1], target, half[2], chunk_size=16)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, half)
    mat = encouraging_loss(torch.nn.functional.linear(half[0], half[1], half[2]), target)
    g_mat = torch.autograd.grad(mat, half)
    assert (out.double() - truth).abs() <= 2 * (mat.double() - truth).abs() + 1e-3
    for g, gm, gt in zip(grads, g_mat, g_truth, strict=True):
        err, err_mat = (g.double() - gt).abs().max(), (gm.double() - gt).abs().max()
        assert err <= 2 * err_mat + 1e-3 * gt.abs().max(), f"{err} vs materialized {err_mat}"


@settings(max_examples=examples(25))
@given(
    n=st.integers(1, 30),
    v=st.integers(2, 40),
    h=st.integers(1, 8),
    chunk=st.integers(1, 12),
    smoothing=st.sampled_from([0.0, 0.15]),
    log_end=st.sampled_from([0.0, 0.5, 0.75, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    weighted=st.booleans(),
)
def test_property_parity(n, v, h, chunk, smoothing, log_end, reduction, weighted):
    opts = dict(label_smoothing=smoothing, log_end=log_end, class_weight=weighted)
    _check_parity(n, v, h, torch.float64, opts, reduction, chunk, scale=2.0)


def test_compile_fullgraph():
    hidden, weight, b, target = _inputs(19, 17, 5, torch.float32)

    def fn(hd, w, bb, t):
        return linear_encouraging_loss(hd, w, t, bb, label_smoothing=0.1, chunk_size=8)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager = fn(hidden, weight, b, target)
    value = compiled(hidden, weight, b, target)
    assert_close(value, eager)
    for g, r in zip(torch.autograd.grad(value, (hidden, weight, b)), torch.autograd.grad(eager, (hidden, weight, b)),
                    strict=True):
        assert_close(g, r)


def test_default_chunk_size():
    assert default_chunk_size(8192, 128256, 1024) == 128  # N * H / V = 65.4 -> 128
    assert default_chunk_size(8192, 32000, 1024) == 512  # 262.1 -> 512
    assert default_chunk_size(1000, 100000, 16) == 128  # 0.16 -> the floor
    assert default_chunk_size(20000, 32000, 4096) == 4096  # 2560 -> 4096
    assert default_chunk_size(5, 10, 64) == 5  # never more than N


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(weight=torch.randn(7, 5)), ValueError, r"weight must have shape \(V, H\) with H=4"),
        (dict(weight=torch.randn(7, 4, dtype=torch.float64)), TypeError, "weight must have hidden's dtype"),
        (dict(target=torch.randint(7, (3,))), ValueError, r"target must have shape \(6,\)"),
        (dict(target=torch.rand(6, 7)), TypeError, "target must be a tensor of class indices"),
        (dict(target=torch.tensor([0, 1, 2, 3, 4, 7])), ValueError, "class index 7"),
        (dict(bias=torch.randn(6)), ValueError, r"bias must be a \(7,\) tensor"),
        (dict(class_weight=torch.rand(6)), ValueError, "weight must be a 1-D tensor of length C=7"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(log_end=1.5), ValueError, "log_end must be in"),
        (dict(label_smoothing=-0.1), ValueError, "label_smoothing must be in"),
        (dict(impl="cuda"), ValueError, "impl must be one of"),
        (dict(chunk_size=0), ValueError, "chunk_size must be a positive int"),
        (dict(bonus="exp"), ValueError, "bonus must be one of"),
        (dict(impl="triton", bonus="power"), ValueError, "impl='triton' implements the log bonus"),
    ],
)
def test_errors(kwargs, error, match):
    args = dict(hidden=torch.randn(6, 4), weight=torch.randn(7, 4), target=torch.randint(7, (6,)))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        linear_encouraging_loss(args.pop("hidden"), args.pop("weight"), args.pop("target"), **args)


# ----------------------------------------------------------------------------------------------- memory probe

_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from encouraging import encouraging_loss, linear_encouraging_loss
    torch.set_num_threads(1)
    n, v, h, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    def run(rows, vocab):
        hidden = torch.randn(rows, h, requires_grad=True)
        weight = torch.randn(vocab, h, requires_grad=True)
        target = torch.randint(vocab, (rows,))
        if path == "chunked":
            loss = linear_encouraging_loss(hidden, weight, target, label_smoothing=0.1, chunk_size=64)
        else:
            loss = encouraging_loss(hidden @ weight.T, target, label_smoothing=0.1, impl="autograd")
        loss.backward()
        return hidden, weight
    run(8, 64)  # lazy initialization, far below the measured call's footprint
    hidden, weight = torch.randn(n, h), torch.randn(v, h)  # the inputs and their gradients are not the op's
    grads = torch.empty_like(hidden), torch.empty_like(weight)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del hidden, weight, grads
    run(n, v)
    print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024))
    """
)


def _probe(path: str, n: int, v: int, h: int) -> int:
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(n), str(v), str(h), path], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_memory_never_holds_full_logits():
    # 2048 tokens x 32000 classes: one float32 (N, V) buffer is 262 MB. The chunked path (64 tokens per chunk,
    # 8 MB of logits) must stay under a quarter of one such buffer; the materialized loss computed op by op, as the
    # control that shows this probe can fail, needs several (the fused path holds about three, close to the bound).
    n, v, h = 2048, 32000, 32
    full = n * v * 4
    chunked = _probe("chunked", n, v, h)
    materialized = _probe("materialized", n, v, h)
    if materialized < full:  # seen on a container whose ru_maxrss did not follow the allocations
        pytest.skip(f"ru_maxrss does not track allocations here (control: {materialized / 2**20:.0f} MiB)")
    assert materialized > 1.5 * full, f"control: materialized peak {materialized / 2**20:.0f} MiB"
    assert chunked < 0.25 * full, (f"chunked peak {chunked / 2**20:.0f} MiB, one (N, V) buffer is "
                                   f"{full / 2**20:.0f} MiB")
