"""MSE / MAE with the mirror bonus (``mirror_loss``, ``MirrorLoss``) and their presets in the loss registry.

The checklist of every loss: a plain float64 reference written here with loops (hypothesis draws the problems),
float64 ``gradcheck``, ``bonus_scale=0`` against torch's own ``F.mse_loss`` / ``F.l1_loss``, the paper's formula
(``torch.mean`` over examples and classes), reductions, class weights, ``ignore_index``, K-dim and unbatched
layouts, half precision, extreme logits and bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from encouraging import MirrorLoss as TopLevelMirrorLoss
from encouraging.engine.config import LossConfig
from encouraging.engine.criteria import (
    build_criterion,
    build_schedule,
    get_loss,
    list_losses,
    loss_label,
    loss_params,
    parse_loss_spec,
)
from encouraging.losses import BonusSchedule, MirrorLoss, mirror_loss

from .helpers import (
    TOLERANCES,
    assert_close,
    examples,
    index_target_shape,
    input_shapes,
    random_index_target,
    random_probs,
)

IGNORE_INDEX = -100
BASES = ["mse", "mae"]
LINKS = ["softmax", "sigmoid"]

# ---------------------------------------------------------------------------------------- float64 reference


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _probabilities(row: list[float], link: str) -> tuple[list[float], list[float]]:
    """``p_k`` and ``1 - p_k`` for one class vector (``1 - sigmoid(x)`` as ``sigmoid(-x)``)."""
    if link == "sigmoid":
        return [_sigmoid(f) for f in row], [_sigmoid(-f) for f in row]
    top = max(row)
    exps = [math.exp(f - top) for f in row]
    total = math.fsum(exps)
    p = [e / total for e in exps]
    return p, [1.0 - v for v in p]


def ref_mirror_loss(input, target, weight=None, ignore_index=IGNORE_INDEX, reduction="mean", label_smoothing=0.0,
                    *, base="mse", link="softmax", bonus_scale=1.0, gamma=2.0):
    """The module docstring's formula, one example and one class at a time with Python floats."""
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    num_classes = x.shape[1]
    rows = x.detach().to(torch.float64).movedim(1, -1).reshape(-1, num_classes).tolist()
    soft = target.is_floating_point()
    if soft:
        t_rows = (target.unsqueeze(0) if unbatched else target).to(torch.float64).movedim(1, -1)
        t_rows = t_rows.reshape(-1, num_classes).tolist()
        out_shape = (x.shape[0],) + tuple(x.shape[2:])
    else:
        labels = target.reshape(-1).tolist()
        out_shape = tuple(target.shape)
    w = [1.0] * num_classes if weight is None else weight.to(torch.float64).tolist()
    eps, rho = label_smoothing, bonus_scale

    def a(u: float) -> float:
        return u * u if base == "mse" else u

    values, denominator = [], 0.0
    for i, row in enumerate(rows):
        if soft:
            truth = t_rows[i]
            omega = sum(tk * wk for tk, wk in zip(truth, w, strict=True)) if weight is not None else 1.0
            denominator += 1.0
        else:
            if labels[i] == ignore_index:
                values.append(0.0)
                continue
            truth = [1.0 if k == labels[i] else 0.0 for k in range(num_classes)]
            omega = w[labels[i]]
            denominator += omega
        truth = [(1.0 - eps) * tk + eps / num_classes for tk in truth]
        p, q = _probabilities(row, link)
        total = 0.0
        for k in range(num_classes):
            on = a(q[k]) - rho * p[k] ** gamma
            off = a(p[k]) - rho * q[k] ** gamma
            total += truth[k] * on + (1.0 - truth[k]) * off
        values.append(omega * total)
    if reduction == "none":
        return torch.tensor(values, dtype=torch.float64).reshape(() if unbatched else out_shape)
    total = math.fsum(values)
    if reduction == "mean":  # every element ignored: 0 / 0, NaN as in torch
        total = total / (denominator * num_classes) if denominator else math.nan
    return torch.tensor(total, dtype=torch.float64)


def paper_mirror_loss(input, target, base, link, bonus_scale, gamma):
    """The paper's formula (paper.md §2.6; its MNIST ``el.py``): ``torch.mean`` over every example and class of
    the base loss, plus ``-rho * torch.mean(y p^gamma + (1 - y)(1 - p)^gamma)``; 2-D logits, class indices."""
    y = F.one_hot(target, input.shape[1]).to(input.dtype)
    p = input.softmax(1) if link == "softmax" else input.sigmoid()
    if base == "mse":
        loss = torch.mean(y * (1 - p) ** 2 + (1 - y) * p**2)
    else:
        loss = torch.mean(y * (1 - p) + (1 - y) * p)
    return loss - bonus_scale * torch.mean(y * p**gamma + (1 - y) * (1 - p) ** gamma)


# ---------------------------------------------------------------------------------------------- properties


@st.composite
def problems(draw, max_scale=30.0):
    shape = draw(input_shapes())
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    scale = draw(st.sampled_from([s for s in (1e-3, 0.5, 3.0, 30.0) if s <= max_scale]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    if draw(st.booleans()):
        target = random_probs(shape, torch.float64, generator=gen)
    else:
        target = torch.randint(num_classes, index_target_shape(shape), generator=gen)
        if target.numel() > 1 and draw(st.booleans()):
            target.view(-1)[torch.rand(target.numel(), generator=gen) < 0.3] = IGNORE_INDEX
    weight = torch.rand(num_classes, generator=gen, dtype=torch.float64) * 2 + 0.1 if draw(st.booleans()) else None
    options = dict(
        weight=weight,
        ignore_index=IGNORE_INDEX,
        reduction=draw(st.sampled_from(["none", "mean", "sum"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 1.0])),
        base=draw(st.sampled_from(BASES)),
        link=draw(st.sampled_from(LINKS)),
        bonus_scale=draw(st.sampled_from([0.0, 1.0, 1.0, 0.3, 2.5])),
        gamma=draw(st.sampled_from([0.5, 1.0, 2.0, 2.0, 3.7])),
    )
    return x, target, options


@settings(max_examples=examples(200))
@given(problem=problems())
def test_matches_the_float64_reference(problem):
    x, target, options = problem
    ours = mirror_loss(x, target, **options)
    ref = ref_mirror_loss(x, target, **options)
    assert ours.shape == ref.shape and ours.dtype == torch.float64
    # Every term is in [-rho, 1] per class and weights stay <= 2.1: rounding is ~1e-16 per term.
    assert_close(ours, ref, rtol=1e-9, atol=1e-12 * x.shape[0 if x.dim() == 1 else 1], equal_nan=True)


@settings(max_examples=examples(60))
@given(problem=problems(max_scale=3.0))
def test_float32_matches_the_reference(problem):
    x, target, options = problem
    x32 = x.float()
    target32 = target.float() if target.is_floating_point() else target
    if options["weight"] is not None:
        options = dict(options, weight=options["weight"].float())
    ours = mirror_loss(x32, target32, **options)
    ref = ref_mirror_loss(x32.double(), target32.double() if target.is_floating_point() else target, **options)
    assert ours.dtype == torch.float32
    rtol, atol = TOLERANCES[torch.float32]
    assert_close(ours, ref, rtol=rtol, atol=atol * 10, equal_nan=True)  # a sum of C terms of order 1 + rho


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("gamma", [1.0, 2.0, 3.0])
def test_agrees_with_the_papers_formula(base, link, gamma):
    x = torch.randn(16, 10, dtype=torch.float64) * 3
    y = torch.randint(10, (16,))
    for rho in (0.0, 1.0, 0.5):
        ours = mirror_loss(x, y, base=base, link=link, bonus_scale=rho, gamma=gamma)
        assert_close(ours, paper_mirror_loss(x, y, base, link, rho, gamma), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------- the plain losses and torch


@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_without_the_bonus_it_is_torchs_mse_or_l1_loss(base, link, reduction):
    """``bonus_scale=0`` is ``F.mse_loss(p, one_hot)`` (``F.l1_loss`` for mae), value and gradient; ``'none'``
    gives the per-example sum over classes."""
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(5, (7,))
    x_ref = x.detach().clone().requires_grad_()
    p = x_ref.softmax(1) if link == "softmax" else x_ref.sigmoid()
    torch_loss = F.mse_loss if base == "mse" else F.l1_loss
    expected = torch_loss(p, F.one_hot(y, 5).double(), reduction=reduction)
    if reduction == "none":
        expected = expected.sum(1)
    ours = mirror_loss(x, y, reduction=reduction, base=base, link=link, bonus_scale=0.0)
    assert ours.shape == expected.shape
    assert_close(ours, expected, rtol=1e-13, atol=1e-15)
    ours.sum().backward()
    expected.sum().backward()
    assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-15)


def test_the_plain_mse_by_hand():
    """One example written out: logits (0, log 3) -> p = (1/4, 3/4), target 1."""
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    y = torch.tensor([1])
    # mse: ((1/4)^2 + (1/4)^2) / 2 = 1/16; mae: (1/4 + 1/4) / 2 = 1/4
    assert mirror_loss(x, y, bonus_scale=0.0).item() == pytest.approx(1 / 16, abs=1e-15)
    assert mirror_loss(x, y, base="mae", bonus_scale=0.0).item() == pytest.approx(1 / 4, abs=1e-15)
    # mirror bonus, gamma 2: -(p_1^2 + (1 - p_0)^2) / 2 = -(9/16 + 9/16) / 2 = -9/16
    assert mirror_loss(x, y).item() == pytest.approx(1 / 16 - 9 / 16, abs=1e-15)
    # gamma 1, rho 0.5: -0.5 (3/4 + 3/4) / 2 = -3/8
    assert mirror_loss(x, y, base="mae", gamma=1.0, bonus_scale=0.5).item() == pytest.approx(1 / 4 - 3 / 8)


def test_soft_targets_have_mse_gradients_and_a_constant_offset():
    """For probabilities t the per-class term is (t - p)^2 + t (1 - t): F.mse_loss's gradient, shifted value."""
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    t = random_probs((6, 4))
    ours = mirror_loss(x, t, bonus_scale=0.0)
    x_ref = x.detach().clone().requires_grad_()
    expected = F.mse_loss(x_ref.softmax(1), t)
    assert_close(ours, expected + (t * (1 - t)).mean(), rtol=1e-13, atol=1e-15)
    ours.backward()
    expected.backward()
    assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("link", LINKS)
def test_mse_with_the_mirror_bonus_at_gamma_2_is_linear_in_p(link):
    """gamma = 2, rho = 1: the squares cancel, each class gives (1 - 2 t_k)(2 p_k - 1); softmax: 4 - C - 4 p_y."""
    x = torch.randn(9, 6, dtype=torch.float64)
    y = torch.randint(6, (9,))
    ours = mirror_loss(x, y, reduction="none", link=link)
    t = F.one_hot(y, 6).double()
    p = x.softmax(1) if link == "softmax" else x.sigmoid()
    assert_close(ours, ((1 - 2 * t) * (2 * p - 1)).sum(1), rtol=1e-13, atol=1e-14)
    if link == "softmax":
        assert_close(ours, 4 - 6 - 4 * p.gather(1, y[:, None]).squeeze(1), rtol=1e-13, atol=1e-14)


def test_the_bonus_rewards_confidence_on_the_right_class():
    """The bonus part is <= 0, vanishes at rho = 0, scales linearly in rho, and is largest for a sure prediction."""
    x = torch.randn(8, 5, dtype=torch.float64)
    y = torch.randint(5, (8,))
    for base in BASES:
        plain = mirror_loss(x, y, base=base, bonus_scale=0.0, reduction="none")
        one = mirror_loss(x, y, base=base, bonus_scale=1.0, reduction="none") - plain
        three = mirror_loss(x, y, base=base, bonus_scale=3.0, reduction="none") - plain
        assert (one < 0).all()
        assert_close(three, 3 * one, rtol=1e-12, atol=1e-14)
    sure = torch.tensor([[50.0, -50.0, -50.0]], dtype=torch.float64)
    bonus = mirror_loss(sure, torch.tensor([0]), bonus_scale=1.0) - mirror_loss(sure, torch.tensor([0]),
                                                                                  bonus_scale=0.0)
    assert bonus.item() == pytest.approx(-1.0, abs=1e-12)  # -mean_k of 1 for every class: the largest reward


# ------------------------------------------------------------------------------ reductions, weights, layouts


def test_reductions_and_class_weights():
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1, 1])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    plain = mirror_loss(x, y, reduction="none")
    weighted = mirror_loss(x, y, weight=w, reduction="none")
    assert_close(weighted, w[y] * plain, rtol=1e-13, atol=1e-15)  # each example weighted by its class
    assert_close(mirror_loss(x, y, reduction="sum"), plain.sum(), rtol=1e-13, atol=1e-15)
    assert_close(mirror_loss(x, y), plain.sum() / (6 * 4), rtol=1e-13, atol=1e-15)  # over examples and classes
    assert_close(mirror_loss(x, y, weight=w), weighted.sum() / (w[y].sum() * 4), rtol=1e-13, atol=1e-15)
    # a constant weight leaves the weighted mean unchanged and scales the sum
    c = torch.full((4,), 2.5, dtype=torch.float64)
    assert_close(mirror_loss(x, y, weight=c), mirror_loss(x, y), rtol=1e-13, atol=1e-15)
    assert_close(mirror_loss(x, y, weight=c, reduction="sum"), 2.5 * plain.sum(), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("link", LINKS)
def test_ignored_examples_contribute_nothing(link):
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y = random_index_target((7, 5), 5, ignore_index=IGNORE_INDEX)
    keep = y != IGNORE_INDEX
    w = torch.rand(5, dtype=torch.float64) + 0.5
    loss = mirror_loss(x, y, weight=w, link=link, ignore_index=IGNORE_INDEX)
    kept = mirror_loss(x.detach()[keep], y[keep], weight=w, link=link)
    assert_close(loss, kept, rtol=1e-13, atol=1e-15)  # the mean over the kept examples only
    assert (mirror_loss(x, y, link=link, reduction="none")[~keep] == 0).all()
    loss.backward()
    assert (x.grad[~keep] == 0).all() and (x.grad[keep] != 0).any()


def test_kdim_and_unbatched_layouts_equal_the_flat_2d_loss():
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    y = random_index_target(x.shape, 4, ignore_index=IGNORE_INDEX)
    flat_x, flat_y = x.movedim(1, -1).reshape(-1, 4), y.reshape(-1)
    for options in (dict(), dict(link="sigmoid", base="mae", gamma=0.5)):
        assert_close(mirror_loss(x, y, **options), mirror_loss(flat_x, flat_y, **options), rtol=1e-13, atol=1e-15)
        none = mirror_loss(x, y, reduction="none", **options)
        assert none.shape == y.shape
        assert_close(none.reshape(-1), mirror_loss(flat_x, flat_y, reduction="none", **options), rtol=1e-13,
                     atol=1e-15)
    one = mirror_loss(x[0, :, 0, 0], y[0, 0, 0].clamp(min=0), reduction="none")
    assert one.shape == ()
    assert_close(one, mirror_loss(x[:1, :, 0, 0], y[:1, 0, 0].clamp(min=0), reduction="sum"), rtol=1e-13, atol=0)


def test_label_smoothing_smooths_the_truth():
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(4, (5,))
    truth = F.one_hot(y, 4).double() * 0.8 + 0.2 / 4
    assert_close(mirror_loss(x, y, label_smoothing=0.2), mirror_loss(x, truth), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------- gradients

GRAD_CASES = {
    "plain": dict(bonus_scale=0.0),
    "bonus-g2": dict(bonus_scale=1.0, gamma=2.0),
    "bonus-g0.5-rho1.5": dict(bonus_scale=1.5, gamma=0.5),
    "weights-ignore-smooth": dict(bonus_scale=1.0, gamma=3.0, weight=True, ignore=True, label_smoothing=0.1),
}


@pytest.mark.parametrize("case", GRAD_CASES)
@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("base", BASES)
def test_gradcheck(base, link, case):
    options = dict(GRAD_CASES[case])
    ignore = options.pop("ignore", False)
    if options.pop("weight", False):
        options["weight"] = torch.rand(4, dtype=torch.float64) + 0.5
    x = (torch.randn(5, 4, dtype=torch.float64) * 2).requires_grad_()
    y = random_index_target((5, 4), 4, ignore_index=IGNORE_INDEX if ignore else None)
    # |x| <= ~6: p stays well inside (0, 1), where the MAE and p^gamma (gamma < 1) are smooth.
    assert gradcheck(lambda z: mirror_loss(z, y, base=base, link=link, **options), (x,))


@pytest.mark.parametrize("link", LINKS)
def test_gradcheck_kdim_probability_targets_and_no_reduction(link):
    x = (torch.randn(2, 3, 4, dtype=torch.float64) * 2).requires_grad_()
    t = random_probs((2, 3, 4))
    w = torch.rand(3, dtype=torch.float64) + 0.5
    assert gradcheck(lambda z: mirror_loss(z, t, weight=w, link=link, base="mae", reduction="none"), (x,))
    assert gradcheck(lambda z: mirror_loss(z, t, link=link, gamma=1.7, reduction="sum"), (x,))


# -------------------------------------------------------------------------------------- numerics and module


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("link", LINKS)
def test_half_precision_is_accepted(dtype, link):
    x = (torch.randn(16, 10) * 3).to(dtype).requires_grad_()
    y = torch.randint(10, (16,))
    loss = mirror_loss(x, y, link=link)
    loss.backward()
    assert loss.dtype == dtype and x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    truth = ref_mirror_loss(x.detach().double(), y, link=link)
    rtol, atol = TOLERANCES[dtype]
    assert_close(loss, truth, dtype, rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("link", LINKS)
@pytest.mark.parametrize("base", BASES)
def test_finite_at_extreme_logits(base, link, gamma):
    """p rounds to exactly 0 or 1 at logits of +-1e4: p^gamma with gamma < 1 must not give NaN gradients."""
    x = torch.tensor([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    loss = mirror_loss(x, y, base=base, link=link, gamma=gamma)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_module_matches_function_and_is_exported():
    assert TopLevelMirrorLoss is MirrorLoss
    w = torch.rand(5) + 0.5
    criterion = MirrorLoss(weight=w, reduction="sum", base="mae", link="sigmoid", bonus_scale=0.5, gamma=3.0)
    x, y = torch.randn(6, 5), torch.randint(5, (6,))
    expected = mirror_loss(x, y, w, reduction="sum", base="mae", link="sigmoid", bonus_scale=0.5, gamma=3.0)
    assert torch.equal(criterion(x, y), expected)
    assert "weight" in dict(criterion.named_buffers())  # follows the module to the device
    assert repr(criterion) == ("MirrorLoss(base='mae', link='sigmoid', bonus_scale=0.5, gamma=3.0, "
                               "label_smoothing=0.0, reduction='sum')")
    BonusSchedule("linear", length=4).apply(criterion, 1)  # bonus_scale is a plain attribute a schedule sets
    assert criterion.bonus_scale == 0.25
    assert torch.equal(criterion(x, y), mirror_loss(x, y, w, reduction="sum", base="mae", link="sigmoid",
                                                    bonus_scale=0.25, gamma=3.0))


# --------------------------------------------------------------------------------------------- bad input

X = torch.randn(4, 3)
Y = torch.tensor([0, 1, 2, 1])

BAD = [
    ("target-shape", lambda: mirror_loss(X, torch.tensor([0, 1, 2])), ValueError,
     r"target must have shape \(4,\).*got \(3,\)"),
    ("probs-shape", lambda: mirror_loss(X, torch.rand(4, 2)), ValueError,
     r"probability targets must have the input's shape \(4, 3\)"),
    ("target-too-big", lambda: mirror_loss(X, torch.tensor([0, 3, 1, 1])), ValueError,
     r"target contains class index 3, outside \[0, 3\)"),
    ("target-negative", lambda: mirror_loss(X, torch.tensor([0, -1, 1, 1])), ValueError,
     r"target contains class index -1"),
    ("input-int", lambda: mirror_loss(torch.ones(4, 3, dtype=torch.long), Y), TypeError,
     r"input must be a floating point tensor"),
    ("bonus_scale-negative", lambda: mirror_loss(X, Y, bonus_scale=-1.0), ValueError,
     r"bonus_scale must be >= 0, got -1.0"),
    ("bonus_scale-nan", lambda: mirror_loss(X, Y, bonus_scale=float("nan")), ValueError, r"bonus_scale"),
    ("gamma-zero", lambda: mirror_loss(X, Y, gamma=0.0), ValueError, r"gamma must be > 0, got 0.0"),
    ("gamma-negative", lambda: mirror_loss(X, Y, gamma=-1.0), ValueError, r"gamma must be > 0, got -1.0"),
    ("base", lambda: mirror_loss(X, Y, base="mse_sigmoid"), ValueError,
     r"base must be one of \('mse', 'mae'\), got 'mse_sigmoid'"),
    ("link", lambda: mirror_loss(X, Y, link="tanh"), ValueError,
     r"link must be one of \('softmax', 'sigmoid'\), got 'tanh'"),
    ("reduction", lambda: mirror_loss(X, Y, reduction="avg"), ValueError,
     r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
    ("label_smoothing", lambda: mirror_loss(X, Y, label_smoothing=1.5), ValueError,
     r"label_smoothing must be in \[0.0, 1.0\], got 1.5"),
    ("weight-length", lambda: mirror_loss(X, Y, weight=torch.ones(4)), ValueError,
     r"weight must be a 1-D tensor of length C=3"),
    ("module-gamma", lambda: MirrorLoss(gamma=0.0), ValueError, r"gamma must be > 0"),
    ("module-base", lambda: MirrorLoss(base="l2"), ValueError, r"base must be one of"),
    ("module-link", lambda: MirrorLoss(link="relu"), ValueError, r"link must be one of"),
    ("module-bonus_scale", lambda: MirrorLoss(bonus_scale=-0.5), ValueError, r"bonus_scale must be >= 0"),
    ("module-reduction", lambda: MirrorLoss(reduction="mea"), ValueError, r"reduction must be one of"),
]


@pytest.mark.parametrize("call,error,message", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()


# ------------------------------------------------------------------------------------------ loss registry

MIRROR_PRESETS = {
    "mse": ("mse", "softmax", False), "mse_el": ("mse", "softmax", True),
    "mse_sigmoid": ("mse", "sigmoid", False), "mse_sigmoid_el": ("mse", "sigmoid", True),
    "mae": ("mae", "softmax", False), "mae_el": ("mae", "softmax", True),
    "mae_sigmoid": ("mae", "sigmoid", False), "mae_sigmoid_el": ("mae", "sigmoid", True),
}


@pytest.mark.parametrize("name", MIRROR_PRESETS)
def test_registry_presets_build_the_mirror_losses(name):
    base, link, on = MIRROR_PRESETS[name]
    assert name in list_losses()
    cfg = parse_loss_spec(name, LossConfig(gamma=3.0, bonus_scale=0.5, log_end=0.3))
    criterion = build_criterion(cfg)
    assert isinstance(criterion, MirrorLoss) and (criterion.base, criterion.link) == (base, link)
    assert criterion.bonus_scale == (0.5 if on else 0.0)
    assert get_loss(name).scheduled is on
    title = f"{base.upper()} ({link})"
    if on:
        assert criterion.gamma == 3.0 and cfg.log_end == LossConfig().log_end  # no log_end: reset
        assert loss_label(cfg) == f"{title} + mirror bonus (gamma=3, rho=0.5)"
        assert loss_params(cfg) == {"gamma": 3.0, "bonus_scale": 0.5}
        assert loss_label(parse_loss_spec(name)) == f"{title} + mirror bonus (gamma=2)"
        assert loss_params(parse_loss_spec(name)) == {"gamma": 2.0}
    else:  # the bonus fields are reset: equal losses hash equally
        assert cfg == LossConfig(name=name) and loss_label(cfg) == title and loss_params(cfg) == {}
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(4, (6,))
    expected = mirror_loss(x, y, base=base, link=link, bonus_scale=0.5 if on else 0.0, gamma=3.0 if on else 2.0)
    assert torch.equal(criterion(x, y), expected)


def test_registry_bonus_schedule_drives_the_mirror_bonus():
    cfg = parse_loss_spec("mse_el(defer=2, schedule=linear, schedule_length=2)")
    criterion, schedule = build_criterion(cfg), build_schedule(cfg)
    assert loss_label(cfg) == "MSE (softmax) + mirror bonus (gamma=2, linear defer=2)"
    assert [schedule.apply(criterion, epoch) for epoch in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert build_schedule(parse_loss_spec("mse_el")) is None and build_schedule(parse_loss_spec("mse")) is None
    with pytest.raises(ValueError, match="schedule_target must be 'bonus_scale'"):
        build_criterion(parse_loss_spec("mse_sigmoid_el(schedule_target=log_end, schedule=linear)"))


def test_registry_presets_train_through_the_engine(tmp_path):
    """A one-epoch grid on the example features task: the config check, the build, the label and params stored."""
    from encouraging.experiment import grid
    from encouraging.results import ResultsStore

    from ..engine.test_task_interface import _features

    x = np.random.default_rng(3).normal(size=(240, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], 80)
    np.savez(tmp_path / "d.npz", x_train=x + 2 * y[:, None], y_train=y, x_test=x[:60] + 2 * y[:60, None],
             y_test=y[:60])
    cfg = _features(f"--data.path={tmp_path / 'd.npz'}", "--data.dataset=d", "--train.epochs=1")
    grid(cfg, ["mse", "mse_el", "mae_sigmoid_el(bonus_scale=0.5)"], [0], out_dir=tmp_path / "runs",
         db=tmp_path / "r.db", quiet=True)
    runs = {r["loss_label"]: r for r in ResultsStore(tmp_path / "r.db").runs()}
    assert set(runs) == {"MSE (softmax)", "MSE (softmax) + mirror bonus (gamma=2)",
                         "MAE (sigmoid) + mirror bonus (gamma=2, rho=0.5)"}
    assert all(r["status"] == "finished" for r in runs.values())
    assert runs["MAE (sigmoid) + mirror bonus (gamma=2, rho=0.5)"]["loss_params"] == {"gamma": 2.0,
                                                                                       "bonus_scale": 0.5}


def test_a_registry_criterion_trains_a_linear_model():
    """A few Adam steps on separable data lower every preset's loss and fit the training set."""
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat(40)
    x = torch.randn(120, 4, generator=gen) + 3 * F.one_hot(y, 4).float()
    for name in MIRROR_PRESETS:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        criterion = build_criterion(parse_loss_spec(name))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        first = criterion(model(x), y).item()
        for _ in range(60):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        assert loss.item() < first, name
        assert (model(x).argmax(1) == y).float().mean() > 0.9, name
