"""The Triton EL kernels against the PyTorch loss: value and logits gradient across shapes (odd sizes, several
blocks per row), class indices and probability targets, ignore_index, label smoothing, class and bonus weights,
log_end (0, 0.3, 0.75, 1), the floor, per-row gradient scales, extreme logits and dtypes; the few-launch path
(hypothesis, launch counts, target range); in-place only when asked; and the chunked linear path with
``impl='triton'`` against ``impl='torch'``.

Without a GPU the kernel runs in Triton's interpreter on CPU tensors, in a fresh pytest subprocess with
``TRITON_INTERPRET=1`` (it must be set before triton is first imported). With a CUDA device (and the variable
unset) the same tests run the compiled kernel on the GPU, in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

# On the CPU the kernel tests run in a fresh interpreter (one subprocess, ``test_kernels_in_fresh_interpreter``):
# TRITON_INTERPRET must be set before triton and the kernel are first imported, and other test modules (torch
# compile, transformers) import triton earlier in the same pytest process.
IN_CHILD = os.environ.get("ENCOURAGING_TRITON_CHILD") == "1"
DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
RUN_HERE = DEVICE == "cuda" or IN_CHILD
pytest.importorskip("triton")
here = pytest.mark.skipif(not RUN_HERE, reason="runs in test_kernels_in_fresh_interpreter's subprocess")

from encouraging import encouraging_loss, linear_encouraging_loss  # noqa: E402
from encouraging.losses import disable_checks  # noqa: E402

if RUN_HERE:
    from encouraging.losses.triton import available, el_loss_and_grad

from .helpers import assert_close, examples  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# (N, V, block): several blocks per row with a ragged last one, a single partial block, one class pair.
SHAPES = [(7, 37, 16), (5, 300, 64), (3, 1000, 128), (4, 2, 16)]
HALF = [torch.float16, torch.bfloat16]
REDUCTIONS = ["mean", "none"]
# The default suite's interpreter run keeps every option at one shape with several ragged blocks and one reduction
# of the linear path, in fp32 (interpreting costs up to seconds per case); the slow run and the GPU run take all.
if os.environ.get("ENCOURAGING_TRITON_QUICK") == "1":
    SHAPES, HALF, REDUCTIONS = [(5, 300, 64)], [], ["none"]
OPTIONS = {
    "plain": {},
    "le0": dict(log_end=0.0),
    "le0.3": dict(log_end=0.3, bonus_scale=2.0),
    "le1": dict(log_end=1.0),
    "smooth": dict(label_smoothing=0.2),
    "smooth-le1": dict(label_smoothing=0.1, log_end=1.0),
    "smooth-le0": dict(label_smoothing=0.1, log_end=0.0),
    "weights": dict(weight=True, bonus_weight=True),
    "weights-smooth": dict(weight=True, bonus_weight=True, label_smoothing=0.1),
    "floor": dict(log_end=1.0, bonus_floor=1e-2),
    "floor-le0.75": dict(bonus_floor=0.3),
    "ce": dict(bonus_scale=0.0, label_smoothing=0.1),
}


def _reference(logits, target, opts, scale, dtype=torch.float64):
    """``encouraging_loss(reduction='none')`` and the gradient of ``sum_i scale_i L_i``, computed in ``dtype`` by
    the op-by-op reference (``impl='autograd'``)."""
    x = logits.detach().to(dtype).requires_grad_()
    kwargs = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in opts.items() if k != "weight"}
    weight = opts["weight"].to(dtype) if "weight" in opts else None
    loss = encouraging_loss(x, target, weight, reduction="none", impl="autograd", **kwargs)
    (grad,) = torch.autograd.grad((loss * scale.to(dtype)).sum(), x)
    return loss, grad


def _assert_like_torch(loss, grad, logits, target, opts, scale):
    """Judged against float64 truth next to the PyTorch loss's own float32 error (as CCE's tests do): the dense
    bonus -p / (1 - p) of a likely non-target class, or logits of 1e4 (float32 spacing 1e-3), lose digits in any
    float32 computation."""
    truth, truth_grad = _reference(logits, target, opts, scale)
    ref, ref_grad = _reference(logits, target, opts, scale, torch.float32)
    for name, out, r, t in (("loss", loss, ref, truth), ("grad", grad, ref_grad, truth_grad)):
        err, err_ref = (out.double() - t).abs().max().item(), (r.double() - t).abs().max().item()
        assert err <= 2 * err_ref + 2e-6 * max(1.0, t.abs().max().item()), f"{name}: {err} vs torch {err_ref}"


def _options(opts, v):
    opts = dict(opts)
    for key in ("weight", "bonus_weight"):
        if opts.get(key) is True:
            opts[key] = torch.rand(v, dtype=torch.float64, device=DEVICE).add(0.5)
    return opts


@here
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(OPTIONS))
def test_kernel_parity(shape, name):
    n, v, block = shape
    logits = torch.randn(n, v, device=DEVICE) * 3
    target = torch.randint(v, (n,), device=DEVICE)
    target[0] = -100
    scale = torch.rand(n, device=DEVICE) + 0.5
    opts = _options(OPTIONS[name], v)
    loss, grad = el_loss_and_grad(logits, target, grad_scale=scale, block_size=block, **opts)
    _assert_like_torch(loss, grad, logits, target, opts, scale)
    assert torch.equal(grad[0], torch.zeros_like(grad[0]))  # the ignored row


@here
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", list(OPTIONS))
def test_kernel_parity_probability_targets(shape, name):
    """Probability targets (the second kernel): every class's bonus the floored dense one, judged like the class
    index kernel; also with ``impl='triton'`` through autograd, each reduction."""
    n, v, block = shape
    logits = torch.randn(n, v, device=DEVICE) * 3
    probs = torch.softmax(torch.randn(n, v, device=DEVICE) * 2, 1)
    probs[0] = torch.nn.functional.one_hot(torch.tensor(v - 1), v).float()  # a one-hot row: the last class
    scale = torch.rand(n, device=DEVICE) + 0.5
    opts = _options(OPTIONS[name], v)
    loss, grad = el_loss_and_grad(logits, probs, grad_scale=scale, block_size=block, **opts)
    _assert_like_torch(loss, grad, logits, probs, opts, scale)
    kwargs = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    for reduction in ("mean", "sum"):
        x = logits.clone().requires_grad_()
        reduced = encouraging_loss(x, probs, reduction=reduction, impl="triton", **kwargs)
        (reduced_grad,) = torch.autograd.grad(reduced, x)
        x64 = logits.double().requires_grad_()
        expected = encouraging_loss(x64, probs.double(), reduction=reduction, impl="autograd",
                                    **{k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()})
        (expected_grad,) = torch.autograd.grad(expected, x64)
        assert_close(reduced.double(), expected.detach(), torch.float32, atol=1e-4, rtol=1e-5)
        assert_close(reduced_grad.double(), expected_grad, torch.float32, atol=1e-5, rtol=1e-4)


@here
@pytest.mark.parametrize("name", list(OPTIONS))
def test_materialized_logits_through_impl_triton(name):
    """``encouraging_loss(impl='triton')`` (the kernel behind the fused autograd Function) judged like the kernel,
    each reduction; its gradient flows through autograd to the logits."""
    logits = torch.randn(5, 300, device=DEVICE) * 3
    target = torch.randint(300, (5,), device=DEVICE)
    target[0] = -100
    opts = _options(OPTIONS[name], 300)
    kwargs = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    scale = torch.rand(5, device=DEVICE) + 0.5
    x = logits.clone().requires_grad_()
    loss = encouraging_loss(x, target, reduction="none", impl="triton", **kwargs)
    (grad,) = torch.autograd.grad(loss, x, scale)
    _assert_like_torch(loss.detach(), grad, logits, target, opts, scale)
    for reduction in ("mean", "sum"):
        x = logits.clone().requires_grad_()
        reduced = encouraging_loss(x, target, reduction=reduction, impl="triton", **kwargs)
        (reduced_grad,) = torch.autograd.grad(reduced, x)
        expected = encouraging_loss(logits.double().requires_grad_(), target, reduction=reduction, impl="autograd",
                                    **{k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()})
        assert_close(reduced.double(), expected.detach(), torch.float32, atol=1e-4, rtol=1e-5)
        assert torch.isfinite(reduced_grad).all()


@here
@pytest.mark.parametrize("targets", ["index", "probs"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", ["plain", "smooth", "weights-floor"])
def test_kdim_input_through_impl_triton(name, layout, targets):
    """``(N, C, d1, d2)`` logits take the Triton kernel as ``(N d1 d2, C)`` rows: loss and gradient equal the
    float64 reference for every reduction, in both memory layouts, and the caller's logits are never
    overwritten (the kernel writes its gradient in place only over its own classes-last copy)."""
    n, c, d1, d2 = 3, 37, 4, 5
    gen = torch.Generator().manual_seed(7)
    logits = (torch.randn(n, c, d1, d2, generator=gen) * 3).to(DEVICE)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    if targets == "probs":
        target = torch.softmax(torch.randn(n, c, d1, d2, generator=gen) * 2, 1).to(DEVICE)
    else:
        target = torch.randint(c, (n, d1, d2), generator=gen).to(DEVICE)
        target[0, 0, :2] = -100
    kwargs = {"plain": {}, "smooth": dict(label_smoothing=0.1, log_end=1.0),
              "weights-floor": dict(weight=torch.rand(c, generator=gen).to(DEVICE) + 0.5, bonus_weight="same",
                                    bonus_floor=1e-3, log_end=0.5)}[name]
    for reduction in ("mean", "sum", "none"):
        x = logits.clone(memory_format=torch.preserve_format).requires_grad_()
        before = x.detach().clone()
        loss = encouraging_loss(x, target, reduction=reduction, impl="triton", **kwargs)
        upstream = torch.rand(loss.shape, generator=gen).to(DEVICE) + 0.5
        (grad,) = torch.autograd.grad(loss, x, upstream)
        assert torch.equal(x.detach(), before)
        x64 = logits.double().requires_grad_()
        expected = encouraging_loss(x64, target.double() if targets == "probs" else target, reduction=reduction,
                                    impl="autograd", **{k: (v.double() if isinstance(v, torch.Tensor) else v)
                                                        for k, v in kwargs.items()})
        (expected_grad,) = torch.autograd.grad(expected, x64, upstream.double())
        assert loss.shape == expected.shape
        assert_close(loss.double(), expected.detach(), torch.float32, atol=1e-4, rtol=1e-5)
        assert_close(grad.double(), expected_grad, torch.float32, atol=1e-5, rtol=1e-4)


@st.composite
def launch_cases(draw):
    """Every option the few-launch path (``triton.loss``) takes: reductions, smoothing, log_end, bonus_scale (0
    included: ``impl='triton'`` keeps the kernel), the floor, class and bonus weights, and class indices with
    ignored rows (none, some, all) or probability targets."""
    n, v = draw(st.integers(1, 9)), draw(st.sampled_from([2, 37, 300]))
    opts = dict(
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1])),
        log_end=draw(st.sampled_from([0.0, 0.3, 0.75, 1.0])),
        bonus_scale=draw(st.sampled_from([0.0, 1.0, 2.5])),
        bonus_floor=draw(st.sampled_from([0.0, 0.0, 1e-5, 0.3])),
    )
    weights = draw(st.sampled_from(["none", "weight", "both", "same"]))
    targets = draw(st.sampled_from(["none", "some", "all", "probs"]))  # ignored class indices, or probabilities
    return n, v, opts, weights, targets, draw(st.integers(0, 99))


@here
@given(launch_cases())
@settings(max_examples=examples(25 if os.environ.get("ENCOURAGING_TRITON_QUICK") == "1" else 150), deadline=None)
def test_few_launch_path_equals_the_reference(case):
    """``encouraging_loss(impl='triton')`` of plain ``(N, C)`` logits takes the few-launch path, and its loss and
    gradient (random upstream for ``'none'``) are as close to float64 truth as the float32 reference's."""
    n, v, opts, weights, ignored, seed = case  # ignored: "none", "some", "all" or "probs" (probability targets)
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=g) * 3).to(DEVICE)
    target = torch.randint(v, (n,), generator=g)
    if ignored in ("some", "all"):
        target[:: 1 if ignored == "all" else 2] = -100
    if ignored == "probs":
        target = torch.softmax(torch.randn(n, v, generator=g) * 3, 1)
    target = target.to(DEVICE)
    w = (torch.rand(v, generator=g) + 0.5).to(DEVICE)
    upstream = torch.rand(n, generator=g).add(0.5).to(DEVICE) if opts["reduction"] == "none" else None
    results, paths = [], []
    for impl, dtype in (("triton", torch.float32), ("autograd", torch.float64), ("autograd", torch.float32)):
        x = logits.to(dtype).requires_grad_()
        extra = {"none": {}, "weight": {"weight": w.to(dtype)}, "same": {"weight": w.to(dtype), "bonus_weight": "same"},
                 "both": {"weight": w.to(dtype), "bonus_weight": w.flip(0).to(dtype)}}[weights]
        y = target.to(dtype) if target.is_floating_point() else target
        loss = encouraging_loss(x, y, impl=impl, **extra, **opts)
        paths.append(type(loss.grad_fn).__name__)
        results.append((loss.detach(), *torch.autograd.grad(loss, x, upstream)))
    assert paths[0] == "_TritonEncouragingLossBackward" and results[0][0].dtype == torch.float32
    (out, out_grad), (truth, truth_grad), (ref, ref_grad) = ((a.double(), b.double()) for a, b in results)
    if opts["reduction"] == "mean" and not target.is_floating_point() and (target == -100).all():  # 0 / 0
        assert out.isnan() and truth.isnan() and not out_grad.any()
        return
    for name, a, r, t in (("loss", out, ref, truth), ("grad", out_grad, ref_grad, truth_grad)):
        err, err_ref = (a - t).abs().max().item(), (r - t).abs().max().item()
        assert err <= 2 * err_ref + 2e-6 * max(1.0, t.abs().max().item()), f"{name}: {err} vs torch {err_ref}"


@here
def test_few_launch_path_is_taken_and_launches_as_few_kernels_as_cross_entropy():
    """The kernels one forward+backward starts, counted below autograd (aten ops that launch work, Triton
    launches as one each): EL at most F.cross_entropy's count plus the target-range assert, EL with smoothing fewer
    than smoothed CE. On the CPU interpreter the assert is a host read, on CUDA ``_assert_async``."""
    logits = torch.randn(64, 10, device=DEVICE)
    target = torch.randint(10, (64,), device=DEVICE)

    def count(fn):
        x = logits.clone().requires_grad_()
        with _Launches() as launches:
            fn(x).backward()
        return launches.names

    ce = count(lambda x: F.cross_entropy(x, target))
    ce_smooth = count(lambda x: F.cross_entropy(x, target, label_smoothing=0.1))
    probs = torch.softmax(logits, 1)
    for y, kwargs in ((target, {}), (target, dict(log_end=1.0)), (target, dict(label_smoothing=0.1)), (probs, {})):
        x = logits.clone().requires_grad_()
        assert type(encouraging_loss(x, y, impl="triton", **kwargs).grad_fn).__name__ == \
            "_TritonEncouragingLossBackward"
        el = count(lambda x, y=y, kwargs=kwargs: encouraging_loss(x, y, impl="triton", **kwargs))
        # target_stats and the row kernel; probabilities: the row kernel after a fill of 1 / N
        assert el.count("triton") == (1 if y is probs else 2), el
        assert len(el) <= len(ce) + 1, (el, ce)
        assert len(el) < len(ce_smooth), (el, ce_smooth)
    with pytest.raises(ValueError, match="ignore_index=0 is not supported for probability"):
        encouraging_loss(logits, probs, ignore_index=0, impl="triton")  # the general path's check still applies


class _Launches(TorchDispatchMode):
    """Names of the ops that start device work: aten ops other than allocations and views, and Triton launches
    as ``"triton"`` (the interpreter's own tensor traffic inside a launch is not counted)."""

    FREE = {"empty", "empty_like", "empty_strided", "new_empty", "select", "slice", "unsqueeze", "squeeze", "view",
            "expand", "t", "detach", "alias", "lift_fresh"}

    def __enter__(self):
        from encouraging.losses.triton import el

        self.names, self._inside = [], 0
        self._kernel_class = kernel_class = type(el._el_kernel)  # JITFunction, or the interpreter's
        self._run = run = kernel_class.run

        def counted(kernel, *args, **kwargs):
            self.names.append("triton")
            self._inside += 1
            try:
                return run(kernel, *args, **kwargs)
            finally:
                self._inside -= 1

        kernel_class.run = counted
        return super().__enter__()

    def __exit__(self, *exc):
        self._kernel_class.run = self._run
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not self._inside and name not in self.FREE:
            self.names.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA's allocator statistics (the CPU probe is in test_fused.py)")
@pytest.mark.parametrize("opts, baseline", [({}, {}), ({"log_end": 1.0}, {}),
                                            ({"label_smoothing": 0.1}, {"label_smoothing": 0.1})])
def test_few_launch_path_memory_on_cuda(opts, baseline):
    """Peak CUDA memory of one forward + backward beyond the inputs, in (N, C) buffers: the few-launch path (the
    gradient kept from forward and its scaled copy) at most F.cross_entropy's (log-probabilities and two gradient
    buffers in backward)."""
    n, c = 256, 4096

    def peak(fn):
        x = torch.randn(n, c, device="cuda", requires_grad=True)
        target = torch.randint(c, (n,), device="cuda")
        fn(x, target).backward()
        x.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x, target).backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / (n * c * 4)

    ce = peak(lambda x, t: F.cross_entropy(x, t, **baseline))
    el = peak(lambda x, t: encouraging_loss(x, t, impl="triton", **opts))
    assert el <= ce + 0.05, f"EL {el:.2f} (N, C) buffers at its peak, CE {ce:.2f}"
    assert ce >= 2.0  # the probe sees CE's buffers


@here
def test_few_launch_path_target_range():
    """A target outside [0, C) that is not ignore_index: ValueError on the CPU (CUDA asserts on the device, as
    F.cross_entropy, which would poison this process's context); with the checks off the row kernel never reads
    outside the row and gives that row a NaN loss and gradient, the others their values."""
    x = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    bad = torch.tensor([0, 7, -100, 2], device=DEVICE)
    if DEVICE == "cpu":
        with pytest.raises(ValueError, match=r"target contains class index 7, outside \[0, 5\) and not ignore_index"):
            encouraging_loss(x, bad, impl="triton")
    with disable_checks():
        loss = encouraging_loss(x, bad, impl="triton", reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    good = bad.clone()
    good[1] = -100
    assert loss[1].isnan() and grad[1].isnan().all() and not grad[2].any()
    expected = encouraging_loss(x, good, impl="autograd", reduction="none")
    assert_close(loss[[0, 2, 3]], expected[[0, 2, 3]].detach(), torch.float32)


@here
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", ["plain", "smooth-le1"])
def test_kernel_half_precision(dtype, name):
    # float32 inside: the loss is as exact as float32; the gradient is rounded once to the logits' dtype.
    logits = (torch.randn(6, 300, device=DEVICE) * 3).to(dtype)
    target = torch.randint(300, (6,), device=DEVICE)
    scale = torch.ones(6, device=DEVICE)
    loss, grad = el_loss_and_grad(logits, target, block_size=64, **OPTIONS[name])
    ref, ref_grad = _reference(logits, target, OPTIONS[name], scale)
    assert grad.dtype == dtype
    assert_close(loss, ref, torch.float32, rtol=1e-5, atol=1e-5)
    ulp = 2**-8 if dtype == torch.bfloat16 else 2**-11
    assert_close(grad, ref_grad, rtol=ulp, atol=ulp * ref_grad.abs().max().item())


@here
@pytest.mark.parametrize("soft", [False, True], ids=["indices", "probabilities"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_kernel_extreme_logits_full_bonus(label_smoothing, soft):
    # 1 - p_y = e^-1e4 underflows: the full bonus's slope -p / (1 - p) would overflow; value and gradient must
    # stay finite and match the exact float64 loss (whose target gradient is exactly -1 + smoothing terms). With
    # probability targets every class's bonus is floored (at 1 - p = 1e-5), the top class's 1 - p exact.
    logits = torch.full((3, 40), -1e4, device=DEVICE)
    logits[0, 5] = 1e4
    logits[1] = torch.randn(40, device=DEVICE)
    logits[2, 7] = 1e4
    target = torch.tensor([5, 3, 9], device=DEVICE)
    if soft:
        target = torch.softmax(torch.randn(3, 40, device=DEVICE), 1).mul(0.5).add(
            torch.nn.functional.one_hot(target, 40), alpha=0.5)
    opts = dict(log_end=1.0, label_smoothing=label_smoothing)
    loss, grad = el_loss_and_grad(logits, target, block_size=16, **opts)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    _assert_like_torch(loss, grad, logits, target, opts, torch.ones(3, device=DEVICE))


@here
def test_inplace_only_when_asked():
    logits = torch.randn(4, 50, device=DEVICE)
    target = torch.randint(50, (4,), device=DEVICE)
    before = logits.clone()
    loss, grad = el_loss_and_grad(logits, target, label_smoothing=0.1, block_size=16)
    assert torch.equal(logits, before) and grad.data_ptr() != logits.data_ptr()
    loss_only, none = el_loss_and_grad(logits, target, label_smoothing=0.1, compute_grad=False, block_size=16)
    assert none is None and torch.equal(loss_only, loss) and torch.equal(logits, before)
    loss2, grad2 = el_loss_and_grad(logits, target, label_smoothing=0.1, inplace=True, block_size=16)
    assert grad2.data_ptr() == logits.data_ptr()
    assert_close(grad2, grad, rtol=0, atol=0)
    assert_close(loss2, loss, rtol=0, atol=0)


@here
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(logits=torch.randn(3, 5, dtype=torch.float64)), TypeError, "float32, float16 or bfloat16"),
        (dict(logits=torch.randn(5, 3).t()), ValueError, "contiguous rows"),
        (dict(target=torch.zeros(2, dtype=torch.long)), ValueError, r"target must be a \(3,\) tensor"),
        (dict(target=torch.rand(3, 4)), ValueError, r"or \(3, 5\) probabilities, got shape \(3, 4\)"),
        (dict(weight=torch.rand(4)), ValueError, "weight must be a 1-D tensor of length C=5"),
        (dict(log_end=2.0), ValueError, "log_end must be in"),
        (dict(grad_scale=torch.ones(2)), ValueError, r"grad_scale must have shape \(3,\)"),
    ],
)
def test_kernel_errors(kwargs, error, match):
    args = dict(logits=torch.randn(3, 5), target=torch.zeros(3, dtype=torch.long))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        el_loss_and_grad(args.pop("logits").to(DEVICE), args.pop("target").to(DEVICE), **args)


@here
@pytest.mark.parametrize("opts", [dict(label_smoothing=0.1), dict(log_end=1.0, class_weight=True),
                                  dict(log_end=0.5, bonus_weight=True, bonus_floor=1e-3, bonus_scale=2.0)],
                         ids=["smooth", "le1-weights", "bonus-weights-floor"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_linear_triton_matches_torch(opts, reduction):
    assert available(DEVICE)
    opts = dict(opts)
    for name in ("class_weight", "bonus_weight"):
        if opts.pop(name, False):
            opts[name] = torch.rand(301, device=DEVICE) + 0.5
    hidden = torch.randn(45, 16, device=DEVICE, requires_grad=True)
    weight = torch.randn(301, 16, device=DEVICE, requires_grad=True)
    bias = torch.randn(301, device=DEVICE, requires_grad=True)
    target = torch.randint(301, (45,), device=DEVICE)
    target[::7] = -100
    results = []
    for impl in ("triton", "torch"):
        out = linear_encouraging_loss(hidden, weight, target, bias, reduction=reduction, chunk_size=16, impl=impl,
                                      **opts)
        results.append((out, *torch.autograd.grad(out.sum(), (hidden, weight, bias))))
    for a, b in zip(*results, strict=True):
        assert_close(a, b, torch.float32, rtol=1e-4, atol=1e-5)


COMPILE_CASES = {
    "rows": {},
    "rows-full-floor-weights": dict(FULL=True, HAS_FLOOR=True, HAS_W=True, HAS_V=True, HAS_SCALE=True),
    "rows-smooth-mean": dict(SMOOTH=True, HAS_SCALE=True, SCALE_LOSS=True),
    "rows-loss-only-bf16": dict(COMPUTE_GRAD=False, dtype="bf16"),
    "soft-weights": dict(kernel="soft", HAS_W=True, HAS_V=True, HAS_SCALE=True),
    "soft-full-fp16": dict(kernel="soft", FULL=True, dtype="fp16"),
    "stats": dict(kernel="stats", HAS_W=True),
}


@pytest.mark.skipif(IN_CHILD or os.environ.get("TRITON_INTERPRET") == "1",
                    reason="compiles the kernels (the interpreter replaces triton.jit)")
@pytest.mark.parametrize("name", list(COMPILE_CASES))
def test_kernels_compile_for_the_h100(name):
    """Triton's own toolchain builds each kernel for sm_90 without a GPU: the interpreter runs a kernel's Python,
    not its compilation, so a construct that only fails to compile would pass every other test on the CPU."""
    from encouraging.losses.triton import el

    case = dict(COMPILE_CASES[name])
    kernel, dtype = case.pop("kernel", "rows"), case.pop("dtype", "fp32")
    jit = {"rows": el._el_kernel, "soft": el._el_soft_kernel, "stats": el._target_stats_kernel}[kernel]
    flags = {p.name: p.name == "COMPUTE_GRAD" for p in jit.params if p.is_constexpr and p.name != "BLOCK"}
    compiled = el.compile_for(90, kernel, dtype=dtype, num_warps=4, BLOCK=1024, **{**flags, **case})
    assert ".entry" in compiled.asm["ptx"] and compiled.asm["cubin"]


@pytest.mark.skipif(RUN_HERE, reason="the kernel tests run in this process")
@pytest.mark.parametrize("quick", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["quick", "all"])
def test_kernels_in_fresh_interpreter(quick):
    env = {**os.environ, "TRITON_INTERPRET": "1", "ENCOURAGING_TRITON_CHILD": "1",
           "ENCOURAGING_TRITON_QUICK": "1" if quick else "0"}
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-x"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
