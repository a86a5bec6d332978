"""A user's mistake costs nothing: each one ends in one line on stderr naming the problem, exit status 2, before
anything is trained or claimed; failures after a claim mark the run failed; a diverging run is stored and reported
as diverged."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from encouraging.cli import main
from encouraging.results import ResultsStore, table_rows, write_report

RECIPE = """name: errs
data: {dataset: DATA, batch_size: 32}
model: {name: mlp, kwargs: {hidden: [16]}}
optim: {name: sgd, lr: 0.05, schedule: constant}
train: {epochs: 1, threads: 1}
"""


@pytest.fixture
def folder(tmp_path):
    """A tiny array-folder dataset (float features, 3 classes) and a recipe using it; no shared data needed."""
    rng = np.random.default_rng(0)
    data = tmp_path / "feats"
    data.mkdir()
    y = np.repeat([0, 1, 2], 40)
    np.save(data / "x_train.npy", (rng.normal(size=(120, 5)) + y[:, None]).astype(np.float32))
    np.save(data / "y_train.npy", y)
    np.save(data / "x_test.npy", rng.normal(size=(30, 5)).astype(np.float32))
    np.save(data / "y_test.npy", np.repeat([0, 1, 2], 10))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("DATA", str(data)))
    return tmp_path, recipe


def one_line_error(capsys, args: list[str], *needles: str) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("encouraging"), err
    for needle in needles:
        assert needle in err, err
    return err


def test_config_and_file_mistakes(folder, capsys):
    tmp, recipe = folder
    out = ["--out", str(tmp / "runs")]
    one_line_error(capsys, ["train", str(tmp / "missing.yaml"), *out], "config file not found", "missing.yaml")
    one_line_error(capsys, ["train", str(recipe), "--optim.lr=0", *out], "optim.lr must be > 0, got 0")
    one_line_error(capsys, ["train", str(recipe), "--train.epochs=0", *out], "train.epochs must be >= 1")
    one_line_error(capsys, ["train", str(recipe), "--train.epochs=-1", *out], "train.epochs must be >= 1")
    one_line_error(capsys, ["train", str(recipe), "--opitm.lr=1", *out], "unknown config section 'opitm'")
    one_line_error(capsys, ["train", str(recipe), "--data.batch_size=0", "--optim.lr=-1", *out],
                   "2 problems", "data.batch_size must be >= 1", "optim.lr must be > 0")
    one_line_error(capsys, ["train", str(recipe), "--data.dataset=/nowhere/at/all", *out], "/nowhere/at/all")
    assert not (tmp / "runs" / "results.db").exists() or not ResultsStore(tmp / "runs" / "results.db").runs()


def test_a_bad_loss_anywhere_in_a_grid_fails_before_the_first_run(folder, capsys):
    tmp, recipe = folder
    for losses, needle in (("ce,elx", "loss must be one of"), ("ce,el(log_end=1.5)", "log_end must be in"),
                           ("ce,el(log_end=)", "el(log_end=)")):
        one_line_error(capsys, ["compare", str(recipe), "--losses", losses, "--out", str(tmp / "runs"), "--quiet"],
                       needle)
    db = tmp / "runs" / "results.db"
    assert not db.exists() or ResultsStore(db).runs() == []  # nothing claimed, nothing trained


def test_labels_that_are_not_class_indices_are_refused(folder, capsys):
    tmp, recipe = folder
    data = tmp / "feats"
    y = np.load(data / "y_train.npy")
    y[0] = 1_000_000
    np.save(data / "y_train.npy", y)
    one_line_error(capsys, ["train", str(recipe), "--out", str(tmp / "runs")], "y_train has labels up to 1000000")
    y[0] = 0
    np.save(data / "y_train.npy", y)
    np.save(data / "y_test.npy", np.repeat([0, 1, 7], 10))
    one_line_error(capsys, ["train", str(recipe), "--out", str(tmp / "runs")], "never has: [7]")


@pytest.mark.parametrize("args, needle", [
    (["eval", "attack", "RUNS", "--attacks", "fgsm"], "--attacks"),
    (["report", "RUNS", "--out", "OUT", "--htm"], "--htm"),
    (["list", "losses", "--all"], "--all"),
    (["analyze", "RUNS", "--out", "OUT", "--kind", "margins"], "--kind"),
    (["eval", "ood", "RUNS", "--ood", "x", "--section.key=1"], "--section.key=1"),
])
def test_unknown_flags_are_refused_by_every_subcommand(tmp_path, capsys, args, needle):
    args = [a.replace("RUNS", str(tmp_path / "r.db")).replace("OUT", str(tmp_path / "o")) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


def test_corrupt_and_foreign_databases_are_named(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    one_line_error(capsys, ["report", str(corrupt), "--out", str(tmp_path / "o")], str(corrupt))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE people (name TEXT)")
    one_line_error(capsys, ["report", str(foreign), "--out", str(tmp_path / "o")], str(foreign),
                   "not an encouraging results database")
    with sqlite3.connect(foreign) as c:  # untouched
        assert [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["people"]
    one_line_error(capsys, ["report", str(tmp_path / "none.db"), "--out", str(tmp_path / "o")], "none.db")


def test_debug_shows_the_traceback(folder):
    tmp, recipe = folder
    with pytest.raises(ValueError, match="optim.lr"):
        main(["--debug", "train", str(recipe), "--optim.lr=0", "--out", str(tmp / "runs")])


def test_a_failure_after_the_claim_marks_the_run_failed_and_a_later_grid_retries_it(folder, capsys, monkeypatch):
    tmp, recipe = folder
    import encouraging.engine.trainer as trainer_module

    def broken(self):
        raise RuntimeError("disk on fire")

    args = ["compare", str(recipe), "--losses", "ce", "--seeds", "1", "--out", str(tmp / "runs"), "--quiet"]
    with monkeypatch.context() as m:
        m.setattr(trainer_module.Trainer, "fit", broken)
        with pytest.raises(RuntimeError, match="disk on fire"):  # a bug, not a user error: its traceback stays
            main(args)
    store = ResultsStore(tmp / "runs" / "results.db")
    (run,) = store.runs()
    assert run["status"] == "failed" and "disk on fire" in run["error"]
    report = write_report(store, tmp / "report").read_text()
    assert "failed: RuntimeError: disk on fire" in report
    assert main(args) == 0
    assert [r["status"] for r in store.runs()] == ["finished"]


def test_a_diverging_run_is_stored_reported_and_left_out_of_the_means(folder, capsys):
    tmp, recipe = folder
    out = ["--out", str(tmp / "runs"), "--quiet"]
    assert main(["compare", str(recipe), "--losses", "ce", "--seeds", "2", *out]) == 0
    # an absurd learning rate: the weights overflow in the first steps and the loss becomes NaN
    assert main(["compare", str(recipe), "--losses", "el", "--seeds", "2", "--train.epochs=3", "--optim.lr=1e30",
                 *out]) == 0
    store = ResultsStore(tmp / "runs" / "results.db")
    el = [r for r in store.runs() if r["loss"] == "el"]
    assert len(el) == 2 and all(r["status"] == "finished" for r in el)
    for r in el:
        final = store.final(r["run_id"])
        assert final["diverged_epoch"] == 0 and final["epochs_trained"] == 1  # stopped where it diverged
    rows = {r["loss_label"]: r for r in table_rows(store)}
    assert rows["EL (LE=0.75)"]["n"] == 2 and rows["EL (LE=0.75)"]["diverged"] == 2
    assert rows["EL (LE=0.75)"]["final_mean"] is None and rows["CE"]["final_mean"] is not None
    md = write_report(store, tmp / "report").read_text()
    assert "**Diverged**" in md and "EL (LE=0.75) seed 0 (epoch 0)" in md and "| 2 (2 diverged) |" in md
    assert "2 diverged run(s) left out" in md  # the curves' captions say why those runs are missing


def test_data_root_beats_the_environment_and_offline_never_downloads(folder, capsys, monkeypatch):
    tmp, recipe = folder
    monkeypatch.setenv("ENCOURAGING_DATA", str(tmp))  # holds nothing named mnist either
    empty = tmp / "empty"
    err = one_line_error(capsys, ["train", str(recipe), "--data.dataset=mnist", "--offline", "--data-root",
                                  str(empty), "--out", str(tmp / "runs")], "MNIST not found", f"{empty}/mnist/")
    assert f"{tmp}/mnist/" not in err  # the environment's root is not searched when --data-root is given
    assert "--offline" in err and "--data-root" in err  # the commands that fix it


def test_a_grid_outside_a_terminal_says_where_it_is_at_once(folder, capsys):
    tmp, recipe = folder
    assert main(["compare", str(recipe), "--losses", "ce", "--seeds", "2", "--out", str(tmp / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "run 1/2: errs / CE / seed 0"  # the first line, before any data is loaded
    assert lines[1].startswith("  loading image data") and lines[2].startswith("  ready in")
    assert any(line.startswith("run 1/2: CE seed 0  epoch 0 of 0-0  loss ") for line in lines)  # one per epoch
    assert any(line.startswith("run 2/2 (about ") and "left in the grid): errs / CE / seed 1" in line
               for line in lines)
