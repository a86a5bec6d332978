"""The analyses end to end on two tiny trained runs: rows in the database, the document, the report section, CLI."""

from __future__ import annotations

import shutil

import pytest
import torch

from encouraging.analysis import (
    AnalysisConfig,
    analyze,
    analyze_run,
    collect_outputs,
    loss_shape_rows,
    plot_log_end_panels,
    plot_loss_shapes,
    run_metrics,
)
from encouraging.cli import main
from encouraging.experiment import load_run
from encouraging.results import ResultsStore, write_report

FAST = AnalysisConfig(grad_examples=64)


def test_outputs_features_reproduce_the_logits(trained_runs):
    run = load_run(trained_runs["EL"], device="cpu")
    out = collect_outputs(run.model, run.data.test, max_examples=100)
    assert len(out) == 100 and out.features.shape == (100, 64)
    with torch.no_grad():
        x = torch.cat([x for x, _ in run.data.test.epoch(0)])[:100]
        torch.testing.assert_close(out.logits, run.model(x))


def test_analyze_run_rows(trained_runs):
    rows = analyze_run(load_run(trained_runs["CE"], device="cpu"), FAST)
    assert set(rows) == {"margins", "energy", "gradient", "probe", "per_class"}
    metrics = run_metrics(rows)
    per_class = rows["per_class"]  # the model's test accuracy, split by class
    model_acc = next(r for r in rows["probe"] if r["method"] == "model")["test_acc"]
    assert sum(r["test_acc"] * r["test_count"] for r in per_class) / sum(r["test_count"] for r in per_class) == \
        pytest.approx(model_acc)
    assert metrics["worst_class_acc"] == min(r["test_acc"] for r in per_class)
    assert 0.0 <= metrics["frac_negative_test"] <= 1.0
    model_acc = next(r for r in rows["probe"] if r["method"] == "model")
    assert metrics["frac_negative_test"] == pytest.approx(1 - model_acc["test_acc"], abs=0.01)  # ties aside
    grad = [r for r in rows["gradient"] if r["type"] == "summary" and r["split"] == "train"][0]
    assert grad["max_abs_dev"] < 1e-6  # CE: measured = analytic on every example
    assert sum(r["param_count"] for r in rows["gradient"] if r["type"] == "bin" and r["split"] == "train") == 64
    assert {r["method"] for r in rows["probe"]} == {"model", "linear", "knn"}
    with pytest.raises(ValueError, match="kinds must be"):
        AnalysisConfig(kinds=("margins", "saliency"))


def test_analyze_stores_rows_and_writes_the_document(trained_runs, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(trained_runs["db"], db)
    path = analyze([trained_runs["CE"], trained_runs["EL"]], tmp_path / "out", db=db, config=FAST, quiet=True)
    text = path.read_text()
    assert "Summary per loss" in text and "Differences from CE" in text and "EL (LE=1) − CE" in text
    for name in ("analysis_margins_test.png", "analysis_energy_class.png", "analysis_gradients.png",
                 "analysis_per_class.png", "loss_shapes.png", "log_end.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5000
    store = ResultsStore(db)
    for kind in ("margins", "energy", "gradient", "probe"):
        assert {r["loss_label"] for r in store.rows(kind)} == {"CE", "EL (LE=1)"}
    # EL's target-logit push on well-classified training examples is exactly 1; CE's is below 0.1 by definition
    well = {r["loss_label"]: r["target_grad_well"] for r in store.rows("gradient", type="summary", split="train")}
    assert well["EL (LE=1)"] == pytest.approx(1.0) and well["CE"] < 0.1
    analyze([trained_runs["EL"]], tmp_path / "again", db=db, config=FAST, quiet=True)  # re-analysis replaces rows
    assert len(store.rows("probe", loss_label="EL (LE=1)")) == 3
    report = write_report(db, tmp_path / "report").read_text()
    assert "Analyses (encouraging analyze)" in report and "true-class energy" in report


def test_analyze_records_a_run_missing_from_the_database(trained_runs, tmp_path):
    db = tmp_path / "new.db"
    analyze([trained_runs["CE"]], tmp_path / "out", db=db, config=AnalysisConfig(kinds=("margins",)), quiet=True)
    (run,) = ResultsStore(db).runs()
    assert run["status"] == "finished" and run["loss_label"] == "CE"
    assert len(ResultsStore(db).rows("margins")) == 2 + 2 * 60
    # copied from the grid database that trained it, as trained: its commit, machine, epochs and final metrics
    grid, rid = ResultsStore(trained_runs["db"]), run["run_id"]
    for key in ("git_commit", "hardware", "config_hash", "created_at", "finished_at"):
        assert run[key] == grid.run(rid)[key]
    assert ResultsStore(db).epochs(rid) == grid.epochs(rid) and len(grid.epochs(rid)) >= 1
    assert ResultsStore(db).final(rid) == grid.final(rid)
    # a bare run folder (no grid database): its epochs from metrics.jsonl, and no commit it cannot know
    bare = tmp_path / "moved" / "run"
    shutil.copytree(trained_runs["EL"], bare)
    analyze([bare], tmp_path / "out2", db=db, config=AnalysisConfig(kinds=("margins",)), quiet=True)
    el = ResultsStore(db).runs(loss_label="EL (LE=1)")[0]
    assert el["git_commit"] is None and el["hardware"] == "not recorded" and el["status"] == "finished"
    assert [e["epoch"] for e in ResultsStore(db).epochs(el["run_id"])] == \
        [e["epoch"] for e in grid.epochs(el["run_id"])]


def test_cli_analyze_a_database(trained_runs, tmp_path, capsys):
    db = tmp_path / "cli.db"
    shutil.copy(trained_runs["db"], db)
    assert main(["analyze", str(db), "--out", str(tmp_path / "cli"), "--kinds", "margins,energy", "--quiet"]) == 0
    assert "analyses:" in capsys.readouterr().out
    assert len({r["run_id"] for r in ResultsStore(db).rows("energy")}) == 2
    assert main(["analyze", str(db), "--recipe", "other", "--out", str(tmp_path / "x")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_the_per_class_figure_bins_many_classes_by_log_frequency():
    from encouraging.analysis.render import PER_CLASS_BINS, _frequency_bins

    assert PER_CLASS_BINS == 12
    points = [(n, acc, str(n)) for n, acc in ((1, 0.0), (1, 1.0), (4096, 0.5), (4096, 0.7))]
    # log 4096 / 12 per bin: the counts of 1 fall in the first bin, those of 4096 in the last
    assert _frequency_bins(points) == [(1.0, 0.5), (pytest.approx(4096.0), pytest.approx(0.6))]


def test_loss_shape_rows_are_the_library_loss():
    rows = loss_shape_rows(log_ends=(0.75, 1.0), points=50)
    for r in rows:
        p = torch.tensor(r["p"], dtype=torch.float64)
        assert r["ce"] == pytest.approx(float(-p.log()))
        if r["log_end"] is None:
            assert r["loss"] == pytest.approx(r["ce"]) and r["grad"] == pytest.approx(float(p - 1))
        elif r["log_end"] == 1.0:
            assert r["bonus"] == pytest.approx(float(torch.log1p(-p))) and r["grad"] == pytest.approx(-1.0)


def test_loss_shape_figures(tmp_path):
    rows = loss_shape_rows(points=60)
    assert "EL" in plot_loss_shapes(rows, tmp_path / "a.png")
    assert "log_end" in plot_log_end_panels(rows, tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "b.png").stat().st_size > 5000
