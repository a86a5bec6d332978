"""The shared energy functions against plain float64 formulas, and their users: the OOD detectors and the analyses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from encouraging.analysis import class_energy
from encouraging.evaluation.energy import conditional_energy, free_energy
from encouraging.evaluation.ood import build_detector

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, -1.0, 3.0], [-4.0, 7.5, 0.25]], dtype=torch.float64)


class Identity(nn.Module):
    def forward(self, x):
        return x


def _plain_free_energy(row: list[float], t: float) -> float:
    """-T log sum_k exp(f_k / T), shifted by the max so the exponentials stay finite."""
    m = max(row) / t
    return -t * (m + math.log(math.fsum(math.exp(f / t - m) for f in row)))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 1000.0])
def test_free_energy_is_minus_t_logsumexp(temperature):
    expected = torch.tensor([_plain_free_energy(r, temperature) for r in LOGITS.tolist()], dtype=torch.float64)
    torch.testing.assert_close(free_energy(LOGITS, temperature), expected, rtol=1e-12, atol=1e-12)
    assert free_energy(LOGITS[1], temperature) == pytest.approx(-temperature * math.log(3))  # any leading dims


def test_free_energy_of_large_logits_stays_finite():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]], dtype=torch.float64)
    for t in (1.0, 2.0):
        expected = torch.tensor([-1e4, 1e4 - t * math.log(3), -1e4 - t * math.log(3)], dtype=torch.float64)
        torch.testing.assert_close(free_energy(logits, t), expected)
    assert torch.isfinite(free_energy(logits.float())).all()


def test_conditional_energy_is_the_negative_logit():
    assert torch.equal(conditional_energy(LOGITS), -LOGITS)


def test_detectors_use_the_energies():
    energy = build_detector("energy").score(Identity(), LOGITS)
    assert torch.equal(energy, -free_energy(LOGITS))
    max_logit = build_detector("max_logit").score(Identity(), LOGITS)
    assert torch.equal(max_logit, -conditional_energy(LOGITS).min(dim=1).values)


def test_class_energy_rows_are_means_of_conditional_energy():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    target = torch.arange(50) % 3  # class 3 has no examples
    e = class_energy(logits, target, 4)
    for c in range(3):
        torch.testing.assert_close(e[c], conditional_energy(logits.double())[target == c].mean(0))
    assert torch.isnan(e[3]).all()
