"""Test accuracy per class against the class's number of training examples: how far accuracy falls from the head
classes to the tail (the long-tailed evidence behind many / medium / few-shot accuracy), from the predictions the
task reports (a post-hoc logit adjustment included)."""

from __future__ import annotations

import math
from typing import Any

from ..engine.classification import class_totals
from ..experiment.loading import LoadedRun


def per_class_rows(run: LoadedRun) -> list[dict[str, Any]]:
    """One row per class: ``cls``, ``name``, ``train_count`` (None when the task has no class counts),
    ``test_count`` and ``test_acc`` (NaN for a class absent from the test set)."""
    stats = run.data.stats
    _, hits, counts = class_totals(lambda x: run.task.prediction_logits(run.model, x), run.data.test,
                                   stats.num_classes, device=run.device)
    names = run.notes.get("classes") or [str(c) for c in range(stats.num_classes)]
    return [{"cls": c, "name": str(names[c]), "train_count": stats.class_counts[c] if stats.class_counts else None,
             "test_count": int(counts[c]), "test_acc": float(hits[c] / counts[c]) if counts[c] else math.nan}
            for c in range(stats.num_classes)]
