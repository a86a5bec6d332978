"""Numerics: half precision, extreme logits, and torch.compile.

* float16 / bfloat16 inputs: finite, returned in the input dtype, within the dtype's tolerance of the float64
  truth on the same rounded inputs, and no worse than a small multiple of torch's own cross-entropy error;
* logits of +-1e4: finite loss and gradient for every variant (float32, and the half types);
* ``torch.compile(fullgraph=True)`` equals eager in value and gradient (aot_eager by default; inductor, which
  compiles C++ for minutes on a small CPU, under ``-m slow``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encouraging.losses import (
    BinaryEncouragingLoss,
    EncouragingLoss,
    binary_encouraging_loss,
    encouraging_loss,
    focal_loss,
    halted_focal_loss,
    poly_loss,
)

from .helpers import assert_close, random_probs
from .reference import ref_encouraging_loss

HALF = [torch.float16, torch.bfloat16]

# name -> (function, options, target kind). Every softmax variant the library offers.
VARIANTS = {
    "default": (encouraging_loss, dict(), "index"),
    "le0": (encouraging_loss, dict(log_end=0.0), "index"),
    "le0.5": (encouraging_loss, dict(log_end=0.5), "index"),
    "le1": (encouraging_loss, dict(log_end=1.0), "index"),
    "smooth": (encouraging_loss, dict(label_smoothing=0.1), "index"),
    "smooth-le1": (encouraging_loss, dict(label_smoothing=0.1, log_end=1.0), "index"),
    "probs": (encouraging_loss, dict(), "probs"),
    "probs-le1": (encouraging_loss, dict(log_end=1.0), "probs"),
    "power": (encouraging_loss, dict(bonus="power", gamma=0.5), "index"),
    "power-smooth": (encouraging_loss, dict(bonus="power", label_smoothing=0.1), "index"),
    "cosine": (encouraging_loss, dict(bonus="cosine", label_smoothing=0.1), "index"),
    "start": (encouraging_loss, dict(bonus_start=0.5, log_end=1.0), "index"),
    "start-smooth": (encouraging_loss, dict(bonus_start=0.5, label_smoothing=0.2), "index"),
    "weights": (encouraging_loss, dict(weight=True, bonus_weight="same", label_smoothing=0.1), "index"),
    "scale3": (encouraging_loss, dict(bonus_scale=3.0, log_end=0.9), "index"),
    "poly": (poly_loss, dict(label_smoothing=0.1), "index"),
    "focal": (focal_loss, dict(), "index"),
    "focal-g0.5": (focal_loss, dict(gamma=0.5), "index"),
    "focal-smooth": (focal_loss, dict(gamma=0.5, label_smoothing=0.1), "probs"),
    "hfl": (halted_focal_loss, dict(), "index"),
    "hfl-h1-g0.5": (halted_focal_loss, dict(gamma=0.5, halt=1.0), "index"),
}


def _inputs(kind, shape, dtype, scale, generator=None):
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    if kind == "probs":
        target = random_probs(shape, torch.float64, generator=generator).to(dtype)
    else:
        target = torch.randint(shape[1], (shape[0],) + tuple(shape[2:]), generator=generator)
    return x.to(dtype), target


def _options(options, num_classes, dtype):
    options = dict(options)
    if options.pop("weight", False):
        options["weight"] = torch.linspace(0.5, 2.0, num_classes, dtype=dtype)
    return options


# ------------------------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name", VARIANTS)
def test_half_precision_close_to_float64(name, dtype):
    function, options, kind = VARIANTS[name]
    x, target = _inputs(kind, (64, 10), dtype, 3.0)
    x.requires_grad_()
    loss = function(x, target, reduction="none", **_options(options, 10, dtype))
    assert loss.dtype == dtype
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert grad.dtype == dtype and torch.isfinite(loss).all() and torch.isfinite(grad).all()
    # truth: the same (rounded) inputs in float64
    x64 = x.detach().double().requires_grad_()
    t64 = target.double() if target.is_floating_point() else target
    loss64 = function(x64, t64, reduction="none", **_options(options, 10, torch.float64))
    (grad64,) = torch.autograd.grad(loss64.sum(), x64)
    assert_close(loss, loss64, dtype, msg="loss")
    assert_close(grad, grad64, dtype, msg="gradient")


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("options", [dict(), dict(log_end=1.0), dict(label_smoothing=0.1)], ids=str)
def test_half_precision_error_no_worse_than_torch_cross_entropy(options, dtype):
    """Judge our half-precision error against torch's own: mean absolute error over 2048 elements, each against
    float64 truth on the same rounded inputs, within twice F.cross_entropy's at that dtype (plus a hair)."""
    x, target = _inputs("index", (2048, 10), dtype, 3.0)
    ours = encouraging_loss(x, target, reduction="none", **options).double()
    truth = ref_encouraging_loss(x.double(), target, reduction="none", **options)
    smoothing = options.get("label_smoothing", 0.0)
    theirs = F.cross_entropy(x, target, reduction="none", label_smoothing=smoothing).double()
    ce_truth = F.cross_entropy(x.double(), target, reduction="none", label_smoothing=smoothing)
    our_error = (ours - truth).abs().mean().item()
    torch_error = (theirs - ce_truth).abs().mean().item()
    assert our_error <= 2 * torch_error + 1e-6, (our_error, torch_error)


def test_half_precision_is_computed_in_float32():
    """Rounding half inputs once on the way out, not at every step: the result is the float32 result rounded."""
    x, target = _inputs("index", (32, 7), torch.float16, 3.0)
    ours = encouraging_loss(x, target, reduction="none", label_smoothing=0.1, log_end=1.0)
    via32 = encouraging_loss(x.float(), target, reduction="none", label_smoothing=0.1, log_end=1.0).half()
    assert torch.equal(ours, via32)


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("log_end", [0.75, 1.0])
def test_binary_half_precision(dtype, log_end):
    x = (torch.randn(64, 5) * 4).to(dtype).requires_grad_()
    target = torch.randint(2, (64, 5)).to(dtype)
    loss = binary_encouraging_loss(x, target, reduction="none", log_end=log_end)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert loss.dtype == dtype and grad.dtype == dtype
    x64 = x.detach().double().requires_grad_()
    loss64 = binary_encouraging_loss(x64, target.double(), reduction="none", log_end=log_end)
    (grad64,) = torch.autograd.grad(loss64.sum(), x64)
    assert_close(loss, loss64, dtype)
    assert_close(grad, grad64, dtype)


# ----------------------------------------------------------------------------------------- extreme logits


def _extreme_logits(dtype, num_classes=5):
    """Rows of +-1e4 and 0 in every arrangement that matters: one dominant class, ties at the top, all equal,
    and random signs; targets on the dominant, the middle and the most negative class."""
    rows = [
        [1e4, 0.0, -1e4, -1e4, 0.0],
        [-1e4, -1e4, 1e4, 1e4, 0.0],
        [1e4, 1e4, 1e4, 1e4, 1e4],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
    ]
    gen = torch.Generator().manual_seed(0)
    rows += (torch.randint(0, 3, (8, num_classes), generator=gen).double() - 1).mul(1e4).tolist()
    x = torch.tensor(rows, dtype=torch.float64)
    n = len(rows)
    target = torch.arange(n) % num_classes
    return x.to(dtype), target


@pytest.mark.parametrize("dtype", [torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("name", VARIANTS)
def test_finite_at_extreme_logits(name, dtype):
    function, options, kind = VARIANTS[name]
    x, target = _extreme_logits(dtype)
    if kind == "probs":
        target = random_probs(tuple(x.shape), dtype)
    else:
        target[[1, -1]] = -100  # ignored elements at extreme logits must not leak NaN through the masked branch
    x.requires_grad_()
    for reduction in ("none", "mean"):
        loss = function(x, target, reduction=reduction, **_options(options, 5, dtype))
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert torch.isfinite(loss).all(), (reduction, loss)
        assert torch.isfinite(grad).all(), (reduction, grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits_values_stay_exact(dtype):
    """Not just finite: at +-1e4 the hard-label losses keep their exact values (no clamp where an exact form
    exists): CE 0 or 2e4, full bonus log-odds, tangent past LE."""
    x = torch.tensor([[1e4, 0.0, -1e4]] * 3, dtype=dtype)
    target = torch.tensor([0, 1, 2])
    le1 = encouraging_loss(x, target, reduction="none", log_end=1.0)
    assert_close(le1, torch.tensor([-1e4, 1e4, 2e4]), rtol=1e-7, atol=0)
    le = encouraging_loss(x, target, reduction="none", log_end=0.75)
    tangent_at_1 = math.log(0.25) + (1 - 0.75) / (0.75 - 1)  # b(1) on the line
    assert_close(le, torch.tensor([tangent_at_1, 1e4, 2e4]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, *HALF], ids=str)
@pytest.mark.parametrize("options", [dict(log_end=0.75), dict(log_end=1.0), dict(bonus="power"),
                                     dict(bonus="cosine", bonus_start=0.3)], ids=str)
def test_binary_finite_at_extreme_logits(options, dtype):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=dtype, requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]], dtype=dtype)
    loss = BinaryEncouragingLoss(pos_weight=torch.tensor([2.0, 1.0, 0.5]), reduction="none", **options)(x, target)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_float32_log_end_just_below_one_is_not_exact():
    """Documents a known limit: for LE < 1 the bonus up to LE uses log(1 - p_y) from log p_y, which float32 cannot
    resolve once 1 - p_y nears its epsilon; only LE = 1 takes the exact logsumexp form. At LE = 1 - 1e-6 the
    float32 error at p_y = 1 - 2e-6 is ~1e-2, against ~1e-6 at LE = 1 (the exact path)."""
    p = 1 - 2e-6
    x = torch.tensor([[math.log(p / (1 - p)), 0.0]])
    target = torch.tensor([0])
    near = encouraging_loss(x, target, log_end=1 - 1e-6).double()
    exact = ref_encouraging_loss(x.double(), target, log_end=1 - 1e-6)
    full = encouraging_loss(x, target, log_end=1.0).double()
    full_exact = ref_encouraging_loss(x.double(), target, log_end=1.0)
    assert abs(full - full_exact) < 1e-5
    assert abs(near - exact) < 0.1  # bounded, but far from float32's resolution of this loss (~1e-6)


# ---------------------------------------------------------------------------------------------- torch.compile


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


COMPILE_CASES = {
    "default": dict(),
    "smooth": dict(label_smoothing=0.1),
    "le1": dict(log_end=1.0),
}


def _compare_compiled(compiled, eager, x, target):
    xc = x.clone().requires_grad_()
    xe = x.clone().requires_grad_()
    lc, le = compiled(xc, target), eager(xe, target)
    (gc,), (ge,) = torch.autograd.grad(lc, xc), torch.autograd.grad(le, xe)
    assert_close(lc, le, rtol=1e-6, atol=1e-7, msg="loss")
    assert_close(gc, ge, rtol=1e-6, atol=1e-8, msg="gradient")


@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compile_fullgraph_matches_eager(case, fresh_dynamo):
    options = COMPILE_CASES[case]
    x, target = _inputs("index", (16, 7), torch.float32, 3.0)
    compiled = torch.compile(lambda a, b: encouraging_loss(a, b, **options), fullgraph=True, backend="aot_eager")
    _compare_compiled(compiled, lambda a, b: encouraging_loss(a, b, **options), x, target)


@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compiled_module_matches_eager(case, fresh_dynamo):
    module = EncouragingLoss(**COMPILE_CASES[case])
    x, target = _inputs("index", (4, 7, 3), torch.float32, 3.0)  # K-dim through the compiled module
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    _compare_compiled(compiled, module, x, target)


def test_compile_probability_targets(fresh_dynamo):
    x, target = _inputs("probs", (8, 5), torch.float32, 3.0)
    options = dict(label_smoothing=0.1, log_end=1.0)
    compiled = torch.compile(lambda a, b: encouraging_loss(a, b, **options), fullgraph=True, backend="aot_eager")
    _compare_compiled(compiled, lambda a, b: encouraging_loss(a, b, **options), x, target)


@pytest.mark.slow
@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compile_inductor_matches_eager(case, fresh_dynamo):
    options = COMPILE_CASES[case]
    x, target = _inputs("index", (16, 7), torch.float32, 3.0)
    compiled = torch.compile(lambda a, b: encouraging_loss(a, b, **options), fullgraph=True, backend="inductor")
    _compare_compiled(compiled, lambda a, b: encouraging_loss(a, b, **options), x, target)

