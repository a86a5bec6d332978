"""Gradients: float64 ``gradcheck`` for every variant, the gradient identity, the full bonus's exact gradient,
C^1 continuity of the log bonus at ``log_end``, and the full bonus at extreme logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from encouraging.losses import (
    binary_encouraging_loss,
    encouraging_loss,
    encouraging_loss_parts,
    focal_loss,
    halted_focal_loss,
    poly_loss,
)

from .helpers import TOLERANCES, assert_close, examples, random_index_target, random_probs
from .reference import ref_el_grad_hard

DT = torch.float64

# ------------------------------------------------------------------------------------------------- gradcheck

# Each entry: id -> (options, input layout, target kind). Logits are randn * 2: no class sits within gradcheck's
# 1e-6 step of a kink (log_end, bonus_start, halt, the 1 - 1e-5 floor).
EL_VARIANTS = {
    "log-le0": dict(log_end=0.0),
    "log-le0.3": dict(log_end=0.3),
    "log-le0.75": dict(log_end=0.75),
    "log-le1": dict(log_end=1.0),
    "power-g2": dict(bonus="power", gamma=2.0),
    "power-g0.5": dict(bonus="power", gamma=0.5),
    "cosine": dict(bonus="cosine"),
    "poly": dict(bonus="poly"),
    "start-log": dict(bonus_start=0.3, log_end=0.75),
    "start-log-le1": dict(bonus_start=0.2, log_end=1.0),
    "start-power": dict(bonus="power", bonus_start=0.25),
    "start-cosine-smooth": dict(bonus="cosine", bonus_start=0.1, label_smoothing=0.2),
    "smooth-log-le0.75": dict(label_smoothing=0.2),
    "smooth-log-le1": dict(label_smoothing=0.2, log_end=1.0),
    "smooth-log-le0.3": dict(label_smoothing=0.3, log_end=0.3),
    "smooth-power": dict(label_smoothing=0.1, bonus="power", gamma=3.0),
    "weights": dict(weight=True),
    "weights-same-smooth": dict(weight=True, bonus_weight="same", label_smoothing=0.1),
    "scale2.5-le0.5": dict(bonus_scale=2.5, log_end=0.5),
    "mean": dict(reduction="mean", weight=True),
    "sum": dict(reduction="sum"),
}
LAYOUTS = {"2d": (5, 4), "kdim": (2, 4, 3), "unbatched": (4,)}


def _el_inputs(options, layout, kind, ignore):
    shape = LAYOUTS[layout]
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    x = (torch.randn(shape, dtype=DT) * 2).requires_grad_()
    if kind == "probs":
        target = random_probs(shape, DT)
    else:
        target = random_index_target(shape, num_classes, -100 if ignore and layout != "unbatched" else None)
    kwargs = dict(options)
    kwargs.setdefault("reduction", "none")
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(num_classes, dtype=DT) + 0.5
    return x, target, kwargs


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("name", EL_VARIANTS)
def test_gradcheck_encouraging_loss(name, kind, layout):
    x, target, kwargs = _el_inputs(EL_VARIANTS[name], layout, kind, ignore=True)
    assert gradcheck(lambda z: encouraging_loss(z, target, **kwargs), (x,))


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("log_end", [0.3, 1.0])
def test_gradcheck_bonus_weight_and_soft_target(kind, log_end):
    """Gradients also flow to a learnable bonus weight v and to probability targets (the dense Function's
    second output), with smoothing so that every class's bonus enters."""
    x, target, kwargs = _el_inputs(dict(label_smoothing=0.2, log_end=log_end), "kdim", kind, ignore=True)
    v = (torch.rand(4, dtype=DT) + 0.5).requires_grad_()
    if kind == "probs":
        target.requires_grad_()
        assert gradcheck(lambda z, t, b: encouraging_loss(z, t, **kwargs, bonus_weight=b), (x, target, v))
    else:
        assert gradcheck(lambda z, b: encouraging_loss(z, target, **kwargs, bonus_weight=b), (x, v))


@pytest.mark.parametrize("log_end", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_gradcheck_log_probs(log_end, smoothing):
    x, target, kwargs = _el_inputs(dict(log_end=log_end, label_smoothing=smoothing), "kdim", "index", True)
    assert gradcheck(lambda z: encouraging_loss(F.log_softmax(z, 1), target, **kwargs, log_probs=True), (x,))


BINARY_VARIANTS = {
    "log-le0": dict(log_end=0.0),
    "log-le0.3": dict(log_end=0.3),
    "log-le0.75": dict(log_end=0.75),
    "log-le1": dict(log_end=1.0),
    "power": dict(bonus="power", gamma=1.5),
    "cosine": dict(bonus="cosine"),
    "start": dict(bonus_start=0.4),
    "weights": dict(weight=True, pos_weight=True),
    "mean": dict(reduction="mean", pos_weight=True),
}


@pytest.mark.parametrize("name", BINARY_VARIANTS)
def test_gradcheck_binary(name):
    kwargs = dict(BINARY_VARIANTS[name])
    kwargs.setdefault("reduction", "none")
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.rand(3, dtype=DT) + 0.5
    if kwargs.pop("pos_weight", False):
        kwargs["pos_weight"] = torch.rand(3, dtype=DT) * 3
    x = (torch.randn(4, 3, dtype=DT) * 3).requires_grad_()
    target = torch.rand(4, 3, dtype=DT).requires_grad_()  # soft labels: the target gets a gradient too
    assert gradcheck(lambda z, t: binary_encouraging_loss(z, t, **kwargs), (x, target))


BASELINES = {
    "poly": (poly_loss, dict(epsilon=1.0)),
    "poly-neg": (poly_loss, dict(epsilon=-0.5)),
    "focal-g0": (focal_loss, dict(gamma=0.0)),
    "focal-g0.5": (focal_loss, dict(gamma=0.5)),
    "focal-g2": (focal_loss, dict(gamma=2.0)),
    "hfl-h0.5": (halted_focal_loss, dict(gamma=2.0, halt=0.5)),
    "hfl-h0.2": (halted_focal_loss, dict(gamma=1.0, halt=0.2)),
    "hfl-h1": (halted_focal_loss, dict(gamma=2.0, halt=1.0)),
}


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("name", BASELINES)
def test_gradcheck_baselines(name, kind, smoothing):
    function, options = BASELINES[name]
    x, target, kwargs = _el_inputs(dict(weight=True, label_smoothing=smoothing), "kdim", kind, ignore=True)
    assert gradcheck(lambda z: function(z, target, **kwargs, **options), (x,))


# ----------------------------------------------------------------------------------------- gradient identity


@settings(max_examples=examples(150))
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(2, 8),
    scale=st.sampled_from([1e-3, 1.0, 5.0, 30.0, 1e4]),
    log_end=st.one_of(st.sampled_from([0.0, 0.3, 0.75, 1.0]), st.floats(0.0, 1.0)),
    bonus_scale=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    weighted=st.booleans(),
    bonus_weighted=st.booleans(),
)
def test_gradient_identity(seed, num_classes, scale, log_end, bonus_scale, weighted, bonus_weighted):
    """dL/df = s (p - e_y), s = w_y + rho v_y p_y/(1 - p_y) up to LE and w_y + rho v_y p_y/(1 - LE) beyond."""
    gen = torch.Generator().manual_seed(seed)
    n = 4
    x = (torch.randn(n, num_classes, generator=gen, dtype=DT) * scale).requires_grad_()
    target = torch.randint(num_classes, (n,), generator=gen)
    w = torch.rand(num_classes, generator=gen, dtype=DT) * 2 + 0.1 if weighted else None
    v = torch.rand(num_classes, generator=gen, dtype=DT) * 2 if bonus_weighted else None
    loss = encouraging_loss(x, target, w, reduction="sum", log_end=log_end, bonus_scale=bonus_scale,
                            bonus_weight=v)
    (grad,) = torch.autograd.grad(loss, x)
    for i in range(n):
        y = int(target[i])
        expected = ref_el_grad_hard(x[i].tolist(), y, weight=1.0 if w is None else float(w[y]),
                                    bonus_weight=1.0 if v is None else float(v[y]), bonus_scale=bonus_scale,
                                    log_end=log_end)
        expected = torch.tensor(expected, dtype=DT)
        # entries are s p_k; s grows like 1/(1 - LE) past LE, so compare relative to the largest
        rtol, atol = TOLERANCES[DT]
        atol *= max(1.0, expected.abs().max().item(), scale * 1e-3)
        assert_close(grad[i], expected, rtol=rtol, atol=atol, msg=f"row {i}, y={y}, p_y={F.softmax(x[i], 0)[y]}")


def test_gradient_identity_is_ce_gradient_times_multiplier():
    """The per-example multiplier: EL's gradient is CE's gradient scaled by s(p_y), row by row."""
    x = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [5.0, 1.0, 0.0]], dtype=DT, requires_grad=True)
    target = torch.tensor([0, 1, 0])
    (g_el,) = torch.autograd.grad(encouraging_loss(x, target, reduction="sum", log_end=0.75), x)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(x, target, reduction="sum"), x)
    p_y = F.softmax(x, 1).gather(1, target[:, None]).squeeze(1).detach()
    s = torch.where(p_y <= 0.75, 1 + p_y / (1 - p_y), 1 + p_y / (1 - 0.75))
    assert_close(g_el, g_ce * s[:, None])
    assert (s > 1).all() and not torch.allclose(g_el, g_ce)


# ------------------------------------------------------------------------------------------------ full bonus


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**31 - 1), num_classes=st.integers(2, 8),
       scale=st.sampled_from([1e-3, 1.0, 10.0, 100.0, 1e4]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_full_bonus_gradient_is_exact(seed, num_classes, scale, dtype):
    """LE = 1: dL/df_y = -1 exactly, dL/df_k = p_k / (1 - p_y) = softmax over the non-target classes.

    "Exactly" up to rounding: the off-target weights are p_k / (1 - p_y), and the stored
    log(1 - p_y) carries half an ulp of its own magnitude, so in float32 they sum to 1 within ~eps |log(1 - p_y)|
    and the target entry is -1 within that; in float64 the same bound is ~1e-16 |log(1 - p_y)|.
    """
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, num_classes, generator=gen, dtype=DT) * scale).to(dtype).requires_grad_()
    target = torch.randint(num_classes, (3,), generator=gen)
    (grad,) = torch.autograd.grad(encouraging_loss(x, target, reduction="sum", log_end=1.0), x)
    x64 = x.detach().double()
    log1m = x64.log_softmax(1).scatter(1, target[:, None], -math.inf).logsumexp(1)  # log(1 - p_y), exact
    bound = 2 * torch.finfo(dtype).eps * (1 + log1m.abs())
    on_target = grad.gather(1, target[:, None]).squeeze(1).double()
    assert ((on_target + 1).abs() <= bound).all(), (on_target + 1, bound)
    others = x64.scatter(1, target[:, None], -math.inf).softmax(1)  # p_k / (1 - p_y)
    off = grad.double().scatter(1, target[:, None], 0.0) - others.scatter(1, target[:, None], 0.0)
    # each weight p_k / (1 - p_y) also carries the rounding of log p_k, and on the CPU p_k = exp(log p_k) is
    # a float: below the normal range its spacing, the smallest subnormal, divided by 1 - p_y (>= 1e-30 there)
    finfo = torch.finfo(dtype)
    off_bound = (bound[:, None] + 2 * finfo.eps * x64.log_softmax(1).abs()) * others
    off_bound += finfo.tiny + finfo.tiny * finfo.eps / log1m.exp()[:, None]
    assert (off.abs() <= off_bound).all(), (off, off_bound)


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**31 - 1), num_classes=st.integers(2, 8),
       scale=st.sampled_from([1e-3, 1.0, 10.0, 100.0, 1e4]), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_full_bonus_loss_is_log_odds(seed, num_classes, scale, dtype):
    """LE = 1: L = logsumexp_{k != y} f_k - f_y for any logits."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(4, num_classes, generator=gen, dtype=DT) * scale).to(dtype)
    target = torch.randint(num_classes, (4,), generator=gen)
    loss = encouraging_loss(x, target, reduction="none", log_end=1.0)
    x64 = x.double()
    expected = x64.scatter(1, target[:, None], -math.inf).logsumexp(1) - x64.gather(1, target[:, None]).squeeze(1)
    eps = torch.finfo(dtype).eps
    assert_close(loss, expected, rtol=4 * eps, atol=4 * eps * max(1.0, x64.abs().max().item()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("y", [0, 1, 2])
def test_full_bonus_finite_at_extreme_logits(dtype, y):
    x = torch.tensor([[1e4, 0.0, -1e4]], dtype=dtype, requires_grad=True)
    target = torch.tensor([y])
    loss = encouraging_loss(x, target, log_end=1.0)
    (grad,) = torch.autograd.grad(loss, x)
    expected_loss = {0: -1e4, 1: 1e4, 2: 2e4}[y]  # logsumexp over the others minus f_y
    assert_close(loss, torch.tensor(expected_loss), rtol=1e-7, atol=0)
    expected_grad = {0: [-1.0, 1.0, 0.0], 1: [1.0, -1.0, 0.0], 2: [1.0, 0.0, -1.0]}[y]
    assert torch.isfinite(grad).all()
    assert_close(grad[0], torch.tensor(expected_grad), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------- C^1 continuity at log_end


def _bonus_and_slope(p: float, log_end: float) -> tuple[float, float]:
    """b(p) and db/dp through the public API: two classes with p_y = p, bonus part of the loss."""
    logit = math.log(p) - math.log1p(-p)
    x = torch.tensor([[logit, 0.0]], dtype=DT, requires_grad=True)
    parts = encouraging_loss_parts(x, torch.tensor([0]), reduction="none", log_end=log_end)
    (grad,) = torch.autograd.grad(parts.bonus.sum(), x)
    return parts.bonus.item(), grad[0, 0].item() / (p * (1 - p))  # dp/df_y = p (1 - p)


@pytest.mark.parametrize("log_end", [0.05, 0.3, 0.5, 0.75, 0.9, 0.99])
def test_log_bonus_is_c1_at_log_end(log_end):
    delta = 1e-6 * (1 - log_end)
    slope = -1.0 / (1.0 - log_end)  # d/dp log(1 - p) at LE
    below, slope_below = _bonus_and_slope(log_end - delta, log_end)
    above, slope_above = _bonus_and_slope(log_end + delta, log_end)
    at = math.log1p(-log_end)
    # value: both sides within one step of slope of log(1 - LE)
    assert abs(below - (at - slope * delta)) < 1e-9 and abs(above - (at + slope * delta)) < 1e-9
    # derivative: both sides meet the slope (the curvature below is 1/(1 - p)^2, so the gap is O(delta))
    assert slope_below == pytest.approx(slope, rel=1e-5) and slope_above == pytest.approx(slope, rel=1e-9)
    # past LE the bonus is the tangent line itself: linear, same slope far beyond
    far, slope_far = _bonus_and_slope(log_end + 0.5 * (1 - log_end), log_end)
    assert far == pytest.approx(at + slope * 0.5 * (1 - log_end), rel=1e-12)
    assert slope_far == pytest.approx(slope, rel=1e-9)
    # and below LE it is the curve log(1 - p), not the line
    mid = 0.5 * log_end
    value, slope_mid = _bonus_and_slope(mid, log_end)
    assert value == pytest.approx(math.log1p(-mid), rel=1e-12) and slope_mid == pytest.approx(-1 / (1 - mid))


# ---------------------------------------------------------------------------------------------- second order


@pytest.mark.parametrize("log_end", [0.0, 0.75, 1.0])
@pytest.mark.parametrize("bonus", ["log", "power", "cosine"])
def test_gradgradcheck_hard_labels(log_end, bonus):
    """Hard labels without smoothing through impl='autograd' are plain autograd: second derivatives
    (Hessian-vector products, gradient penalties) are right too; the fused paths refuse them."""
    x, target, kwargs = _el_inputs(dict(log_end=log_end, bonus=bonus, weight=True), "2d", "index", ignore=True)
    assert torch.autograd.gradgradcheck(lambda z: encouraging_loss(z, target, impl="autograd", **kwargs), (x,))
    with pytest.raises(RuntimeError, match=r"first-order: .* impl='autograd'"):
        torch.autograd.grad(encouraging_loss(x, target, impl="torch", **kwargs).sum(), x, create_graph=True)


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_double_backward_of_the_dense_bonus_raises(kind):
    """The smoothing / probability-target bonus has a hand-written first-order backward: asking for second
    derivatives must fail loudly, never drop the second-order term."""
    x, target, kwargs = _el_inputs(dict(label_smoothing=0.1), "2d", kind, ignore=False)
    (grad,) = torch.autograd.grad(encouraging_loss(x, target, **kwargs).sum(), x)  # first order is fine
    assert torch.isfinite(grad).all()
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(encouraging_loss(x, target, **kwargs).sum(), x, create_graph=True)


@pytest.mark.parametrize("num_classes, log_end", [(2, 0.5), (4, 0.25), (10, 0.1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_at_exactly_log_end(num_classes, log_end, dtype):
    """Equal logits put p_y at exactly 1/C = log_end (a zero-initialised classifier): the slope there is the
    one both pieces share, -1 on the target logit, not a piece counted twice or dropped."""
    logits = torch.zeros(3, num_classes, dtype=dtype, requires_grad=True)
    encouraging_loss(logits, torch.zeros(3, dtype=torch.long), reduction="sum", log_end=log_end).backward()
    expected = torch.full((3, num_classes), 1 / (num_classes - 1), dtype=dtype)
    expected[:, 0] = -1.0
    torch.testing.assert_close(logits.grad, expected)
