"""OOD metrics against hand-computed cases: ties, the positive-class switch, the FPR@95TPR definition, and ECE."""

from __future__ import annotations

import pytest
import torch

from encouraging.evaluation.ood_metrics import aupr, auroc, expected_calibration_error, fpr_at_tpr, ood_metrics

# in-distribution scores 3, 2, 1 and OOD scores 2, 0 (higher = more in-distribution): one tie at 2
S_IN, S_OUT = torch.tensor([3.0, 2.0, 1.0]), torch.tensor([2.0, 0.0])


def test_auroc_counts_a_tie_as_half():
    # pairs (in, ood): 3>2, 3>0, 2=2 (1/2), 2>0, 1<2, 1>0  ->  4.5 / 6
    assert auroc(S_IN, S_OUT) == pytest.approx(4.5 / 6)
    assert auroc(S_OUT, S_IN) == pytest.approx(1 - 4.5 / 6)
    assert auroc(torch.ones(4), torch.ones(3)) == pytest.approx(0.5)
    assert auroc(torch.tensor([5.0, 6.0]), torch.tensor([1.0, 2.0])) == 1.0


def test_fpr95_under_each_positive_class():
    # in positive: keeping >= 95% of in-distribution needs threshold 1; OOD with score >= 1: {2} -> 1/2
    assert fpr_at_tpr(S_IN, S_OUT, positive="in") == pytest.approx(0.5)
    # OOD positive (outlier = -score): catching >= 95% of OOD needs -score >= -2; in-distribution flagged: 2, 1
    assert fpr_at_tpr(S_IN, S_OUT, positive="ood") == pytest.approx(2 / 3)


def test_fpr95_is_read_at_the_first_threshold_reaching_the_tpr():
    s_in = torch.arange(1.0, 21.0)  # 20 scores: 19 of them (95%) are >= 2, all 20 only at >= 1
    s_out = torch.tensor([1.5, 2.5, 10.0, -3.0])
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(2 / 4)  # 2.5 and 10 are >= 2; 1.5 is not
    assert fpr_at_tpr(s_in, s_out, tpr=1.0) == pytest.approx(3 / 4)  # threshold 1 lets 1.5 in too
    assert fpr_at_tpr(torch.ones(5), torch.ones(5)) == 1.0  # all tied: no threshold separates them


def test_aupr_in_and_out_by_hand():
    # in positive, ranked by score: P/R at thresholds 3, 2, 1 = (1, 1/3), (2/3, 2/3), (3/4, 1), then (1, 0):
    # trapezoids 1/3 + 5/18 + 17/72 = 61/72
    assert aupr(S_IN, S_OUT, "in") == pytest.approx(61 / 72)
    # OOD positive, ranked by -score: (1, 1/2), (1/2, 1/2), (1/2, 1) -> 1/2 + 0 + 1/4
    assert aupr(S_IN, S_OUT, "ood") == pytest.approx(0.75)


def test_ood_metrics_names_the_positive_class_and_only_fpr_changes():
    a, b = ood_metrics(S_IN, S_OUT), ood_metrics(S_IN, S_OUT, positive="ood")
    assert a["positive"] == "in" and b["positive"] == "ood" and a["tpr"] == 0.95
    assert (a["n_in"], a["n_ood"]) == (3, 2)
    for key in ("auroc", "aupr_in", "aupr_out"):
        assert a[key] == pytest.approx(b[key])
    assert a["fpr95"] != pytest.approx(b["fpr95"])


def test_metric_errors_name_the_argument():
    with pytest.raises(ValueError, match="positive"):
        ood_metrics(S_IN, S_OUT, positive="id")
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(S_IN, S_OUT, tpr=1.5)
    with pytest.raises(ValueError, match="score_out"):
        auroc(S_IN, torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="OOD scores"):
        auroc(S_IN, torch.tensor([]))


def test_ece_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    target = torch.tensor([0, 1, 1, 0])
    # bins (0.5, 0.6]: conf .6 and .55, both wrong -> 2/4 * |0 - 0.575|; (0.6, 0.7]: .7 right -> 1/4 * 0.3;
    # (0.8, 0.9]: .9 right -> 1/4 * 0.1
    assert expected_calibration_error(probs, target) == pytest.approx(0.5 * 0.575 + 0.075 + 0.025)
    sure = torch.eye(3)
    assert expected_calibration_error(sure, torch.arange(3)) == 0.0
    assert expected_calibration_error(sure, torch.tensor([1, 2, 0])) == pytest.approx(1.0)
    assert expected_calibration_error(probs, target, n_bins=1) == pytest.approx(abs(0.5 - 0.6875))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, target, n_bins=0)
    with pytest.raises(ValueError, match="probs"):
        expected_calibration_error(probs[0], target)
