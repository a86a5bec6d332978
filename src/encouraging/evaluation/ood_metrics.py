"""OOD detection metrics and calibration as pure functions of scores (higher score = more in-distribution).

Two conventions for the positive class, both supported, every output says which one it used:

* ``positive="in"`` (the paper's, Hendrycks & Gimpel 2017, Liang et al. 2018): in-distribution is positive;
  FPR@95TPR is the fraction of OOD inputs accepted as in-distribution at the threshold that keeps 95% of the
  in-distribution inputs.
* ``positive="ood"`` (pytorch-ood, OpenOOD): OOD is positive (outlier score = -score); FPR@95TPR is the fraction
  of in-distribution inputs rejected at the threshold that catches 95% of the OOD inputs.

AUROC is the same under both (``P(s_in > s_ood) + ½ P(s_in = s_ood)``); AUPR-In and AUPR-Out are named by their
positive class, so they too mean the same under both. Only FPR@95TPR changes with the convention.

Curves are computed by pytorch-ood's ``metrics.functional`` (sklearn semantics: one ROC/PR point per distinct
score, so tied scores enter together and count half in the AUROC; AUPR is the trapezoid over sklearn's PR curve,
as ``sklearn.metrics.auc(recall, precision)``; FPR@TPR is read at the first ROC point with TPR >= 0.95, without
interpolation). ECE is written here: pytorch-ood's ``calibration_error`` uses equal-mass bins, while the paper's
scripts (and Guo et al. 2017) use 10 equal-width confidence bins.
"""

from __future__ import annotations

import torch
from torch import Tensor

POSITIVES = ("in", "ood")


def _check(score_in: Tensor, score_out: Tensor) -> tuple[Tensor, Tensor]:
    score_in, score_out = torch.as_tensor(score_in).flatten(), torch.as_tensor(score_out).flatten()
    if score_in.numel() == 0 or score_out.numel() == 0:
        raise ValueError(f"need in-distribution and OOD scores, got {score_in.numel()} and {score_out.numel()}")
    for name, s in (("score_in", score_in), ("score_out", score_out)):
        if not bool(torch.isfinite(s.double()).all()):
            raise ValueError(f"{name} has non-finite values")
    return score_in.double().cpu(), score_out.double().cpu()


def _positive(positive: str) -> str:
    if positive not in POSITIVES:
        raise ValueError(f"positive must be one of {POSITIVES}, got {positive!r}")
    return positive


def _outlier_inputs(score_in: Tensor, score_out: Tensor) -> tuple[Tensor, Tensor]:
    """pytorch-ood's inputs: outlier scores (higher = more OOD) and labels (< 0 marks OOD)."""
    scores = -torch.cat([score_in, score_out])
    labels = torch.cat([torch.zeros(len(score_in), dtype=torch.long), -torch.ones(len(score_out), dtype=torch.long)])
    return scores, labels


def auroc(score_in: Tensor, score_out: Tensor) -> float:
    """Area under the ROC curve: ``P(s_in > s_ood) + ½ P(s_in = s_ood)`` (the same for either positive class)."""
    from pytorch_ood.metrics.functional import auroc as _auroc

    return float(_auroc(*_outlier_inputs(*_check(score_in, score_out))))


def fpr_at_tpr(score_in: Tensor, score_out: Tensor, tpr: float = 0.95, positive: str = "in") -> float:
    """False-positive rate at the largest threshold whose true-positive rate is at least ``tpr``.

    ``positive="in"``: the fraction of OOD scores ``>= t``, with ``t`` the largest threshold keeping a fraction
    ``>= tpr`` of in-distribution scores ``>= t``. ``positive="ood"``: the same with the roles (and the score's
    sign) swapped.
    """
    from pytorch_ood.metrics.functional import fpr_at_tpr as _fpr_at_tpr

    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be in [0, 1], got {tpr}")
    score_in, score_out = _check(score_in, score_out)
    if _positive(positive) == "ood":
        return float(_fpr_at_tpr(*_outlier_inputs(score_in, score_out), tpr))
    # in-distribution positive: score_in plays pytorch-ood's "OOD" (label < 0, higher = positive)
    scores = torch.cat([score_in, score_out])
    labels = torch.cat([-torch.ones(len(score_in), dtype=torch.long), torch.zeros(len(score_out), dtype=torch.long)])
    return float(_fpr_at_tpr(scores, labels, tpr))


def aupr(score_in: Tensor, score_out: Tensor, positive_class: str = "in") -> float:
    """Area under the precision-recall curve with ``positive_class`` as positive (AUPR-In / AUPR-Out)."""
    from pytorch_ood.metrics.functional import aupr as _aupr

    side = {"in": "id", "ood": "ood"}[_positive(positive_class)]
    return float(_aupr(*_outlier_inputs(*_check(score_in, score_out)), positive=side))


def ood_metrics(score_in: Tensor, score_out: Tensor, *, positive: str = "in", tpr: float = 0.95) -> dict:
    """AUROC, FPR at ``tpr`` TPR, AUPR-In and AUPR-Out (fractions in [0, 1]) with the positive class named.

    Returns ``{"auroc", "fpr95", "aupr_in", "aupr_out", "positive", "tpr", "n_in", "n_ood"}``; ``fpr95`` is the
    FPR at ``tpr`` (0.95 unless told otherwise), under ``positive``'s convention (module docstring).
    """
    score_in, score_out = _check(score_in, score_out)
    return {
        "auroc": auroc(score_in, score_out),
        "fpr95": fpr_at_tpr(score_in, score_out, tpr, positive),
        "aupr_in": aupr(score_in, score_out, "in"),
        "aupr_out": aupr(score_in, score_out, "ood"),
        "positive": _positive(positive),
        "tpr": float(tpr),
        "n_in": len(score_in),
        "n_ood": len(score_out),
    }


def expected_calibration_error(probs: Tensor, target: Tensor, n_bins: int = 10) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017), as a fraction.

    .. math:: \\mathrm{ECE} = \\sum_b \\frac{|B_b|}{N} \\, |\\mathrm{acc}(B_b) - \\mathrm{conf}(B_b)|

    where confidence is ``max_k p_k``, bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]`` and
    accuracy is ``argmax_k p_k == target``.

    Args:
        probs: ``(N, C)`` class probabilities (rows sum to 1).
        target: ``(N,)`` labels in ``[0, C)``.
    """
    if probs.ndim != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"probs must be (N, C) and target (N,), got {tuple(probs.shape)} and {tuple(target.shape)}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, pred = probs.max(1)
    correct = (pred == target).double()
    # edges in the probabilities' own dtype, so a confidence of exactly 0.6 lands in (0.5, 0.6] in float32 too
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=conf.dtype, device=conf.device)
    bins = torch.bucketize(conf, edges[1:-1])  # right=False: bin b holds (edges[b], edges[b+1]]
    conf = conf.double()
    # per bin: sum(correct - conf) = |B| (acc - conf), so the sum of the absolute values over N is the ECE
    gap = torch.zeros(n_bins, dtype=torch.float64, device=conf.device).index_add_(0, bins, correct - conf)
    return float(gap.abs().sum() / len(conf))
