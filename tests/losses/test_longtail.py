"""Long-tail adjustments on top of EL: weights, margins and offsets against float64 formulas and F.cross_entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encouraging.losses import (
    AdjustedEncouragingLoss,
    adjusted_logits,
    class_balanced_weights,
    encouraging_loss,
    ldam_margins,
    logit_offsets,
)

COUNTS = [500, 120, 30, 7, 1]


def test_class_balanced_weights_are_the_effective_number_formula():
    beta = 0.999
    raw = [(1 - beta) / (1 - beta**n) for n in COUNTS]
    expected = [w / sum(raw) * len(COUNTS) for w in raw]
    assert class_balanced_weights(COUNTS, beta).tolist() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_weights(COUNTS, 0.0).tolist() == pytest.approx([1.0] * 5)  # beta 0: no re-weighting
    assert float(class_balanced_weights(COUNTS).sum()) == pytest.approx(5.0)


def test_ldam_margins_and_logit_offsets_by_hand():
    assert ldam_margins([1, 16, 81], 0.5).tolist() == pytest.approx([0.5, 0.25, 0.5 / 3])  # n^(-1/4): 1, 1/2, 1/3
    assert logit_offsets([1, 3], 2.0).tolist() == pytest.approx([2 * math.log(0.25), 2 * math.log(0.75)])


def _reference(x, y, offset, margin, scale):
    """float64: scale * (x + offset - margin_y on the target column), then cross-entropy."""
    z = x.double().clone()
    if offset is not None:
        z = z + offset.double()
    if margin is not None:
        for i, t in enumerate(y.tolist()):
            if t != -100:
                z[i, t] -= float(margin[t])
    return F.cross_entropy(scale * z, y, ignore_index=-100)


@pytest.mark.parametrize("kind", ["ldam", "la", "both"])
def test_without_the_bonus_it_is_the_methods_cross_entropy(kind):
    torch.manual_seed(0)
    x, y = torch.randn(37, 5, dtype=torch.float64), torch.randint(5, (37,))
    y[::6] = -100
    margin = ldam_margins(COUNTS).double() if kind in ("ldam", "both") else None
    offset = logit_offsets(COUNTS, 0.7).double() if kind in ("la", "both") else None
    scale = 30.0 if kind != "la" else 1.0
    loss = AdjustedEncouragingLoss(offset=offset, margin=margin, scale=scale, bonus_scale=0.0)
    assert float(loss(x, y)) == pytest.approx(float(_reference(x, y, offset, margin, scale)), rel=1e-10)
    xg = x.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: loss(t, y), (xg,))


def test_balanced_softmax_is_cross_entropy_of_logits_plus_log_counts():
    torch.manual_seed(1)
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(5, (20,))
    loss = AdjustedEncouragingLoss(offset=logit_offsets(COUNTS, 1.0).double(), bonus_scale=0.0)
    log_n = torch.tensor(COUNTS, dtype=torch.float64).log()
    assert float(loss(x, y)) == pytest.approx(float(F.cross_entropy(x + log_n, y)), rel=1e-7)  # float32 offsets


def test_with_the_bonus_it_is_el_of_the_adjusted_logits():
    torch.manual_seed(2)
    x, y = torch.randn(16, 5), torch.randint(5, (16,))
    margin = ldam_margins(COUNTS)
    loss = AdjustedEncouragingLoss(margin=margin, scale=30.0, log_end=0.5)
    expected = encouraging_loss(adjusted_logits(x, y, margin=margin, scale=30.0), y, log_end=0.5)
    assert float(loss(x, y)) == pytest.approx(float(expected), rel=1e-6)
    assert torch.isfinite(loss(x * 1e4, y))


@pytest.mark.parametrize("call, match", [
    (lambda: class_balanced_weights([3, 0, 2]), "classes \\[1\\] have none"),
    (lambda: class_balanced_weights([3, 2], beta=1.0), "beta must be in"),
    (lambda: ldam_margins([3, 2], -1.0), "max_margin must be"),
    (lambda: logit_offsets([[3, 2]]), "1-D"),
    (lambda: AdjustedEncouragingLoss(scale=0.0), "scale must be > 0"),
    (lambda: AdjustedEncouragingLoss(margin=ldam_margins([3, 2]))(torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
     "margin has 2 classes but the input has 3"),
])
def test_bad_input_is_refused_by_name(call, match):
    with pytest.raises(ValueError, match=match):
        call()
