"""The compiled CPU kernel (``impl='cpp'``, ``'auto'``'s choice on the CPU) against the op-by-op reference and the
eager fused path for every option it covers, its autograd, memory and threads, its refusals and its fallback."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from encouraging.losses import EncouragingLoss, cpu_kernel, encouraging_loss

from .helpers import assert_close, examples, random_index_target, random_logits
from .test_fused import _loss_and_grad, _peak_buffers

pytestmark = pytest.mark.skipif(not cpu_kernel.available(), reason=f"the CPU kernel: {cpu_kernel.unavailable_reason()}")


@st.composite
def cases(draw):
    """(shape, ignore, options, weights, logit scale) across every option the kernel covers."""
    log_end = draw(st.sampled_from([0.0, 0.3, 0.75, 1.0]))
    smoothing = draw(st.sampled_from([0.0, 0.0, 0.1])) if log_end < 1.0 else 0.0
    floors = [0.0, 1e-5] + ([0.3] if log_end == 1.0 else [])
    opts = dict(
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        label_smoothing=smoothing,
        log_end=log_end,
        bonus_scale=draw(st.sampled_from([0.0, 1.0, 2.5])),
        bonus_floor=draw(st.sampled_from([f for f in floors if log_end == 1.0 or f <= 1.0 - log_end])),
    )
    shape = draw(st.sampled_from([(6, 5), (5,), (9, 2)]))
    ignore = draw(st.booleans()) and len(shape) > 1
    weights = draw(st.sampled_from(["none", "weight", "both", "same"]))
    return shape, ignore, opts, weights, draw(st.sampled_from([0.5, 3.0, 30.0]))


def _inputs(shape, ignore, weights, dtype, scale, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[-1] if len(shape) == 1 else shape[1]
    x = random_logits(shape, dtype, scale=scale, generator=g)
    target = random_index_target(shape, c, ignore_index=-100 if ignore else None, generator=g)
    w = torch.rand(c, dtype=dtype, generator=g).add_(0.5)
    extra = {"none": {}, "weight": {"weight": w}, "both": {"weight": w, "bonus_weight": w.flip(0)},
             "same": {"weight": w, "bonus_weight": "same"}}[weights]
    return x, target, extra


@given(cases())
@settings(max_examples=examples(150))
def test_kernel_equals_the_reference_in_float64(case):
    shape, ignore, opts, weights, scale = case
    x, target, extra = _inputs(shape, ignore, weights, torch.float64, scale)
    loss, grad, upstream = _loss_and_grad("autograd", x, target, extra, opts)
    k_loss, k_grad, _ = _loss_and_grad("cpp", x, target, extra, opts, upstream)
    msg = f"{shape} ignore={ignore} {opts} {weights} scale={scale}"
    assert_close(k_loss, loss, atol=1e-12 * scale, rtol=1e-9, msg=msg)
    assert_close(k_grad, grad, atol=1e-12 * scale, rtol=1e-9, msg="grad " + msg)


@given(cases())
@settings(max_examples=examples(60))
def test_loss_and_grad_op_equals_the_eager_closed_form(case):
    """The op the linear loss's chunks use: per-row losses, and the gradient of sum_i s_i L_i for per-row factors s
    (0 at ignored rows, as the chunks pass them), equal to fused.loss_and_grad in float64; loss only without s."""
    from encouraging.losses.fused import Options, loss_and_grad

    shape, ignore, opts, weights, scale = case
    if len(shape) == 1:
        shape = (1, *shape)
    x, target, extra = _inputs(shape, ignore, weights, torch.float64, scale)
    w = extra.get("weight")
    v = w if extra.get("bonus_weight") == "same" else extra.get("bonus_weight")
    factors = torch.rand(shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2)).add_(0.5)
    o = Options(-100, opts["label_smoothing"], opts["log_end"], opts["bonus_scale"], "log", 2.0, 0.0,
                opts["bonus_floor"])
    loss, grad = loss_and_grad(x, target, w, v, factors, o)
    k_loss, k_grad = cpu_kernel.loss_and_grad(x, target, w, v, factors, -100, *o[1:4], o.bonus_floor)
    assert_close(k_loss, loss, atol=1e-12 * scale, rtol=1e-9)
    assert_close(k_grad, grad, atol=1e-12 * scale, rtol=1e-9)
    only, none = cpu_kernel.loss_and_grad(x, target, w, v, None, -100, *o[1:4], o.bonus_floor)
    assert none is None and torch.equal(only, k_loss)


def test_loss_and_grad_op_dtypes_and_errors():
    x = torch.randn(4, 7).to(torch.bfloat16)
    target = torch.tensor([0, 6, -100, 3])
    loss, grad = cpu_kernel.loss_and_grad(x, target, None, None, torch.ones(4), -100, 0.1, 0.75, 1.0, 0.0)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16 and not grad[2].any()
    with pytest.raises(ValueError, match=r"row_scale must be a \(4,\) tensor"):
        cpu_kernel.loss_and_grad(x, target, None, None, torch.ones(3), -100, 0.0, 0.75, 1.0, 0.0)
    with pytest.raises(ValueError, match="target contains class index 9, outside"):
        cpu_kernel.loss_and_grad(x, torch.tensor([0, 9, 1, 2]), None, None, None, -100, 0.0, 0.75, 1.0, 0.0)


@given(cases())
@settings(max_examples=examples(60))
def test_kernel_float32_is_as_close_to_float64_truth_as_the_fused_path(case):
    """In float32 against the float64 reference: at most as far off as the eager fused path, plus a float32 unit
    (the kernel sums rows in float64, so it is usually closer)."""
    shape, ignore, opts, weights, scale = case
    x, target, extra = _inputs(shape, ignore, weights, torch.float64, scale)
    truth, truth_grad, upstream = _loss_and_grad("autograd", x, target, extra, opts)
    x32 = x.float()
    extra32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in extra.items()}
    up32 = upstream.float()
    fused, fused_grad, _ = _loss_and_grad("torch", x32, target, extra32, opts, up32)
    kernel, kernel_grad, _ = _loss_and_grad("cpp", x32, target, extra32, opts, up32)
    assert kernel.dtype == torch.float32 and kernel_grad.dtype == torch.float32
    for got, ref, truth_ in ((kernel, fused, truth), (kernel_grad, fused_grad, truth_grad)):
        unit = 2e-6 * (1.0 + truth_.abs())
        assert ((got.double() - truth_).abs() <= (ref.double() - truth_).abs() + unit * scale).all()


@pytest.mark.parametrize("opts", [{}, {"log_end": 1.0}, {"log_end": 1.0, "bonus_floor": 1e-5},
                                  {"label_smoothing": 0.1, "log_end": 0.5}])
def test_extreme_logits_stay_finite_and_match(opts):
    """Logits 1e4 apart: p_y rounds to 1 or to 0, the other classes' exponentials underflow (the full bonus then
    takes log(1 - p_y) from the logits by logsumexp); the kernel stays finite and equals the reference."""
    x = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 5.0], [-3.0, 2.0, 1.0], [-1e4, 0.0, 1e4]], dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    ref, ref_grad, up = _loss_and_grad("autograd", x, target, {}, opts)
    loss, grad, _ = _loss_and_grad("cpp", x, target, {}, opts, up)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert_close(loss, ref, rtol=1e-9, atol=1e-9)
    assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32_and_returned_in_its_dtype(dtype):
    """Half-precision logits are read by the kernel (no float32 copy of them) and computed in float32: loss and
    gradient equal the float64 reference on the same rounded logits to the dtype's rounding of the output."""
    x = random_logits((16, 11), dtype, scale=3.0)
    target = torch.randint(11, (16,))
    target[3] = -100
    for opts in ({}, {"label_smoothing": 0.1}, {"log_end": 1.0}, {"reduction": "none"}):
        ref, ref_grad, up = _loss_and_grad("autograd", x.double(), target, {}, opts)
        loss, grad, _ = _loss_and_grad("cpp", x, target, {}, opts, up.to(dtype))
        assert loss.dtype == dtype and grad.dtype == dtype
        assert_close(loss, ref, dtype, msg=str(opts))
        assert_close(grad, ref_grad, dtype, msg=f"grad {opts}")
    assert "EncouragingFunction" in encouraging_loss(x.requires_grad_(), target).grad_fn.name()


def test_gradcheck():
    x = random_logits((5, 4), torch.float64, scale=2.0).requires_grad_()
    target = torch.tensor([0, 3, -100, 1, 2])
    w = torch.rand(4, dtype=torch.float64) + 0.5
    for opts in ({}, {"log_end": 1.0, "bonus_floor": 1e-5}, {"label_smoothing": 0.2, "log_end": 0.6},
                 {"reduction": "none", "weight": w, "bonus_weight": w.flip(0)}):
        assert torch.autograd.gradcheck(lambda z, o=opts: encouraging_loss(z, target, impl="cpp", **o), (x,))


def test_auto_takes_the_kernel_on_the_cpu_where_it_applies():
    x = random_logits((16, 6), torch.float32).requires_grad_()
    target = torch.randint(6, (16,))
    weighted = {"weight": torch.rand(6) + 0.5, "bonus_weight": "same"}
    for opts in ({}, {"log_end": 1.0}, {"label_smoothing": 0.1}, weighted):
        assert "EncouragingFunction" in encouraging_loss(x, target, **opts).grad_fn.name()
    for opts in ({"bonus": "power"}, {"bonus_start": 0.2}, {"label_smoothing": 0.1, "log_end": 1.0}):
        assert "Fused" in encouraging_loss(x, target, **opts).grad_fn.name()
    module = EncouragingLoss(log_end=0.75, impl="cpp")
    assert_close(module(x, target), encouraging_loss(x, target, impl="torch"))


def test_unsupported_calls_and_bad_targets_are_named():
    x = random_logits((4, 3), torch.float32)
    target = torch.tensor([0, 1, 2, 1])
    for kwargs, why in (({"bonus": "power"}, "a bonus other than 'log'"),
                        ({"label_smoothing": 0.1, "log_end": 1.0}, "label smoothing with log_end above"),
                        ({"log_end": 0.9, "bonus_floor": 0.2}, "a bonus_floor above 1 - log_end")):
        with pytest.raises(ValueError, match=f"impl='cpp' does not support {why}"):
            encouraging_loss(x, target, impl="cpp", **kwargs)
    with pytest.raises(ValueError, match="impl='cpp' does not support input with more than 2 dimensions"):
        encouraging_loss(x.view(4, 3, 1), target.view(4, 1), impl="cpp")
    with pytest.raises(ValueError, match="impl='cpp' does not support probability targets"):
        encouraging_loss(x, torch.softmax(x, 1), impl="cpp")
    with pytest.raises(ValueError, match="impl='cpp' does not support torch.float8_e4m3fn input"):
        encouraging_loss(x.to(torch.float8_e4m3fn), target, impl="cpp")
    for bad, value in ((torch.tensor([0, 1, 3, 1]), 3), (torch.tensor([0, -1, 2, 1]), -1)):
        with pytest.raises(ValueError, match=rf"target contains class index {value}, outside \[0, 3\)"):
            encouraging_loss(x, bad)
    for kwargs, name in (({"reduction": "avg"}, "reduction"), ({"label_smoothing": 1.5}, "label_smoothing"),
                         ({"log_end": 2.0}, "log_end"), ({"bonus_floor": -1.0}, "bonus_floor")):
        with pytest.raises(ValueError, match=name):  # the fast path checks what the general one checks
            encouraging_loss(x, target, **kwargs)


def test_upstream_gradients_scale_as_on_the_fused_path():
    """An upstream factor multiplies the saved gradient and per-element upstreams scale its rows (retain_graph
    and second derivatives: test_fused.py's test_backward_twice_with_retain_graph_and_second_derivatives)."""
    x = random_logits((6, 4), torch.float64).requires_grad_()
    target = torch.randint(4, (6,))
    (first,) = torch.autograd.grad(encouraging_loss(x, target, impl="cpp"), x)
    (tripled,) = torch.autograd.grad(3.0 * encouraging_loss(x, target, impl="cpp"), x)
    assert_close(tripled, 3.0 * first)
    up = torch.arange(6, dtype=torch.float64)
    (rows,) = torch.autograd.grad(encouraging_loss(x, target, reduction="none", impl="cpp"), x, up)
    (ref,) = torch.autograd.grad(encouraging_loss(x, target, reduction="none", impl="torch"), x, up)
    assert_close(rows, ref)


def test_all_ignored_batches_match_cross_entropy():
    """'mean' over a batch where every target is ignored is 0 / 0 (NaN) as in torch; 'sum' is 0."""
    x = random_logits((3, 4), torch.float64).requires_grad_()
    target = torch.full((3,), -100)
    for reduction in ("mean", "sum"):
        ce = F.cross_entropy(x, target, reduction=reduction)
        el = encouraging_loss(x, target, reduction=reduction, impl="cpp")
        assert_close(el, ce, equal_nan=True)
        (grad,) = torch.autograd.grad(el, x)
        assert (grad == 0).all()


def test_threads_do_not_change_the_result():
    """Rows are split across threads (each row's arithmetic alone) and the loss summed in row order: one
    thread and two give identical bits."""
    x = random_logits((4096, 16), torch.float32, scale=3.0).requires_grad_()
    target = torch.randint(16, (4096,))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(_loss_and_grad("cpp", x, target, {}, {"log_end": 1.0}, torch.tensor(1.0)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_non_contiguous_logits_and_float32_weights_with_float64_logits():
    x = random_logits((5, 6), torch.float64).t().requires_grad_()  # (6, 5), column-major
    target = torch.tensor([0, 4, 2, 1, 3, 0])
    w = torch.rand(5) + 0.5
    ref, ref_grad, up = _loss_and_grad("autograd", x, target, {"weight": w.double()}, {"log_end": 0.5})
    loss, grad, _ = _loss_and_grad("cpp", x, target, {"weight": w}, {"log_end": 0.5}, up)
    assert_close(loss, ref, rtol=1e-6)  # the weight was given in float32
    assert_close(grad, ref_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("opts, baseline", [
    ({}, {}), ({"log_end": 1.0, "bonus_floor": 1e-5}, {}),
    ({"label_smoothing": 0.1, "log_end": 0.5}, {"label_smoothing": 0.1}),
])
def test_no_more_memory_than_cross_entropy(opts, baseline):
    ce = _peak_buffers(lambda x, t: F.cross_entropy(x, t, **baseline))
    kernel = _peak_buffers(lambda x, t: encouraging_loss(x, t, impl="cpp", **opts))
    assert kernel <= ce + 0.05, f"kernel {kernel:.2f} (N, C) buffers at its peak, CE {ce:.2f}"
    assert kernel >= 0.95  # the probe sees the kernel's gradient buffer


def test_a_failed_build_warns_once_and_auto_falls_back(monkeypatch):
    """No compiler, no ninja, a broken toolchain: the reason is kept, one warning says so, 'auto' computes the
    same loss by the eager fused path and ``impl='cpp'`` says why it cannot."""
    def broken():
        raise RuntimeError("Error building extension 'encouraging_cpu'\nc++: command not found")

    monkeypatch.setattr(cpu_kernel, "_state", {"tried": False, "error": None})
    monkeypatch.setattr(cpu_kernel, "_build", broken)
    x = random_logits((4, 3), torch.float32).requires_grad_()
    target = torch.tensor([0, 1, 2, 1])
    with pytest.warns(RuntimeWarning, match="CPU kernel is unavailable, it could not be built .*command not found"):
        loss = encouraging_loss(x, target)
    assert "Fused" in loss.grad_fn.name()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        encouraging_loss(x, target)
    with pytest.raises(RuntimeError, match="impl='cpp' is unavailable: it could not be built"):
        encouraging_loss(x, target, impl="cpp")


def test_the_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(cpu_kernel, "_state", {"tried": False, "error": None})  # a fresh process
    monkeypatch.setenv("ENCOURAGING_CPU_KERNEL", "0")
    assert cpu_kernel.unavailable_reason() == "it is switched off (ENCOURAGING_CPU_KERNEL=0)"
    x = random_logits((4, 3), torch.float32).requires_grad_()
    assert "Fused" in encouraging_loss(x, torch.tensor([0, 1, 2, 1])).grad_fn.name()


def test_the_build_finds_ninja_in_the_environment_and_restores_path(monkeypatch):
    """A venv's own bin (where ``pip install ninja`` puts it) is searched last during the build, and PATH is
    restored after it, also when the build fails."""
    import sysconfig

    import torch.utils.cpp_extension as cpp_extension

    seen = []

    def fake_load(name, sources, **kwargs):
        seen.append(os.environ["PATH"])
        raise RuntimeError("no compiler")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setenv("PATH", "/somewhere")
    with pytest.raises(RuntimeError, match="no compiler"):
        cpu_kernel._build()
    assert seen == [os.pathsep.join(["/somewhere", sysconfig.get_path("scripts")])]
    assert os.environ["PATH"] == "/somewhere"
