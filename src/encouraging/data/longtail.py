"""Long-tailed versions of a classification training set (Cao et al. 2019, the CIFAR-LT construction).

With ``C`` classes, imbalance ratio ``r`` = n_max / n_min and ``n_max`` the largest count every class can supply:

* ``exp``: class ``i`` keeps ``int(n_max * r ** (-i / (C - 1)))`` examples (CIFAR-10 at r = 100: 5000, 2997, 1796,
  1077, 645, 387, 232, 139, 83, 50, as in LDAM-DRW's ``IMBALANCECIFAR10``);
* ``step``: the first ``C // 2`` classes keep ``n_max``, the others ``int(n_max / r)``.

Which examples a class keeps is a seeded shuffle of that class's indices, so the subset is the same for every loss
and run seed (only ``seed`` changes it). Test sets stay balanced: only the training split is subsampled.
"""

from __future__ import annotations

import torch
from torch import Tensor

PROFILES = ("exp", "step")


def long_tail_counts(num_classes: int, n_max: int, profile: str = "exp", ratio: float = 100.0) -> list[int]:
    """Examples per class of the long-tailed training set."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if ratio < 1:
        raise ValueError(f"imbalance ratio must be >= 1 (n_max / n_min), got {ratio}")
    if num_classes < 2 or n_max < 1:
        raise ValueError(f"need at least 2 classes and n_max >= 1, got {num_classes} classes, n_max={n_max}")
    if profile == "exp":
        counts = [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1))) for i in range(num_classes)]
    else:
        counts = [n_max if i < num_classes // 2 else int(n_max / ratio) for i in range(num_classes)]
    if min(counts) < 1:
        raise ValueError(f"ratio {ratio:g} leaves a class with no examples (n_max={n_max}): lower the ratio")
    return counts


def long_tail_indices(labels: Tensor, num_classes: int, profile: str = "exp", ratio: float = 100.0,
                      seed: int = 0) -> Tensor:
    """Sorted indices into ``labels`` of the long-tailed subset (``n_max``: the smallest class's size)."""
    labels = labels.cpu()
    available = torch.bincount(labels, minlength=num_classes)
    if int(available.min()) < 1:
        empty = torch.nonzero(available == 0).flatten()[:10].tolist()
        raise ValueError(f"every class needs training examples; classes {empty} have none")
    counts = long_tail_counts(num_classes, int(available.min()), profile, ratio)
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c, n in enumerate(counts):
        members = torch.nonzero(labels == c).flatten()
        keep.append(members[torch.randperm(len(members), generator=generator)[:n]])
    return torch.cat(keep).sort().values
