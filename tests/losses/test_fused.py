"""The fused path (``impl='torch'``: loss and gradient computed together in forward) against the op-by-op
reference (``impl='autograd'``) for every option, its memory against ``F.cross_entropy``'s, and its errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from encouraging.losses import EncouragingLoss, cpu_kernel, disable_checks, encouraging_loss

from .helpers import assert_close, examples, random_index_target, random_logits, random_probs

SHAPES = {"2d": (6, 5), "kdim": (3, 4, 2, 3), "unbatched": (5,)}


@st.composite
def cases(draw):
    """(shape, target kind, options) across every option of the loss."""
    shape = SHAPES[draw(st.sampled_from(sorted(SHAPES)))]
    kind = draw(st.sampled_from(["index", "index-ignore", "probs"]))
    bonus = draw(st.sampled_from(["log", "log", "power", "cosine"]))
    opts = dict(
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1])),
        log_end=draw(st.sampled_from([0.0, 0.3, 0.75, 1.0])),
        bonus_scale=draw(st.sampled_from([0.0, 1.0, 2.5])),
        bonus=bonus,
        gamma=draw(st.sampled_from([1.0, 2.0])),
        bonus_start=draw(st.sampled_from([0.0, 0.0, 0.2])),
        bonus_floor=draw(st.sampled_from([0.0, 0.0, 1e-5, 0.3])),
    )
    weights = draw(st.sampled_from(["none", "weight", "both", "same"]))
    return shape, kind, opts, weights, draw(st.sampled_from([0.5, 3.0, 30.0]))


def _inputs(shape, kind, weights, scale, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[0] if len(shape) == 1 else shape[1]
    x = random_logits(shape, dtype, scale=scale, generator=g)
    if kind == "probs":
        target = random_probs(shape, dtype, generator=g)
    else:
        ignore = -100 if kind == "index-ignore" and len(shape) > 1 else None
        target = random_index_target(shape, c, ignore_index=ignore, generator=g)
    w = torch.rand(c, dtype=dtype, generator=g).add_(0.5)
    extra = {"none": {}, "weight": {"weight": w}, "both": {"weight": w, "bonus_weight": w.flip(0)},
             "same": {"weight": w, "bonus_weight": "same"}}[weights]
    return x, target, extra


def _loss_and_grad(impl, x, target, extra, opts, upstream=None):
    z = x.detach().clone().requires_grad_()
    loss = encouraging_loss(z, target, impl=impl, **extra, **opts)
    upstream = torch.randn_like(loss, generator=torch.Generator().manual_seed(1)) if upstream is None else upstream
    (grad,) = torch.autograd.grad(loss, z, upstream)
    return loss.detach(), grad, upstream


@given(cases())
@settings(max_examples=examples(150))
def test_fused_equals_the_reference_in_float64(case):
    shape, kind, opts, weights, scale = case
    x, target, extra = _inputs(shape, kind, weights, scale, torch.float64)
    loss, grad, upstream = _loss_and_grad("autograd", x, target, extra, opts)
    fused_loss, fused_grad, _ = _loss_and_grad("torch", x, target, extra, opts, upstream)
    # logits up to 30 * 4 sigma apart: the loss terms grow like |f| (helpers.TOLERANCES)
    assert_close(fused_loss, loss, atol=1e-12 * scale, rtol=1e-9, msg=f"{shape} {kind} {opts} {weights}")
    assert_close(fused_grad, grad, atol=1e-12 * scale, rtol=1e-9, msg=f"grad {shape} {kind} {opts} {weights}")


@given(cases())
@settings(max_examples=examples(60))
def test_fused_float32_is_as_close_to_float64_truth_as_the_reference(case):
    """Both paths in float32 against the float64 reference: the fused one is at most as far off (plus a float32
    unit), so fusing never costs precision."""
    shape, kind, opts, weights, scale = case
    x, target, extra = _inputs(shape, kind, weights, scale, torch.float64)
    truth, truth_grad, upstream = _loss_and_grad("autograd", x, target, extra, opts)
    x32, target32 = x.float(), target.float() if target.is_floating_point() else target
    extra32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
    for what, index in (("loss", 0), ("grad", 1)):
        ref = _loss_and_grad("autograd", x32, target32, extra32, opts, upstream.float())[index].double()
        fused = _loss_and_grad("torch", x32, target32, extra32, opts, upstream.float())[index].double()
        t = (truth, truth_grad)[index]
        err, err_ref = (fused - t).abs().max().item(), (ref - t).abs().max().item()
        bound = 2 * err_ref + 4e-6 * max(1.0, t.abs().max().item())
        assert err <= bound, f"{what}: fused {err} vs reference {err_ref} ({shape} {kind} {opts} {weights})"


@pytest.mark.parametrize("opts", [{}, {"log_end": 1.0}, {"label_smoothing": 0.1, "log_end": 0.5},
                                  {"log_end": 1.0, "bonus_floor": 1e-5}, {"bonus": "power"}])
def test_extreme_logits_stay_finite_and_match(opts):
    x = torch.tensor([[1e4, -1e4, 0.0], [-50.0, 50.0, 49.0], [0.0, 0.0, 0.0]], dtype=torch.float32)
    target = torch.tensor([0, 1, 2])
    loss, grad, upstream = _loss_and_grad("autograd", x.double(), target, {}, opts, torch.tensor(1.0).double())
    fused_loss, fused_grad, _ = _loss_and_grad("torch", x, target, {}, opts, torch.tensor(1.0))
    assert torch.isfinite(fused_loss) and torch.isfinite(fused_grad).all()
    assert_close(fused_loss.double(), loss, rtol=1e-5, atol=1e-3)  # float32 spacing at 1e4 is 1e-3
    assert_close(fused_grad.double(), grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_the_reference(dtype):
    x = random_logits((16, 11), dtype)
    target = torch.randint(11, (16,))
    for opts in ({}, {"label_smoothing": 0.1}, {"log_end": 1.0}):
        loss, grad, upstream = _loss_and_grad("autograd", x, target, {}, opts, torch.tensor(1.0, dtype=dtype))
        fused_loss, fused_grad, _ = _loss_and_grad("torch", x, target, {}, opts, upstream)
        assert fused_loss.dtype == dtype and fused_grad.dtype == dtype
        assert_close(fused_loss, loss, dtype)
        assert_close(fused_grad, grad, dtype)


def test_auto_is_cross_entropy_without_the_bonus_and_a_fused_path_with_it():
    """auto: ``F.cross_entropy`` itself without the bonus; on the CPU the compiled kernel where it applies and
    builds (tests/losses/test_cpu_kernel.py), the eager fused path where it does not (K-dim input here)."""
    x = random_logits((32, 7), torch.float32).requires_grad_()
    target = torch.randint(7, (32,))
    for smoothing in (0.0, 0.1):
        ce = F.cross_entropy(x, target, label_smoothing=smoothing)
        assert torch.equal(encouraging_loss(x, target, bonus_scale=0.0, label_smoothing=smoothing), ce)
    auto = encouraging_loss(x, target, label_smoothing=0.1)
    kernel = cpu_kernel.available()
    assert auto.grad_fn is not None and ("EncouragingFunction" if kernel else "Fused") in auto.grad_fn.name()
    kdim, kdim_target = x.detach().view(8, 4, 7).transpose(1, 2).requires_grad_(), target.view(8, 4)
    auto = encouraging_loss(kdim, kdim_target, label_smoothing=0.1)
    assert "Fused" in auto.grad_fn.name()
    assert torch.equal(auto, encouraging_loss(kdim, kdim_target, label_smoothing=0.1, impl="torch"))


def test_auto_takes_the_reference_where_only_it_applies():
    """log-probabilities, and weights or probability targets that require grad (the fused path differentiates
    the logits only): auto computes them op by op, and the explicit fused impls refuse them."""
    x = random_logits((8, 5), torch.float64).requires_grad_()
    target = torch.randint(5, (8,))
    weight = torch.rand(5, dtype=torch.float64, requires_grad=True)
    loss = encouraging_loss(x, target, weight)
    (grad_w,) = torch.autograd.grad(loss, weight)
    assert torch.isfinite(grad_w).all() and grad_w.abs().sum() > 0
    soft = torch.softmax(random_logits((8, 5), torch.float64), 1).requires_grad_()
    (grad_t,) = torch.autograd.grad(encouraging_loss(x, soft), soft)
    assert grad_t.abs().sum() > 0
    log_p = x.log_softmax(1)
    assert torch.equal(encouraging_loss(log_p, target, log_probs=True),
                       encouraging_loss(log_p, target, log_probs=True, impl="autograd"))
    with pytest.raises(ValueError, match="impl='torch' differentiates the input only, but weight requires grad"):
        encouraging_loss(x, target, weight, impl="torch")
    with pytest.raises(ValueError, match="log_probs=True needs impl='autograd'"):
        encouraging_loss(log_p, target, log_probs=True, impl="torch")


def test_bad_impl_and_unsupported_triton_calls_are_named():
    x = random_logits((4, 3), torch.float32).requires_grad_()
    target = torch.randint(3, (4,))
    with pytest.raises(ValueError, match="impl must be one of .*'torch', 'cpp', 'triton', 'autograd'.*got 'cuda'"):
        encouraging_loss(x, target, impl="cuda")
    with pytest.raises(ValueError, match="impl must be one of"):
        EncouragingLoss(impl="fast")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="impl='triton' does not support a cpu tensor"):
            encouraging_loss(x, target, impl="triton")
    with pytest.raises(ValueError, match="impl='triton' does not support a bonus other than 'log'"):
        encouraging_loss(x, target, bonus="power", impl="triton")
    with pytest.raises(ValueError, match="impl='triton' does not support float64 input"):
        encouraging_loss(x.double(), target, impl="triton")


@pytest.mark.parametrize("impl", ["torch", pytest.param("cpp", marks=pytest.mark.skipif(
    not cpu_kernel.available(), reason="the CPU kernel is unavailable"))])
def test_backward_twice_with_retain_graph_and_second_derivatives(impl):
    """Both first-order paths (the fused one and the CPU kernel) give the same gradient twice with retain_graph
    and refuse second derivatives."""
    x = random_logits((6, 4), torch.float64).requires_grad_()
    target = torch.randint(4, (6,))
    loss = encouraging_loss(x, target, impl=impl)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    assert torch.equal(first, second)
    with pytest.raises(RuntimeError, match="first-order: for second derivatives .* impl='autograd'"):
        torch.autograd.grad(encouraging_loss(x, target, impl=impl), x, create_graph=True)


def test_backward_reads_the_upstream_gradient_only_where_it_pays():
    """On the CPU backward reads the upstream gradient (no wait) and hands the saved gradient over when it is 1;
    elsewhere only for gradients of 2^24 elements and more, where the skipped pass costs more than the wait."""
    from encouraging.losses.fused import _SYNC_WORTH, _worth_reading

    one = torch.ones(())
    assert _worth_reading(one, torch.empty(4, 3))
    assert not _worth_reading(one.to("meta"), torch.empty(4, 3, device="meta"))
    assert _worth_reading(one.to("meta"), torch.empty(_SYNC_WORTH, device="meta"))
    x = random_logits((6, 4), torch.float32).requires_grad_()
    target = torch.randint(4, (6,))
    encouraging_loss(x, target, impl="torch").backward()
    first = x.grad
    x.grad = None
    (2.0 * encouraging_loss(x, target, impl="torch")).backward()  # an upstream 2: multiplied, not handed over
    assert_close(x.grad, 2.0 * first)


def _peak_buffers(fn, n=128, c=2048) -> float:
    """Peak CPU memory of one forward + backward beyond its inputs, in (N, C) float32 buffers, from the
    profiler's allocation records (each allocation at its op's start, each free at its op's end)."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(n, c, requires_grad=True)
    target = torch.randint(c, (n,))
    fn(x, target).backward()
    x.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x, target).backward()
    steps = sorted((e.time_range.start if e.self_cpu_memory_usage > 0 else e.time_range.end, e.self_cpu_memory_usage)
                   for e in prof.events() if e.self_cpu_memory_usage)
    live = peak = 0
    for _, delta in steps:
        live += delta
        peak = max(peak, live)
    return peak / (n * c * 4)


@pytest.mark.parametrize("opts, baseline", [
    ({}, {}), ({"log_end": 1.0}, {}), ({"log_end": 1.0, "bonus_floor": 1e-5}, {}),
    ({"label_smoothing": 0.1, "log_end": 0.5}, {"label_smoothing": 0.1}),
])
def test_no_more_memory_than_cross_entropy(opts, baseline):
    """The fused path's peak (the gradient kept from forward, and its scaled copy in backward) against
    ``F.cross_entropy``'s (log-probabilities, the NLL gradient and the softmax gradient)."""
    ce = _peak_buffers(lambda x, t: F.cross_entropy(x, t, **baseline))
    fused = _peak_buffers(lambda x, t: encouraging_loss(x, t, impl="torch", **opts))
    assert fused <= ce + 0.05, f"fused {fused:.2f} (N, C) buffers at its peak, CE {ce:.2f}"
    assert ce >= 2.5  # the probe sees CE's buffers (it would pass vacuously if it saw nothing)


def test_compiled_module_is_one_graph():
    x = random_logits((16, 9), torch.float32).requires_grad_()
    target = torch.randint(9, (16,))
    criterion = EncouragingLoss(log_end=0.75, label_smoothing=0.1)
    compiled = torch.compile(criterion, fullgraph=True, backend="aot_eager")
    loss = compiled(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    ref_loss, ref_grad, _ = _loss_and_grad("autograd", x, target, {}, {"log_end": 0.75, "label_smoothing": 0.1},
                                           torch.tensor(1.0))
    assert_close(loss.detach(), ref_loss)
    assert_close(grad, ref_grad)


def test_torch_func_transforms_take_the_reference():
    """Per-example gradients (torch.func.vmap over torch.func.grad, as the analyses compute them) run op by op
    under 'auto'; the fused impls refuse the transforms."""
    x = random_logits((5, 4), torch.float64)
    target = torch.randint(4, (5,))
    per_example = torch.func.vmap(torch.func.grad(lambda z, t: encouraging_loss(z, t, log_end=0.5)))(
        x.unsqueeze(1), target.unsqueeze(1))
    for i in range(5):
        _, grad, _ = _loss_and_grad("torch", x[i:i + 1], target[i:i + 1], {}, {"log_end": 0.5},
                                    torch.tensor(1.0, dtype=torch.float64))
        assert_close(per_example[i], grad)
    with pytest.raises(ValueError, match="impl='torch' does not run under torch.func transforms"):
        torch.func.grad(lambda z: encouraging_loss(z, target, impl="torch"))(x)


@pytest.mark.parametrize("opts", [{}, {"log_end": 1.0}, {"label_smoothing": 0.1}, {"log_end": 1.0, "bonus_floor": 1e-5},
                                  {"bonus": "power"}])
def test_the_unmasked_fast_path_equals_the_masked_one(opts):
    """Where the range check finds no ignored target the fused path builds no mask; with the checks off (no range
    read) it masks: both give the same loss and gradient, and an ignore_index inside [0, C) that occurs is masked."""
    x = random_logits((16, 7), torch.float64, scale=3.0)
    target = torch.randint(7, (16,), generator=torch.Generator().manual_seed(3))
    fast = _loss_and_grad("torch", x, target, {}, opts, torch.tensor(1.0, dtype=torch.float64))
    with disable_checks():
        masked = _loss_and_grad("torch", x, target, {}, opts, torch.tensor(1.0, dtype=torch.float64))
    assert_close(fast[0], masked[0], rtol=1e-12, atol=1e-12)
    assert_close(fast[1], masked[1], rtol=1e-12, atol=1e-12)
    ignored = target[0].item()  # a real class used as ignore_index: its rows count for nothing
    loss, grad, _ = _loss_and_grad("torch", x, target, {}, {**opts, "ignore_index": ignored, "reduction": "sum"},
                                   torch.tensor(1.0, dtype=torch.float64))
    keep = target != ignored
    ref, ref_grad, _ = _loss_and_grad("autograd", x[keep], target[keep], {}, {**opts, "reduction": "sum"},
                                      torch.tensor(1.0, dtype=torch.float64))
    assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    assert_close(grad[keep], ref_grad, rtol=1e-12, atol=1e-12)
    assert (grad[~keep] == 0).all()
