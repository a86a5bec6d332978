"""Conditional energies ``E(k|x) = -f_k(x)`` (:func:`~encouraging.evaluation.energy.conditional_energy`) averaged
over the examples of each class (paper §4.2).

CE in energy form, ``E(y|x) + log(exp(-E(y|x)) + sum_{k != y} exp(-E(k|x)))``, also pushes the data energy up
through the denominator; EL, ``E(y|x) + log sum_{k != y} exp(-E(k|x))``, has no such barrier, so it should reach
much lower true-class energies (the paper: about 4x lower for CIFAR-10's "cat").
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..evaluation.energy import conditional_energy


def class_energy(logits: Tensor, target: Tensor, num_classes: int | None = None) -> Tensor:
    """``E[c, k]`` = mean of ``E(k|x) = -f_k(x)`` over the examples ``x`` of class ``c``, in float64: ``(C, C)``;
    NaN rows for absent classes."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    c = num_classes or logits.shape[1]
    if c != logits.shape[1]:
        raise ValueError(f"num_classes={c} does not match the {logits.shape[1]} logits per example")
    sums = torch.zeros(c, c, dtype=torch.float64).index_add_(0, target, conditional_energy(logits.double()))
    counts = torch.bincount(target, minlength=c).double()
    return sums / counts[:, None]  # 0/0 = NaN where a class has no examples


def energy_rows(logits: Tensor, target: Tensor, split: str, class_names: list[str] | None = None) -> list[dict]:
    """Rows ``(split, cls, k, energy, true)``: one per (class, candidate) pair, ``true`` when ``k == cls``."""
    e = class_energy(logits, target)
    counts = torch.bincount(target, minlength=e.shape[0])
    names = class_names or [str(i) for i in range(e.shape[0])]
    return [{"split": split, "cls": c, "cls_name": names[c], "k": k, "k_name": names[k], "n": int(counts[c]),
             "energy": float(e[c, k]), "true": c == k}
            for c in range(e.shape[0]) if counts[c] > 0 for k in range(e.shape[1])]

