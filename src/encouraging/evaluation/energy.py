"""Energies of a classifier's logits ``f`` (last dimension = classes), shared by the analyses and the OOD detectors.

Energy-based view (LeCun et al. 2006; paper §4.2): the logits define a conditional energy per class,
``E(k|x) = -f_k(x)``, with ``p(k|x) = exp(-E(k|x)) / sum_j exp(-E(j|x))``. Marginalizing over the classes gives
the free energy ``F(x) = -T log sum_k exp(-E(k|x) / T) = -T logsumexp(f / T)`` (Liu et al. 2020), lower for
inputs the model finds more in-distribution. The OOD scores (higher = more in-distribution) follow:
``max_logit = max_k f_k = -min_k E(k|x)`` and ``energy = -F(x)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def conditional_energy(logits: Tensor) -> Tensor:
    """``E(k|x) = -f_k(x)`` for every class ``k``: same shape and dtype as ``logits``."""
    return -logits


def free_energy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``F(x) = -T logsumexp_k(f_k / T)`` over the last dimension (pytorch-ood's ``E = -T lse(f/T)``).

    ``logsumexp`` subtracts the maximum first, so large logits (±1e4) stay finite; ``T -> 0`` tends to
    ``-max_k f_k = min_k E(k|x)``.
    """
    return -temperature * torch.logsumexp(logits / temperature, dim=-1)
