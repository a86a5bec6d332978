"""One pass of a trained model over a dataset: logits, labels and penultimate features, kept on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models import features as penultimate
from ..models import get_classifier


@dataclass
class Outputs:
    """``logits`` ``(N, C)`` float32, ``target`` ``(N,)`` int64, ``features`` ``(N, D)`` float32 or None."""

    logits: Tensor
    target: Tensor
    features: Tensor | None = None

    def __len__(self) -> int:
        return len(self.target)


def first_batches(batches, n: int | None) -> Iterator[tuple[Any, Tensor, int]]:
    """``(inputs, target, keep)`` for the batches of ``batches.epoch(0)`` up to the first ``n`` examples (all when
    ``n`` is None): a batch's first ``keep`` examples count. Inputs are not cut (a graph batch cannot be sliced like
    a tensor): callers keep the first ``keep`` rows of what they compute."""
    seen = 0
    for x, y in batches.epoch(0):
        keep = len(y) if n is None else min(len(y), n - seen)
        seen += keep
        yield x, y, keep
        if n is not None and seen >= n:  # stop before the source prepares another batch
            return


@torch.no_grad()
def collect_outputs(model: nn.Module, batches, *, with_features: bool = True, max_examples: int | None = None
                    ) -> Outputs:
    """Run ``model`` (in eval mode) over ``batches`` (a source with ``epoch(e)`` yielding ``(x, y)``, read in order).

    The features are the classifier's input, taken in the same forward pass: the classifier is applied to them to
    get the logits, so the two always agree. ``max_examples`` keeps the first N examples (the source's order).
    """
    if max_examples is not None and max_examples <= 0:
        raise ValueError(f"max_examples must be positive or None, got {max_examples}")
    was_training = model.training
    model.eval()
    head = get_classifier(model) if with_features else None
    logits, targets, feats = [], [], []
    try:
        for x, y, keep in first_batches(batches, max_examples):
            if head is not None:
                f = penultimate(model, x)[:keep]
                out = head(f)
                feats.append(f.float().cpu())
            else:
                out = model(x)[:keep]
            logits.append(out.float().cpu())
            targets.append(y[:keep].cpu())
    finally:
        model.train(was_training)
    if not targets:
        raise ValueError("collect_outputs: the batch source yielded no examples")
    return Outputs(torch.cat(logits), torch.cat(targets).long(), torch.cat(feats) if feats else None)
