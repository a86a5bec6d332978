"""LossParts and the module's stats, BonusSchedule's ramps, and the bonus registry."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from encouraging.losses import (
    Bonus,
    BonusSchedule,
    EncouragingLoss,
    encouraging_loss,
    encouraging_loss_parts,
    get_bonus,
    list_bonuses,
    register_bonus,
    summarize,
)
from encouraging.losses import bonus as bonus_module

from .helpers import assert_close, random_index_target, random_probs

# ----------------------------------------------------------------------------------------------- LossParts


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2), (4,)], ids=str)
def test_parts_are_consistent(reduction, smoothing, shape):
    x = torch.randn(shape, dtype=torch.float64) * 2
    target = random_index_target(shape, 4, -100)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    parts = encouraging_loss_parts(x, target, weight, reduction=reduction, label_smoothing=smoothing,
                                   log_end=0.5, bonus_weight="same")
    element_shape = target.shape
    for name in ("ce", "bonus", "p_target", "valid"):
        assert getattr(parts, name).shape == element_shape, name
    assert torch.equal(parts.valid, target != -100)
    total = parts.ce + parts.bonus
    assert (total[~parts.valid] == 0).all()
    if reduction == "none":
        assert_close(parts.loss, total)
    elif reduction == "sum":
        assert_close(parts.loss, total.sum())
    else:
        denom = torch.where(parts.valid, weight[target.clamp(min=0)], 0.0).sum()
        assert_close(parts.loss, total.sum() / denom)
    assert_close(parts.loss, encouraging_loss(x, target, weight, reduction=reduction, label_smoothing=smoothing,
                                              log_end=0.5, bonus_weight="same"))
    # p_target is the softmax probability of the target class, and carries no gradient
    probs = F.softmax(x, dim=0 if x.dim() == 1 else 1)
    expected = probs.gather(0 if x.dim() == 1 else 1, target.clamp(min=0).unsqueeze(0 if x.dim() == 1 else 1))
    assert_close(parts.p_target[parts.valid], expected.squeeze(0 if x.dim() == 1 else 1)[parts.valid])
    assert not parts.p_target.requires_grad


def test_parts_with_probability_targets():
    """For probability targets p_target is the probability of each element's most likely target class, and
    every element is valid."""
    x = torch.randn(5, 3, dtype=torch.float64)
    target = random_probs((5, 3))
    parts = encouraging_loss_parts(x, target, reduction="none")
    expected = F.softmax(x, 1).gather(1, target.argmax(1, keepdim=True)).squeeze(1)
    assert_close(parts.p_target, expected)
    assert parts.valid.all() and parts.valid.shape == (5,)
    assert_close(parts.ce, F.cross_entropy(x, target, reduction="none"))


def test_parts_bonus_is_scaled_reward():
    x = torch.randn(6, 5, dtype=torch.float64)
    target = torch.randint(5, (6,))
    one = encouraging_loss_parts(x, target, reduction="none", bonus_scale=1.0)
    three = encouraging_loss_parts(x, target, reduction="none", bonus_scale=3.0)
    assert_close(three.bonus, 3 * one.bonus)
    assert_close(three.ce, one.ce)
    assert (one.bonus < 0).all()  # the log bonus is a reward


# ------------------------------------------------------------------------------------------------ last_stats


def _hand_set():
    """Two classes with p_y set by hand: 0.9 (past LE = 0.75), 0.5, 0.2, and an ignored element."""
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.999, 0.001]], dtype=torch.float64)
    return probs.log(), torch.tensor([0, 1, 0, -100])


def test_last_stats_on_hand_set_logits():
    logits, target = _hand_set()
    module = EncouragingLoss(track_stats=True, log_end=0.75)
    assert module.last_stats == {}
    module(logits, target)
    stats = module.last_stats
    assert set(stats) == {"ce", "bonus", "p_target", "frac_past_log_end"}
    b_09 = math.log(0.25) + (0.9 - 0.75) / (0.75 - 1)  # tangent past LE
    assert stats["ce"].item() == pytest.approx(-(math.log(0.9) + math.log(0.5) + math.log(0.2)) / 3, rel=1e-6)
    assert stats["bonus"].item() == pytest.approx((b_09 + math.log(0.5) + math.log(0.8)) / 3, rel=1e-6)
    assert stats["p_target"].item() == pytest.approx((0.9 + 0.5 + 0.2) / 3, rel=1e-6)
    assert stats["frac_past_log_end"].item() == pytest.approx(1 / 3)
    assert all(s.dim() == 0 and not s.requires_grad for s in stats.values())


def test_last_stats_with_class_weights():
    logits, target = _hand_set()
    weight = torch.tensor([2.0, 0.5], dtype=torch.float64)
    module = EncouragingLoss(weight, track_stats=True, log_end=1.0, bonus_weight="same", bonus_scale=0.5)
    module(logits, target)
    ce = (-2.0 * math.log(0.9) - 0.5 * math.log(0.5) - 2.0 * math.log(0.2)) / 3
    bonus = 0.5 * (2.0 * math.log(0.1) + 0.5 * math.log(0.5) + 2.0 * math.log(0.8)) / 3
    assert module.last_stats["ce"].item() == pytest.approx(ce, rel=1e-6)
    assert module.last_stats["bonus"].item() == pytest.approx(bonus, rel=1e-6)
    assert module.last_stats["frac_past_log_end"].item() == 0.0  # nothing is past LE = 1


def test_stats_never_change_the_loss():
    x = torch.randn(8, 5, requires_grad=True)
    target = torch.randint(5, (8,))
    plain, tracked = EncouragingLoss(impl="autograd"), EncouragingLoss(track_stats=True)
    (g1,) = torch.autograd.grad(plain(x, target), x)
    (g2,) = torch.autograd.grad(tracked(x, target), x)
    assert torch.equal(g1, g2) and tracked.last_stats and not plain.last_stats
    (fused,) = torch.autograd.grad(EncouragingLoss()(x, target), x)  # tracking takes the op-by-op path
    torch.testing.assert_close(fused, g2)


def test_summarize_ignores_ignored_elements():
    """An ignored element changes no statistic, however extreme its logits."""
    logits, target = _hand_set()
    kept = encouraging_loss_parts(logits[:3], target[:3], reduction="none")
    for extreme in (torch.tensor([1e4, -1e4]), torch.tensor([-1e4, 1e4])):
        x = torch.cat([logits[:3], extreme.double()[None]])
        parts = encouraging_loss_parts(x, target, reduction="none")
        stats, expected = summarize(parts, 0.75), summarize(kept, 0.75)
        for name in stats:
            assert_close(stats[name], expected[name], rtol=1e-12, atol=0, msg=name)


def test_summarize_all_ignored_is_zero_not_nan():
    parts = encouraging_loss_parts(torch.randn(3, 4), torch.full((3,), -100), reduction="none")
    assert all(v.item() == 0.0 for v in summarize(parts, 0.75).values())


def test_summarize_is_over_elements_of_kdim_input():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    target = torch.randint(3, (2, 4))
    stats = summarize(encouraging_loss_parts(x, target, reduction="none"), 0.5)
    p_y = F.softmax(x, 1).gather(1, target[:, None]).squeeze(1)
    assert_close(stats["p_target"], p_y.mean().float())
    assert_close(stats["frac_past_log_end"], (p_y > 0.5).double().mean().float())


# ------------------------------------------------------------------------------------------------ schedules


def _cos(u):
    return (math.cos(math.pi * (1 + u)) + 1) / 2


SCHEDULE_POINTS = [
    # (kind, kwargs, [(t, factor)])
    ("constant", dict(), [(0, 1.0), (3, 1.0), (1000, 1.0)]),
    ("constant", dict(defer=2), [(0, 0.0), (1.9, 0.0), (2, 1.0), (50, 1.0)]),
    ("linear", dict(length=10), [(0, 0.0), (2.5, 0.25), (5, 0.5), (9.5, 0.95), (10, 1.0), (20, 1.0)]),
    ("linear", dict(length=10, defer=5), [(0, 0.0), (4, 0.0), (5, 0.0), (10, 0.5), (15, 1.0), (30, 1.0)]),
    ("linear", dict(length=0, defer=3), [(2, 0.0), (3, 1.0)]),
    ("cosine", dict(length=8), [(0, 0.0), (2, _cos(0.25)), (4, 0.5), (6, _cos(0.75)), (7.5, _cos(0.9375)),
                                (8, 1.0), (9, 1.0)]),
    ("cosine", dict(length=4, defer=1), [(0, 0.0), (1, 0.0), (2, _cos(0.25)), (5, 1.0)]),
    ("exp", dict(length=10, rate=5.0), [(0, math.exp(-5)), (5, math.exp(-2.5)), (9.5, math.exp(-0.25)), (10, 1.0),
                                        (11, 1.0)]),
    ("exp", dict(length=10, rate=2.0), [(0, math.exp(-2)), (5, math.exp(-1))]),
    ("exp", dict(length=10, rate=-5.0), [(0, 0.0), (5, 1 - math.exp(-2.5)), (10, 1 - math.exp(-5))]),
    ("exp", dict(length=10, rate=5.0, defer=2), [(1, 0.0), (2, math.exp(-5)), (7, math.exp(-2.5))]),
]


@pytest.mark.parametrize("kind,kwargs,points", SCHEDULE_POINTS)
def test_schedule_factor_at_known_points(kind, kwargs, points):
    schedule = BonusSchedule(kind, **kwargs)
    for t, expected in points:
        assert schedule.factor(t) == pytest.approx(expected, rel=1e-12, abs=1e-15), (kind, kwargs, t)


def test_schedule_cosine_formula_is_the_papers():
    """cos: (cos(pi (1 + t/T)) + 1) / 2 on a grid, monotone from 0 to 1."""
    schedule = BonusSchedule("cosine", length=7)
    values = [schedule.factor(t) for t in range(8)]
    assert values == pytest.approx([_cos(t / 7) for t in range(8)], rel=1e-12, abs=1e-15)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))


def test_schedule_value_scales_base():
    schedule = BonusSchedule("linear", length=4, base=2.5)
    assert schedule.value(1) == pytest.approx(0.625) and schedule.value(9) == pytest.approx(2.5)
    le = BonusSchedule("linear", length=4, target="log_end", base=0.75)
    assert le.value(2) == pytest.approx(0.375)


def test_schedule_apply_sets_the_attribute_the_loss_uses():
    x = torch.randn(6, 4, dtype=torch.float64)
    target = torch.randint(4, (6,))
    criterion = EncouragingLoss(log_end=0.75)
    schedule = BonusSchedule("linear", length=10, defer=2)
    assert schedule.apply(criterion, 0) == 0.0 and criterion.bonus_scale == 0.0
    assert_close(criterion(x, target), F.cross_entropy(x, target))  # deferred: plain CE
    assert schedule.apply(criterion, 7) == pytest.approx(0.5) and criterion.bonus_scale == pytest.approx(0.5)
    assert_close(criterion(x, target), encouraging_loss(x, target, bonus_scale=0.5))
    le_schedule = BonusSchedule("cosine", length=4, target="log_end", base=0.8)
    le_schedule.apply(criterion, 2)
    assert criterion.log_end == pytest.approx(0.4) and criterion.bonus_scale == pytest.approx(0.5)
    assert_close(criterion(x, target), encouraging_loss(x, target, bonus_scale=0.5, log_end=0.4))


def test_schedule_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BonusSchedule().kind = "linear"


# --------------------------------------------------------------------------------------------------- registry


def test_list_bonuses():
    assert list_bonuses() == ["cosine", "log", "poly", "power"]
    assert list_bonuses("p*") == ["poly", "power"]
    assert list_bonuses("nothing*") == []


def test_get_bonus():
    entry = get_bonus("log")
    assert entry.name == "log" and entry.uses == ("log_end",) and entry.description
    assert get_bonus("power").uses == ("gamma",)
    with pytest.raises(ValueError, match=r"bonus must be one of \['cosine', 'log', 'poly', 'power'\], got 'Log'"):
        get_bonus("Log")


def test_register_bonus_rejects_duplicates():
    with pytest.raises(ValueError, match="'log' is already registered"):
        register_bonus(dataclasses.replace(get_bonus("log")))


@pytest.fixture
def linear_bonus():
    """A user bonus b(p) = -p (what log_end = 0 gives), registered for one test and removed after."""

    def value(log_p, log1m_p, params):
        return -log_p.exp()

    def dense_value(log_p, params):
        return -log_p.exp()

    def dense_grad(log_p, params):  # p b'(p)
        return -log_p.exp()

    entry = register_bonus(Bonus("test_linear", "-p, for the registry test", value, dense_value, dense_grad))
    yield entry
    bonus_module._BONUSES.remove("test_linear")


@pytest.mark.parametrize("kind,smoothing", [("index", 0.0), ("index", 0.2), ("probs", 0.1)])
def test_registered_bonus_is_usable_by_name(linear_bonus, kind, smoothing):
    assert "test_linear" in list_bonuses()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randint(4, (5,)) if kind == "index" else random_probs((5, 4))
    ours = encouraging_loss(x, target, label_smoothing=smoothing, bonus="test_linear")
    same = encouraging_loss(x, target, label_smoothing=smoothing, log_end=0.0)
    assert_close(ours, same)
    (g1,) = torch.autograd.grad(ours, x)
    (g2,) = torch.autograd.grad(same, x)
    assert_close(g1, g2)
