"""OOD detectors on hand-set logits and features, OOD data preprocessing, and the evaluation of trained runs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from encouraging.data import load_image_dataset
from encouraging.evaluation.ood import (
    DETECTORS,
    ODIN,
    Mahalanobis,
    _match_channels,
    build_detector,
    evaluate_ood,
    histogram_rows,
    ood_batches,
    paper_ood_text,
)
from encouraging.experiment import load_run
from encouraging.results import ResultsStore, write_report

LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [10.0, -1.0, 3.0]])


class Identity(nn.Module):
    """Logits = input: detectors see hand-set logits."""

    def forward(self, x):
        return x


def test_logit_detectors_by_hand():
    msp = build_detector("msp").score(Identity(), LOGITS)
    assert msp[1] == pytest.approx(1 / 3)
    assert msp[0] == pytest.approx(math.exp(2) / (math.exp(2) + 2))
    assert torch.equal(build_detector("max_logit").score(Identity(), LOGITS), torch.tensor([2.0, 0.0, 10.0]).double())
    # negative free energy: T logsumexp(f / T) with T = 1, higher for the more confident input
    energy = build_detector("energy").score(Identity(), LOGITS)
    assert energy[1] == pytest.approx(math.log(3))
    assert energy.dtype == torch.float64 and torch.allclose(energy, torch.logsumexp(LOGITS.double(), 1))
    assert energy[2] > energy[0] > energy[1]


def test_paper_ood_text_looks_up_the_papers_mnist_vs_fashion_mnist_numbers():
    assert paper_ood_text() == "CE AUROC 95.68, FPR95 20.92; EL AUROC 98.04, FPR95 8.69"


def test_msp_keeps_large_margins_apart():
    logits = torch.tensor([[20.0, 0.0], [25.0, 0.0]])  # both round to p = 1.0 in float32
    assert logits.softmax(1).max(1).values.unique().numel() == 1
    msp = build_detector("msp").score(Identity(), logits)
    assert msp[1] > msp[0]


def test_odin_without_perturbation_is_the_tempered_msp():
    x = LOGITS.clone()
    scores = ODIN(temperature=2.0, eps=0.0).score(Identity(), x)
    assert torch.allclose(scores, (LOGITS.double() / 2).softmax(1).max(1).values)
    # a step against the predicted class's loss raises its tempered probability
    assert bool((ODIN(temperature=2.0, eps=0.1).score(Identity(), x) > scores).all())
    with pytest.raises(ValueError, match="temperature"):
        ODIN(temperature=0.0)


class Features(nn.Module):
    """Features = input, so the Mahalanobis detector sees hand-set features."""

    head_path = "classifier"

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(2, 2)

    def forward_features(self, x):
        return x

    def forward(self, x):
        return self.classifier(x)


class Batches:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def epoch(self, e):
        yield self.x, self.y


def test_mahalanobis_scores_the_distance_to_the_closest_class_mean():
    # class 0 at (0, 0), class 1 at (10, 0), within-class spread +-1 in each coordinate
    offsets = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    x = torch.cat([offsets, offsets + torch.tensor([10.0, 0.0])])
    y = torch.tensor([0] * 4 + [1] * 4)
    det = Mahalanobis().fit(Features(), Batches(x, y))
    s = det.score(Features(), torch.tensor([[0.0, 0.0], [10.0, 0.0], [5.0, 0.0], [0.0, 3.0]]))
    assert s[0] == pytest.approx(0.0, abs=1e-4) and s[1] == pytest.approx(0.0, abs=1e-4)
    assert s[2] < s[3] < s[0]  # (5, 0) is 5 units from both means, (0, 3) 3 units from one
    # shared covariance = the sum of centered outer products (pytorch-ood), here 8 I: score = -d^2 / 16
    assert s[3] == pytest.approx(-9 / 16, rel=1e-4)


def test_build_detector_rejects_unknown_names():
    assert set(DETECTORS) == {"msp", "max_logit", "energy", "odin", "mahalanobis"}
    with pytest.raises(ValueError, match="detector must be one of"):
        build_detector("knn")


def test_match_channels():
    grey = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert torch.equal(_match_channels(grey, 3), grey.expand(-1, 3, -1, -1))
    rgb = torch.full((1, 3, 2, 2), 100, dtype=torch.uint8)
    assert torch.equal(_match_channels(rgb, 1), torch.full((1, 1, 2, 2), 100, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channels"):
        _match_channels(rgb, 2)


def test_histogram_rows_count_every_score_once():
    rows = histogram_rows("msp", "x", torch.rand(50), torch.rand(30) + 0.5, bins=10)
    assert len(rows) == 10 and sum(r["count_in"] for r in rows) == 50 and sum(r["count_ood"] for r in rows) == 30
    assert rows[0]["lo"] < rows[-1]["hi"]


def test_ood_set_is_preprocessed_with_the_runs_normalization(trained_runs, data_root):
    run = load_run(trained_runs["CE"], device="cpu")
    x, _ = next(ood_batches(run, "fashion_mnist", limit=70).epoch(0))
    raw = load_image_dataset("fashion_mnist").x_test[:70].float() / 255
    mean, std = run.notes["mean"][0], run.notes["std"][0]
    assert mean == pytest.approx(0.1307)  # MNIST's, not Fashion-MNIST's
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)


def test_evaluate_ood_on_a_trained_run(trained_runs, data_root):
    run = load_run(trained_runs["EL"], device="cpu")
    rows, hists = evaluate_ood(run, ["fashion_mnist"], detectors=["msp", "energy", "mahalanobis"], limit=200,
                               positive="ood")
    assert [r["detector"] for r in rows] == ["msp", "energy", "mahalanobis"]
    for r in rows:
        assert r["positive"] == "ood" and r["n_in"] == 200 and r["n_ood"] == 200
        assert 0.5 < r["auroc"] <= 1.0 and 0.0 <= r["fpr95"] <= 1.0 and 0.0 <= r["ece"] <= 1.0
    assert len(hists) == 3 * 40
    with pytest.raises(ValueError, match="at least one OOD"):
        evaluate_ood(run, [])


def test_logit_detectors_share_one_forward_pass_per_batch(trained_runs, data_root):
    from encouraging.evaluation.ood import eval_batches

    run = load_run(trained_runs["CE"], device="cpu")
    calls = []
    run.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    rows, _ = evaluate_ood(run, ["fashion_mnist"], detectors=["msp", "max_logit", "energy"], limit=200)
    batches = eval_batches(run, 200)
    assert sum(calls) == 400 and len(calls) == 2 * len(list(batches.epoch(0)))
    # the shared logits give the scores a detector computes on its own
    x = next(iter(batches.epoch(0)))[0]
    with torch.no_grad():
        logits = run.model(x).double()
    for name in ("msp", "max_logit", "energy"):
        det = build_detector(name)
        assert torch.equal(det.score(run.model, x, logits), det.score(run.model, x))
    assert rows[0]["in_acc"] > 0.5


def test_eval_ood_cli_stores_rows_and_the_report_has_the_section(trained_runs, data_root, tmp_path, capsys):
    from encouraging.cli import main

    assert main(["eval", "ood", str(trained_runs["db"]), "--ood", "fashion_mnist", "--detectors", "msp,max_logit",
                 "--limit", "150", "--out", str(tmp_path / "ood"), "--quiet"]) == 0
    assert "positive class: in" in capsys.readouterr().out
    store = ResultsStore(trained_runs["db"])
    rows = store.rows("ood")
    assert {(r["loss_label"], r["detector"]) for r in rows} == {(lb, d) for lb in ("CE", "EL (LE=1)")
                                                                for d in ("msp", "max_logit")}
    assert (tmp_path / "ood" / "ood_hist_fashion_mnist.png").is_file()
    report = write_report(store, tmp_path / "report").read_text()
    assert "### OOD detection" in report and "max_logit" in report
    capsys.readouterr()
    assert main(["eval", "ood", str(trained_runs["CE"]), "--ood", "fashion_mnist", "--detectors", "knn"]) == 2
    assert "detectors must be among" in capsys.readouterr().err


def test_a_plain_image_folder_is_an_ood_set(trained_runs, data_root, tmp_path):
    from PIL import Image

    folder = tmp_path / "textures" / "any"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (40, 36), (10 * i, 200, 30)).save(folder / f"{i}.png")
    run = load_run(trained_runs["CE"], device="cpu")
    x, _ = next(ood_batches(run, str(tmp_path / "textures"), limit=4).epoch(0))
    assert x.shape == (4, 1, 28, 28)  # the run's channels and size
    grey = round(0.299 * 0 + 0.587 * 200 + 0.114 * 30) / 255  # PIL's "L" conversion of the first image
    assert torch.allclose(x[0], torch.full((1, 28, 28), (grey - 0.1307) / 0.3081), atol=1e-2)
