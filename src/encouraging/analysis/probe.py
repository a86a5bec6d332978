"""Representation quality of a trained backbone: a retrained linear classifier and k-NN on its frozen features.

The linear probe follows the classifier re-training (cRT) stage of Kang et al. (2020), used by the paper for
iNaturalist (paper.md §5.5): the backbone is frozen, the classifier re-initialised and trained again with
cross-entropy. Here it runs on pre-computed features (no augmentation) with a fixed budget for every model, and the
features are standardised with the training set's statistics so that the scale of a model's features (EL's grow
with its logits) does not change the optimisation. Nothing is tuned on the test set.

The k-NN classifier is the weighted cosine vote of Wu et al. (2018) / Caron et al. (2021): each of the k nearest
training features votes for its label with weight ``exp(cos / T)``. It is a few tensor operations on the features;
a library would add a dependency for no gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ProbeConfig:
    """The fixed probe budget: SGD with momentum, cosine-decayed learning rate, cross-entropy."""

    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def standardize(train: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """Centre and scale every feature with the training set's mean and std (constant features stay 0)."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return tuple((t - mean) / std for t in (train, *others))


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int,
                 config: ProbeConfig = ProbeConfig()) -> dict[str, float]:
    """Train a fresh ``nn.Linear`` on frozen (standardised) features; return its train and test accuracy."""
    if train_x.dim() != 2 or test_x.dim() != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D, got {tuple(train_x.shape)} and "
                         f"{tuple(test_x.shape)}")
    train_x, test_x = standardize(train_x.float(), test_x.float())
    gen = torch.Generator().manual_seed(config.seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():  # a seeded re-initialisation, the same for every model
        bound = 1 / train_x.shape[1] ** 0.5
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.SGD(head.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(train_y) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(config.epochs):
        order = torch.randperm(len(train_y), generator=gen)
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return {"train_acc": _accuracy(head(train_x), train_y), "test_acc": _accuracy(head(test_x), test_y)}


@torch.no_grad()
def knn_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, num_classes: int, *,
                 k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Accuracy of the weighted cosine k-NN vote (weights ``exp(cos / temperature)``) of the training features."""
    if not 1 <= k <= len(train_y):
        raise ValueError(f"k must be in [1, {len(train_y)}] (the number of training examples), got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    bank = F.normalize(train_x.float(), dim=1)
    correct = 0
    for i in range(0, len(test_y), chunk):
        sim, idx = (F.normalize(test_x[i:i + chunk].float(), dim=1) @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(idx), num_classes).scatter_add_(1, train_y[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == test_y[i:i + chunk]).sum())
    return correct / len(test_y)


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean())
