"""Every variant against the plain float64 references of ``reference.py`` (property tests with hypothesis).

Shapes, logit scales (1e-3 to 1e4), targets (class indices with ignored elements, or probabilities), class
weights, bonus weights, label smoothing and the bonus options are drawn; the library runs in float64 (and in
float32 at moderate scales) and must match the reference to the tolerance table's precision. The paper's own
formula (``reference.paper_encouraging_loss``) must agree with ours wherever its clamp is inactive.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from encouraging.losses import (
    binary_encouraging_loss,
    encouraging_loss,
    encouraging_loss_parts,
    focal_loss,
    halted_focal_loss,
    poly_loss,
)

from .helpers import TOLERANCES, assert_close, examples, index_target_shape, input_shapes, random_probs
from .reference import (
    P_CAP,
    paper_encouraging_loss,
    ref_binary_encouraging_loss,
    ref_class_loss,
    ref_encouraging_loss,
    ref_focal_loss,
    ref_halted_focal_loss,
    ref_poly_loss,
)

SCALES = [1e-3, 0.5, 3.0, 30.0, 300.0, 1e4]
IGNORE_INDEX = -100

# log_end in [0, 1] with the ends drawn on purpose. Draws stop at 1 - 1e-6 below 1: for LE in (1 - 1e-6, 1) the
# library computes log(1 - p_y) up to LE from log p_y (exact only at LE = 1), which loses ~1e-16 / (1 - p_y)
# absolute; at 1 - 1e-12 that is 1e-7 in float64, beyond this file's 1e-9 tolerance (see test_numerics).
LOG_END = st.one_of(st.sampled_from([0.0, 1.0, 0.75, 0.5]), st.floats(0.0, 1.0 - 1e-6))


@st.composite
def problems(draw, probs_allowed=True, max_scale=1e4, min_classes=2):
    """A random (input, target, options) for the softmax losses, built from a drawn seed."""
    shape = draw(input_shapes(min_classes))
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    scale = draw(st.sampled_from([s for s in SCALES if s <= max_scale]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    if draw(st.booleans()):  # one dominant logit per element: p_y near 1 for some, near 0 for others
        dim = 0 if len(shape) == 1 else 1
        top = torch.randint(num_classes, index_target_shape(shape), generator=gen).unsqueeze(dim)
        x = x.scatter_add(dim, top, torch.full(top.shape, 10.0 * scale, dtype=torch.float64))
    if probs_allowed and draw(st.booleans()):
        target = random_probs(shape, torch.float64, generator=gen)
    else:
        target = torch.randint(num_classes, index_target_shape(shape), generator=gen)
        if target.numel() > 1 and draw(st.booleans()):
            target.view(-1)[torch.rand(target.numel(), generator=gen) < 0.3] = IGNORE_INDEX
    weight = None
    if draw(st.booleans()):
        weight = torch.rand(num_classes, generator=gen, dtype=torch.float64) * 2 + 0.1
    options = dict(
        weight=weight,
        ignore_index=IGNORE_INDEX,
        reduction=draw(st.sampled_from(["none", "mean", "sum"])),
        label_smoothing=draw(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])),
    )
    return x, target, options


def _check(ours, ref, scale=1.0, log_end=1.0, bonus_scale=1.0):
    """Float64 against the float64 reference, relative to the loss's magnitude. The absolute floor grows with
    the logit scale (loss terms ~ |f|) and, for the tangent past LE, with its slope 1 / (1 - LE), which
    multiplies the rounding of p = exp(log p) (at most 3 per unit of rho: class and bonus weights stay <= 2.1)."""
    rtol, atol = TOLERANCES[torch.float64]
    atol *= max(1.0, scale)
    if log_end < 1.0:
        atol += 3 * bonus_scale * 2.3e-16 / (1.0 - log_end)
    assert_close(ours, ref, torch.float64, rtol=rtol, atol=atol, equal_nan=True)
    if ours.numel() == 1 and not torch.isnan(ref):
        assert torch.isfinite(ours)


@settings(max_examples=examples(150))
@given(problem=problems(), log_end=LOG_END, bonus_scale=st.sampled_from([1.0, 1.0, 0.3, 2.5]))
def test_log_bonus_matches_reference(problem, log_end, bonus_scale):
    x, target, options = problem
    ours = encouraging_loss(x, target, **options, log_end=log_end, bonus_scale=bonus_scale)
    ref = ref_encouraging_loss(x, target, **options, log_end=log_end, bonus_scale=bonus_scale)
    _check(ours, ref, scale=x.abs().max().item(), log_end=log_end, bonus_scale=bonus_scale)


BONUS_VARIANTS = st.one_of(
    st.fixed_dictionaries({"bonus": st.just("power"), "gamma": st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.7])}),
    st.fixed_dictionaries({"bonus": st.just("cosine")}),
    st.fixed_dictionaries({"bonus": st.just("poly")}),
    st.fixed_dictionaries({"bonus": st.just("log"), "log_end": LOG_END}),
)


@settings(max_examples=examples(150))
@given(problem=problems(), variant=BONUS_VARIANTS, bonus_start=st.sampled_from([0.0, 0.0, 0.2, 0.5, 0.9]),
       bonus_weight=st.sampled_from(["none", "same", "tensor"]))
def test_bonus_variants_match_reference(problem, variant, bonus_start, bonus_weight):
    x, target, options = problem
    num_classes = x.shape[0] if x.dim() == 1 else x.shape[1]
    v = {"none": None, "same": "same",
         "tensor": torch.linspace(0.0, 2.0, num_classes, dtype=torch.float64)}[bonus_weight]
    kwargs = dict(options, bonus_start=bonus_start, bonus_weight=v, **variant)
    ours = encouraging_loss(x, target, **kwargs)
    ref = ref_encouraging_loss(x, target, **kwargs)
    _check(ours, ref, scale=x.abs().max().item(), log_end=variant.get("log_end", 1.0))


def _float32_budget(x: torch.Tensor, target: torch.Tensor, options: dict, log_end: float, bonus: str):
    """Per-element error bound of a float32 computation: a few float32 ulps of every term, where a log bonus
    computed from log p (every term but the exact class-index target at LE = 1) costs ulp / (1 - p) in
    log(1 - p), p capped at LE and at the floor 1 - 1e-5."""
    num_classes = x.shape[0] if x.dim() == 1 else x.shape[1]
    w = options["weight"].tolist() if options["weight"] is not None else [1.0] * num_classes

    def term(k, log_p, log1m, on_target):
        size = w[k] * abs(log_p) + 1.0
        if bonus == "log":
            exact = on_target and log_end == 1.0
            size += abs(log1m) if exact else 1.0 / (1.0 - min(math.exp(log_p), log_end, P_CAP))
        return size

    budget = ref_class_loss(x, target, term, options["weight"], IGNORE_INDEX, "none", options["label_smoothing"])
    return 8 * torch.finfo(torch.float32).eps * budget


@settings(max_examples=examples(80))
@given(problem=problems(max_scale=300.0), log_end=LOG_END, bonus=st.sampled_from(["log", "power", "cosine"]))
def test_float32_matches_reference(problem, log_end, bonus):
    """Float32 inputs against the float64 reference of the same (rounded) inputs, elementwise, within a bound
    built from the float32 ulp of each term (``_float32_budget``)."""
    x, target, options = problem
    options = dict(options, reduction="none")
    x = x.float().double()  # the float32-rounded inputs are the truth's inputs
    cast = dict(options, weight=options["weight"].float() if options["weight"] is not None else None)
    ours = encouraging_loss(x.float(), target.float() if target.is_floating_point() else target, **cast,
                            log_end=log_end, bonus=bonus)
    assert ours.dtype == torch.float32
    ref = ref_encouraging_loss(x, target.float().double() if target.is_floating_point() else target, **options,
                               log_end=log_end, bonus=bonus)
    budget = _float32_budget(x, target, options, log_end, bonus)
    error = (ours.double() - ref).abs()
    assert (error <= budget).all(), f"float32 error {error.tolist()} over budget {budget.tolist()}"


@settings(max_examples=examples(60))
@given(problem=problems(), log_end=LOG_END, bonus=st.sampled_from(["log", "power", "cosine"]))
def test_log_probs_input_matches_reference(problem, log_end, bonus):
    x, target, options = problem
    log_p = F.log_softmax(x, dim=0 if x.dim() == 1 else 1)
    ours = encouraging_loss(log_p, target, **options, log_end=log_end, bonus=bonus, log_probs=True)
    ref = ref_encouraging_loss(x, target, **options, log_end=log_end, bonus=bonus)
    _check(ours, ref, scale=x.abs().max().item(), log_end=log_end)


@settings(max_examples=examples(40))
@given(problem=problems(probs_allowed=False, max_scale=30.0), log_end=LOG_END)
def test_smoothing_floor_is_inactive_at_moderate_logits(problem, log_end):
    """Where every p_k stays below 1 - 1e-5, the library equals the exact (unfloored) formula."""
    x, target, options = problem
    p = F.softmax(x, dim=0 if x.dim() == 1 else 1)
    if p.max() > 1 - 1e-4:
        x = x * (1.0 / x.abs().max().clamp(min=1.0))  # |f| <= 1: p_k <= e^2 / (e^2 + C - 1) < 0.9
    ours = encouraging_loss(x, target, **options, log_end=log_end)
    ref = ref_encouraging_loss(x, target, **options, log_end=log_end, floor=False)
    _check(ours, ref, log_end=log_end)


def test_smoothing_floor_is_the_papers_clamp_where_active():
    """A non-target class with 1 - p_k < 1e-5 under smoothing gets the paper's floored log(1e-5), and the
    class-index target itself keeps the exact log(1 - p_y) (the floored and exact references differ here)."""
    x = torch.tensor([[0.0, 30.0, -5.0], [30.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0, 0])
    kwargs = dict(log_end=1.0, label_smoothing=0.3, reduction="none")
    ours = encouraging_loss(x, target, **kwargs)
    floored = ref_encouraging_loss(x, target, **kwargs, floor=True)
    exact = ref_encouraging_loss(x, target, **kwargs, floor=False)
    assert_close(ours, floored)
    assert (floored - exact)[0] > 1.0  # the floor lifts the element whose non-target class has p ~ 1 - 1e-13
    assert_close(floored[1], exact[1])  # the target's own term is exact: nothing floored in element 1


# ------------------------------------------------------------------------------------------------ baselines


@settings(max_examples=examples(80))
@given(problem=problems(), epsilon=st.sampled_from([-1.0, -0.5, 0.0, 1.0, 2.0]))
def test_poly_loss_matches_reference(problem, epsilon):
    x, target, options = problem
    _check(poly_loss(x, target, **options, epsilon=epsilon), ref_poly_loss(x, target, **options, epsilon=epsilon),
           scale=x.abs().max().item())


@settings(max_examples=examples(80))
@given(problem=problems(), gamma=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0]))
def test_focal_loss_matches_reference(problem, gamma):
    x, target, options = problem
    _check(focal_loss(x, target, **options, gamma=gamma), ref_focal_loss(x, target, **options, gamma=gamma),
           scale=x.abs().max().item())


@settings(max_examples=examples(80))
@given(problem=problems(), gamma=st.sampled_from([0.0, 0.5, 2.0, 4.0]),
       halt=st.sampled_from([0.1, 0.5, 0.8, 1.0]))
def test_halted_focal_loss_matches_reference(problem, gamma, halt):
    x, target, options = problem
    _check(halted_focal_loss(x, target, **options, gamma=gamma, halt=halt),
           ref_halted_focal_loss(x, target, **options, gamma=gamma, halt=halt), scale=x.abs().max().item())


@settings(max_examples=examples(100))
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.sampled_from([(5,), (4, 3), (2, 3, 2)]),
    scale=st.sampled_from(SCALES),
    variant=BONUS_VARIANTS,
    bonus_start=st.sampled_from([0.0, 0.3]),
    weight=st.booleans(),
    pos_weight=st.booleans(),
    soft=st.booleans(),
    reduction=st.sampled_from(["none", "mean", "sum"]),
    bonus_scale=st.sampled_from([1.0, 0.5]),
)
def test_binary_matches_reference(seed, shape, scale, variant, bonus_start, weight, pos_weight, soft, reduction,
                                  bonus_scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    target = torch.rand(shape, generator=gen, dtype=torch.float64)
    target = target if soft else target.round()
    kwargs = dict(
        weight=torch.rand(shape[-1], generator=gen, dtype=torch.float64) + 0.5 if weight else None,
        pos_weight=torch.rand(shape[-1], generator=gen, dtype=torch.float64) * 3 if pos_weight else None,
        reduction=reduction, bonus_scale=bonus_scale, bonus_start=bonus_start, **variant,
    )
    _check(binary_encouraging_loss(x, target, **kwargs), ref_binary_encouraging_loss(x, target, **kwargs),
           scale=x.abs().max().item(), log_end=variant.get("log_end", 1.0), bonus_scale=bonus_scale * 3)


# ------------------------------------------------------------------------------------- the paper's formula


@settings(max_examples=examples(80))
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 8), num_classes=st.integers(2, 8),
       scale=st.sampled_from(SCALES), log_end=st.floats(0.0, 0.999), reduction=st.sampled_from(["none", "mean"]))
def test_paper_formula_agrees_for_log_end_below_one(seed, n, num_classes, scale, log_end, reduction):
    """For LE < 1 the clamp never acts on the target (p > LE takes the tangent), at any logit scale."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_classes, generator=gen, dtype=torch.float64) * scale
    target = torch.randint(num_classes, (n,), generator=gen)
    ours = encouraging_loss(x, target, log_end=log_end, reduction=reduction)
    paper = paper_encouraging_loss(x, target, log_end=log_end, reduction=reduction)
    # the paper's 1 - exp(log p) costs ~1e-16 / (1 - LE) relative in log(1 - p)
    assert_close(ours, paper, rtol=1e-9, atol=1e-12 * max(1.0, scale) / (1 - log_end))


@settings(max_examples=examples(60))
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 8), num_classes=st.integers(2, 8),
       scale=st.sampled_from([1e-3, 0.5, 2.0]))
def test_paper_formula_agrees_for_full_bonus_where_clamp_is_inactive(seed, n, num_classes, scale):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, num_classes, generator=gen, dtype=torch.float64) * scale
    target = torch.randint(num_classes, (n,), generator=gen)
    assert F.softmax(x, 1).max() < 1 - 1e-5  # |f| <~ 8: the clamp is inactive
    assert_close(encouraging_loss(x, target, log_end=1.0), paper_encouraging_loss(x, target, log_end=1.0),
                 rtol=1e-10, atol=1e-12)


def test_paper_formula_differs_where_its_clamp_acts():
    """At p_y = 1 - 2e-9 the paper's clamp caps the bonus at log(1e-5); ours keeps the exact log(1 - p_y)."""
    x = torch.tensor([[20.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0])
    ours = encouraging_loss(x, target, log_end=1.0)
    exact = -x[0, 0] + x[0, 1]  # logsumexp_{k != y} f_k - f_y
    assert_close(ours, exact)
    paper = paper_encouraging_loss(x, target, log_end=1.0)
    assert_close(paper, F.cross_entropy(x, target) + math.log(1e-5), rtol=1e-6, atol=0)
    assert ours < paper - 8.0


@pytest.mark.parametrize("log_end", [0.0, 0.5, 0.75, 1.0])
def test_parts_split_matches_reference(log_end):
    """The CE part is F.cross_entropy's elementwise loss and the bonus part is the rest of the reference."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=gen, dtype=torch.float64) * 3
    target = torch.tensor([0, 1, 2, 3, IGNORE_INDEX, 1])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    kwargs = dict(weight=weight, label_smoothing=0.2, reduction="none")
    parts = encouraging_loss_parts(x, target, **kwargs, log_end=log_end, bonus_weight="same")
    assert_close(parts.ce, F.cross_entropy(x, target, **kwargs))
    full = ref_encouraging_loss(x, target, **kwargs, log_end=log_end, bonus_weight="same")
    assert_close(parts.bonus, full - F.cross_entropy(x, target, **kwargs))
    assert (parts.bonus[parts.valid] < 0).all() and parts.bonus[4] == 0


def test_bonus_floor_reproduces_the_papers_clamp_even_where_it_is_active():
    """With bonus_floor=1e-5 the full bonus is the paper's `log(clamp(1 - p, 1e-5))` on the target: equal values
    and gradients at logit scales where the clamp is active for most rows."""
    from encouraging.losses import encouraging_loss

    from .reference import paper_encouraging_loss

    torch.manual_seed(0)
    x = (torch.randn(64, 10, dtype=torch.float64) * 25).requires_grad_()
    y = torch.randint(10, (64,))
    y[:48] = x.detach()[:48].argmax(1)  # mostly confident, correct rows: where the clamp acts
    ours = encouraging_loss(x, y, log_end=1.0, bonus_floor=1e-5)
    paper = paper_encouraging_loss(x, y, 1.0)
    (g_ours,) = torch.autograd.grad(ours, x)
    (g_paper,) = torch.autograd.grad(paper, x)
    assert (x.softmax(1).gather(1, y[:, None]) > 1 - 1e-5).float().mean() > 0.2  # the clamp is active
    torch.testing.assert_close(ours, paper, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_ours, g_paper, rtol=1e-10, atol=1e-12)
    exact = encouraging_loss(x, y, log_end=1.0)
    assert exact < ours  # the exact bonus keeps rewarding the confident rows
