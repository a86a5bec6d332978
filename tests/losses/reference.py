"""Plain reference implementations the tests (and benchmarks) compare against.

``paper_encouraging_loss`` re-implements the formula of the paper's own ``EncouragingLoss.py`` (paper.md §2.3):
the bonus is built for every class with ``clamp(1 - p, min=1e-5)`` and the tangent past ``log_end``, then
``F.nll_loss(log_softmax - bonus, target)``. It is an oracle where its clamp is inactive, and the cost baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def paper_encouraging_loss(input: Tensor, target: Tensor, log_end: float = 0.75, reduction: str = "mean") -> Tensor:
    lprobs = F.log_softmax(input, dim=1)
    probs = torch.exp(lprobs)
    bonus = torch.log(torch.clamp(1.0 - probs, min=1e-5))
    if log_end != 1.0:
        bonus = torch.where(probs > log_end, 1.0 / (log_end - 1.0) * (probs - log_end) + math.log(1.0 - log_end), bonus)
    return F.nll_loss(lprobs - bonus, target, reduction=reduction)
