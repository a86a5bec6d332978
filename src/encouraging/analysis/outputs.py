"""One pass of a trained model over a dataset: logits, labels and penultimate features, kept on the CPU."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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


def first_batches(batches, n: int | None) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of ``batches.epoch(0)``, cut after the first ``n`` examples (all of them when ``n`` is None)."""
    seen = 0
    for x, y in batches.epoch(0):
        if n is not None:
            x, y = x[: n - seen], y[: n - seen]
        seen += len(y)
        yield x, y
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
        for x, y in first_batches(batches, max_examples):
            if head is not None:
                f = penultimate(model, x)
                out = head(f)
                feats.append(f.float().cpu())
            else:
                out = model(x)
            logits.append(out.float().cpu())
            targets.append(y.cpu())
    finally:
        model.train(was_training)
    if not targets:
        raise ValueError("collect_outputs: the batch source yielded no examples")
    return Outputs(torch.cat(logits), torch.cat(targets).long(), torch.cat(feats) if feats else None)
