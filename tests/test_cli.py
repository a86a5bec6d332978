"""The ``encouraging`` command, called in-process: listings, a tiny compare grid, re-runs, reports, errors."""

from __future__ import annotations

import pytest

from encouraging.cli import main
from encouraging.results import ResultsStore

RECIPE = """name: cli-grid
data: {dataset: mnist, train_subset: 512, test_subset: 200, batch_size: 64}
model: {name: mlp}
optim: {name: sgd, lr: 0.05, schedule: constant}
train: {epochs: 1, threads: 1}
"""


@pytest.mark.parametrize("what, expected", [("losses", "el_ls"), ("bonuses", "cosine"), ("tasks", "image"),
                                            ("datasets", "fashion_mnist"), ("models", "torchattacks_cnn")])
def test_list(capsys, what, expected):
    assert main(["list", what]) == 0
    assert expected in capsys.readouterr().out


def test_compare_grid_then_rerun_skips_and_report(tmp_path, capsys, data_root):
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(RECIPE)
    args = ["compare", str(recipe), "--out", str(tmp_path / "runs"), "--seeds", "2", "--losses",
            "ce,el(log_end=1.0)", "--quiet", "--report", str(tmp_path / "report")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "CE" in out and "EL (LE=1)" in out and "report.md" in out
    store = ResultsStore(tmp_path / "runs" / "results.db")
    runs = store.runs(recipe="cli-grid")
    assert len(runs) == 4 and {r["status"] for r in runs} == {"finished"}
    assert len(store.epochs(runs[0]["run_id"])) == 1
    assert main(args) == 0
    assert capsys.readouterr().out.count("skip") == 4
    text = (tmp_path / "report" / "report.md").read_text()
    assert "cli-grid" in text and "EL (LE=1)" in text


def test_bad_overrides_and_loss_specs_fail_in_one_line(tmp_path, capsys):
    recipe = tmp_path / "grid.yaml"
    recipe.write_text(RECIPE)
    cases = [
        (["train", str(recipe), "--optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
        (["train", str(recipe), "stray"], "section.key=value"),
        (["compare", str(recipe), "--losses", "ce,hinge", "--quiet"], "loss must be one of"),
    ]
    for args, message in cases:
        assert main([*args, "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs" / "results.db").exists()  # nothing was claimed
