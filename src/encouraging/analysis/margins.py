"""Margins ``m = f_y - max_{k != y} f_k`` of trained models (paper §4.3, Figure 1 and the CE-vs-EL margin figure).

Cross-entropy's push on a margin, ``A / (1 + A)`` with ``A = sum_{k != y} exp(f_k - f_y)``, fades as the margin
grows; EL's ``A / A`` does not, so EL should move the mass of the margin distribution away from 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
HIST_BINS = 60


def margins(logits: Tensor, target: Tensor) -> Tensor:
    """``f_y - max_{k != y} f_k`` per example (negative: misclassified; 0: a tie with the runner-up)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape ({logits.shape[0]},), got {tuple(target.shape)}")
    f_y = logits.gather(1, target[:, None])
    others = logits.scatter(1, target[:, None], float("-inf"))
    return (f_y - others.amax(1, keepdim=True)).squeeze(1)


def _histogram(m: Tensor) -> tuple[Tensor, Tensor]:
    """``HIST_BINS`` bins over the central 99% of the sample, so a few extreme margins do not flatten it."""
    lo, hi = torch.quantile(m, torch.tensor([0.005, 0.995], dtype=torch.float64)).tolist()
    return torch.histogram(m, bins=HIST_BINS, range=(lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))


def margin_summary(m: Tensor) -> dict[str, float]:
    """Mean, quantiles, the fraction misclassified (``m < 0``) and the histogram mode of a margin sample."""
    m = m.double()
    return _summary(m, *_histogram(m))


def _summary(m: Tensor, counts: Tensor, edges: Tensor) -> dict[str, float]:
    q = torch.quantile(m, torch.tensor(QUANTILES, dtype=torch.float64))
    top = int(counts.argmax())
    out = {f"q{round(p * 100):02d}": float(v) for p, v in zip(QUANTILES, q, strict=True)}
    return {"n": len(m), "mean": float(m.mean()), "median": out.pop("q50"), **out,
            "frac_negative": float((m < 0).double().mean()), "mode": float((edges[top] + edges[top + 1]) / 2),
            "min": float(m.min()), "max": float(m.max())}


def margin_rows(logits: Tensor, target: Tensor, split: str) -> list[dict]:
    """Flat rows for the results database: one ``summary`` row and ``HIST_BINS`` ``hist`` rows (lo, hi, count)
    over the central 99% of the margins (the summary's ``min``/``max`` give the full range)."""
    m = margins(logits, target).double()
    counts, edges = _histogram(m)
    rows = [{"split": split, "type": "summary", **_summary(m, counts, edges)}]
    rows += [{"split": split, "type": "hist", "lo": float(edges[i]), "hi": float(edges[i + 1]),
              "count": int(counts[i])} for i in range(HIST_BINS)]
    return rows
