"""Margins, energies, gradients and probes on hand-set numbers with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from encouraging.analysis import (
    analytic_target_grad,
    class_energy,
    energy_rows,
    gradient_rows,
    knn_accuracy,
    linear_probe,
    margin_rows,
    margin_summary,
    margins,
    per_example_grad_norms,
    target_logit_grad,
)
from encouraging.losses import EncouragingLoss, FocalLoss


def test_margins_of_hand_set_logits():
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, -1.0], [2.0, 2.0, 0.0], [0.0, 0.0, 5.0]])
    target = torch.tensor([0, 0, 1, 2])
    torch.testing.assert_close(margins(logits, target), torch.tensor([2.0, -1.0, 0.0, 5.0]))
    with pytest.raises(ValueError, match="logits must have shape"):
        margins(torch.zeros(3), target[:3])
    with pytest.raises(ValueError, match="target must have shape"):
        margins(logits, target[:2])


def test_margin_summary_and_histogram_rows():
    m = torch.arange(-10, 90, dtype=torch.float64)  # 100 values, 10 negative
    s = margin_summary(m)
    assert s["n"] == 100 and s["frac_negative"] == pytest.approx(0.10)
    assert s["median"] == pytest.approx(np.quantile(m.numpy(), 0.5))
    assert s["q05"] == pytest.approx(np.quantile(m.numpy(), 0.05))
    logits = torch.randn(500, 10)
    target = torch.randint(0, 10, (500,))
    rows = margin_rows(logits, target, "test")
    hist = [r for r in rows if r["type"] == "hist"]
    m = margins(logits, target).double()
    assert 0.985 * 500 <= sum(r["count"] for r in hist) <= 500  # the central 99%
    assert hist[0]["lo"] == pytest.approx(float(torch.quantile(m, 0.005)))
    assert rows[0]["min"] == pytest.approx(float(m.min())) and rows[0]["max"] == pytest.approx(float(m.max()))


def test_class_energy_is_the_mean_negative_logit_per_class():
    logits = torch.tensor([[4.0, 0.0, 1.0], [2.0, 2.0, -1.0], [0.0, 6.0, 0.0]])
    target = torch.tensor([0, 0, 1])
    e = class_energy(logits, target)
    torch.testing.assert_close(e[0], torch.tensor([-3.0, -1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(e[1], torch.tensor([0.0, -6.0, 0.0], dtype=torch.float64))
    assert torch.isnan(e[2]).all()  # no example of class 2
    rows = energy_rows(logits, target, "test", ["a", "b", "c"])
    assert len(rows) == 6  # classes 0 and 1, 3 candidates each
    true = {r["cls_name"]: r["energy"] for r in rows if r["true"]}
    assert true == {"a": -3.0, "b": -6.0}
    with pytest.raises(ValueError, match="num_classes=4"):
        class_energy(logits, target, 4)


def _closed_form(p: torch.Tensor, log_end: float | None) -> torch.Tensor:
    """dL/df_y without smoothing: CE p - 1; EL -1 up to log_end, -(1 - p)(1 + p/(1 - LE)) beyond."""
    if log_end is None:
        return p - 1
    if log_end == 1.0:
        return -torch.ones_like(p)
    return torch.where(p <= log_end, -torch.ones_like(p), -(1 - p) * (1 + p / (1 - log_end)))


@pytest.mark.parametrize("log_end", [None, 0.5, 0.75, 1.0])
def test_analytic_curve_is_the_closed_form(log_end):
    p = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    crit = EncouragingLoss(reduction="none", log_end=log_end or 1.0, bonus_scale=0.0 if log_end is None else 1.0)
    for c in (2, 10, 1000):
        torch.testing.assert_close(analytic_target_grad(crit, p, c), _closed_form(p, log_end), rtol=1e-9,
                                   atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), classes=st.integers(2, 30), scale=st.floats(0.1, 20.0),
       log_end=st.sampled_from([None, 0.5, 0.75, 1.0]))
def test_measured_gradient_lies_on_the_analytic_curve(seed, classes, scale, log_end):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, classes, generator=gen, dtype=torch.float64) * scale
    target = torch.randint(0, classes, (64,), generator=gen)
    crit = EncouragingLoss(reduction="none", log_end=log_end or 1.0, bonus_scale=0.0 if log_end is None else 1.0)
    p = logits.softmax(1).gather(1, target[:, None]).squeeze(1)
    measured = target_logit_grad(crit, logits, target)
    torch.testing.assert_close(measured, analytic_target_grad(crit, p, classes), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(measured, _closed_form(p, log_end), rtol=1e-7, atol=1e-9)


def test_gradient_rows_bins_and_well_classified_summary():
    crit = EncouragingLoss(reduction="none", bonus_scale=0.0)  # CE
    logits = torch.randn(400, 10) * 4
    target = logits.argmax(1)
    target[:100] = torch.randint(0, 10, (100,))
    rows = gradient_rows(crit, logits, target, "train", param_norms=torch.ones(50))
    bins = [r for r in rows if r["type"] == "bin"]
    (summary,) = [r for r in rows if r["type"] == "summary"]
    assert sum(r["count"] for r in bins) == 400 and sum(r["param_count"] for r in bins) == 50
    assert summary["max_abs_dev"] < 1e-6  # measured == analytic for CE
    p = logits.double().softmax(1).gather(1, target[:, None]).squeeze(1)
    assert summary["frac_well"] == pytest.approx(float((p > 0.9).double().mean()))
    assert summary["share_well"] == pytest.approx(float((1 - p[p > 0.9]).sum() / (1 - p).sum()), rel=1e-6)
    for r in bins:
        if r["count"]:
            assert r["lo"] <= r["p_mean"] <= r["hi"]
            assert r["target_grad"] == pytest.approx(1 - r["p_mean"], rel=1e-6)
    with pytest.raises(ValueError, match="reduction='none'"):
        target_logit_grad(EncouragingLoss(), logits, target)


@pytest.mark.parametrize("criterion", [EncouragingLoss(reduction="none", log_end=0.75),
                                       FocalLoss(gamma=2.0, reduction="none")])
def test_per_example_grad_norms_match_one_backward_per_example(criterion):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    model.train()
    model(torch.randn(32, 6))  # non-trivial running statistics
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    got = per_example_grad_norms(model, criterion, x, y, chunk=4)
    assert model.training  # restored
    model.eval()
    expected = []
    for i in range(10):
        model.zero_grad()
        criterion(model(x[i:i + 1]), y[i:i + 1]).sum().backward()
        expected.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-4, atol=1e-6)


def test_linear_probe_separates_separable_features_and_is_deterministic():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 16, generator=gen) * 4
    y = torch.randint(0, 5, (600,), generator=gen)
    x = centers[y] + torch.randn(600, 16, generator=gen)
    scrambled = x * 1000 + 50  # the probe standardises: the scale of the features does not matter
    a = linear_probe(x[:500], y[:500], x[500:], y[500:], 5)
    b = linear_probe(scrambled[:500], y[:500], scrambled[500:], y[500:], 5)
    assert a["test_acc"] > 0.95 and a["train_acc"] > 0.95
    assert a == pytest.approx(b, abs=0.02)
    assert linear_probe(x[:500], y[:500], x[500:], y[500:], 5) == a
    with pytest.raises(ValueError, match="same D"):
        linear_probe(x[:500], y[:500], x[500:, :3], y[500:], 5)


def test_knn_votes_of_hand_set_neighbours():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0], [-1.0, 0.1]])
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 2]), 3, k=1) == 1.0
    # k = 5: every point votes with weight exp(cos / T); a sharp T keeps the nearest class winning, a flat T turns
    # it into a majority vote that the lone class-2 point loses
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 2]), 3, k=5) == 1.0
    assert knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 2]), 3, k=5, temperature=100.0) == \
        pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must be in"):
        knn_accuracy(bank, labels, queries, torch.tensor([0, 1, 2]), 3, k=6)
