"""Result records: export and read back without loss, bad files named; generated docs tables and their check."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from encouraging.cli import main
from encouraging.results import (
    Measure,
    Measures,
    ResultsStore,
    export_records,
    read_record,
    records_store,
    register_measures,
    write_report,
)
from encouraging.results import measures as measures_module
from encouraging.results.docs import update_docs

from .test_report import add_run, paired_text, pm

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path):
    """3 losses x 3 seeds of synthetic runs, one unfinished run, and evaluation rows with a NaN."""
    store = ResultsStore(tmp_path / "results.db")
    best = {}
    for li, label in enumerate(("CE", "EL (LE=0.75)", "EL (LE=1)")):
        for seed in range(3):
            best.setdefault(label, {})[seed] = max(add_run(store, "quick", "small_cnn", li, seed))
    add_run(store, "quick", "small_cnn", 0, 7, finish=False)
    run_id = store.runs(seed=0, loss_label="CE")[0]["run_id"]
    store.add_rows(run_id, "custom", [{"method": "msp", "auroc": 0.97}, {"method": "energy", "auroc": math.nan}])
    return store, best


def test_export_reads_back_as_the_same_database(db, tmp_path):
    store, _ = db
    paths = export_records(store, tmp_path / "records")
    finished = store.runs(status="finished")
    assert sorted(p.stem for p in paths) == sorted(r["run_id"] for r in finished)  # the unfinished run is left out
    back = records_store([tmp_path / "records"], tmp_path / "back.db")
    assert [r["run_id"] for r in back.runs()] == [r["run_id"] for r in finished]
    for run in finished:
        rid = run["run_id"]
        mine, theirs = back.run(rid), store.run(rid)
        for key in ("recipe", "loss_label", "seed", "config_hash", "config", "versions", "git_commit", "hardware"):
            assert mine[key] == theirs[key]
        assert back.epochs(rid) == store.epochs(rid)  # floats exactly: JSON keeps the shortest round-trip repr
        assert back.final(rid) == store.final(rid)
    rows = back.rows("custom")
    assert rows[0]["auroc"] == 0.97 and math.isnan(rows[1]["auroc"])
    # a record is text a reader can open: the run, its curves and final metrics by name
    record = json.loads(paths[0].read_text())
    assert set(record) == {"record_version", "run", "epochs", "final", "rows"}
    assert "host" not in record["run"] and "run_dir" not in record["run"]
    assert oct(paths[0].stat().st_mode & 0o777) == "0o644"


def test_report_of_records_has_the_database_numbers(db, tmp_path):
    store, best = db
    export_records(store, tmp_path / "records")
    md = write_report(tmp_path / "records", tmp_path / "report").read_text()
    assert "results: " in md and "(9 records)" in md
    for label in best:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        assert pm(best[label].values()) in row
    assert paired_text(best["CE"], best["EL (LE=1)"]) in md


@pytest.mark.parametrize("content, message", [
    ("{", "invalid JSON"),
    ('{"run": {}}', "no record_version"),
    ('{"record_version": 99, "run": {}}', "newer than this package"),
    ('{"record_version": 1, "run": {"run_id": "x"}, "epochs": {}, "final": {}, "rows": {}}', "missing run.recipe"),
])
def test_bad_records_are_named(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_record(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="no result records"):
        records_store([tmp_path / "missing"])


def _doc(tmp_path, spec: str) -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Results\n\ntext before\n\n<!-- results: {spec} -->\nstale table\n<!-- /results -->\n\nafter\n")
    return doc


def test_docs_block_is_generated_and_checked(db, tmp_path):
    store, best = db
    export_records(store, tmp_path / "records")
    doc = _doc(tmp_path, "records recipe=quick")
    assert update_docs([doc], tmp_path, check=True) == [f"{doc}: results block 'records recipe=quick'"]
    assert "stale table" in doc.read_text()  # check writes nothing
    assert len(update_docs([doc], tmp_path)) == 1
    text = doc.read_text()
    assert text.startswith("# Results\n\ntext before\n\n<!-- results:")
    assert text.endswith("<!-- /results -->\n\nafter\n")
    for label in best:
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert pm(best[label].values()) in row and "| 3 |" in row
    assert "| EL (LE=1) \u2212 CE | " in text and paired_text(best["CE"], best["EL (LE=1)"]) in text
    assert "*9 runs from `records`; seeds 0-2; epochs 5;" in text and "machine: test CPU, 2 threads" in text
    assert update_docs([doc], tmp_path, check=True) == []  # now current


def test_docs_block_pairs_and_errors(db, tmp_path):
    store, best = db
    export_records(store, tmp_path / "records")
    doc = _doc(tmp_path, "records pairs=EL (LE=0.75) :: EL (LE=1)")
    update_docs([doc], tmp_path)
    text = doc.read_text()
    assert paired_text(best["EL (LE=0.75)"], best["EL (LE=1)"]) in text and "\u2212 CE |" not in text
    for spec, message in (("records pairs=CE :: Focal", "no loss labelled 'Focal'"),
                          ("records colour=red", "is not key=value with a key of"),
                          ("records recipe=other", "no finished runs in records match")):
        with pytest.raises(ValueError, match=message):
            update_docs([_doc(tmp_path, spec)], tmp_path)


def test_cli_export_report_and_docs_check(db, tmp_path, monkeypatch, capsys):
    store, _ = db
    assert main(["export", str(store.path), "--out", str(tmp_path / "records")]) == 0
    assert "exported 9 finished run(s)" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "records"), "--out", str(tmp_path / "report")]) == 0
    doc = _doc(tmp_path, "records")
    monkeypatch.chdir(tmp_path)
    assert main(["docs", "doc.md", "--check"]) == 1
    assert "stale: doc.md" in capsys.readouterr().out
    assert main(["docs", "doc.md"]) == 0 and main(["docs", "doc.md", "--check"]) == 0
    assert main(["export", str(tmp_path / "nothing.db"), "--out", str(tmp_path / "x")]) == 2
    assert "no results database" in capsys.readouterr().err
    assert doc.exists()


def test_the_docs_tables_are_the_committed_records():
    """Every generated table in README.md and docs/*.md equals what its records give (`make results` fixes it)."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert update_docs(files, REPO, check=True) == []


def test_docs_rows_block_pivots_evaluation_rows(db, tmp_path):
    """rows=attack value=robust_acc by=attack,eps: per (attack, eps) each loss's mean ± std over seeds and the
    paired difference from CE, from the runs' stored evaluation rows."""
    store, _ = db
    acc = {}
    for run in store.runs(status="finished"):
        for eps in (0.1, 0.2):
            bonus = {"CE": 0.0, "EL (LE=0.75)": 0.05, "EL (LE=1)": 0.01 * (run["seed"] + 1) ** 2}[run["loss_label"]]
            value = 0.5 + 0.1 * eps * run["seed"] + bonus - eps
            acc.setdefault((eps, run["loss_label"]), {})[run["seed"]] = value
            store.add_rows(run["run_id"], "attack", [{"attack": "pgd", "eps": eps, "robust_acc": value, "n": 100}])
    export_records(store, tmp_path / "records")
    doc = _doc(tmp_path, "records rows=attack value=robust_acc by=attack,eps")
    update_docs([doc], tmp_path)
    text = doc.read_text()
    header = ("| attack | eps | CE (n) | EL (LE=0.75) (n) | EL (LE=1) (n) | EL (LE=0.75) \u2212 CE "
              "| EL (LE=1) \u2212 CE |")
    assert header in text
    line = next(line for line in text.splitlines() if line.startswith("| pgd | 0.2 |"))
    assert f"{pm(acc[(0.2, 'CE')].values())} (3)" in line
    assert paired_text(acc[(0.2, "CE")], acc[(0.2, "EL (LE=1)")]) in line
    assert "attack rows on 100 test examples" in text
    for spec, message in (("records rows=attack value=robust_acc", "needs value=FIELD and by="),
                          ("records rows=attack value=auroc by=eps", "have no field 'auroc'"),
                          ("records rows=ood value=auroc by=eps", "no rows of kind 'ood'")):
        with pytest.raises(ValueError, match=message):
            update_docs([_doc(tmp_path, spec)], tmp_path)


def test_docs_block_pairs_across_recipes(tmp_path):
    """LABEL@RECIPE pairs difference runs of two recipes over their shared seeds (a learning-rate variant)."""
    store = ResultsStore(tmp_path / "results.db")
    base = {s: max(add_run(store, "quick", "small_cnn", 0, s)) for s in range(3)}
    add_run(store, "quick", "small_cnn", 2, 0)  # not in a pair: not shown
    other = {s: max(add_run(store, "quick-lr2x", "small_cnn", 1, s)) for s in range(3)}
    export_records(store, tmp_path / "records")
    doc = _doc(tmp_path, "records pairs=CE@quick :: EL (LE=0.75)@quick-lr2x")
    update_docs([doc], tmp_path)
    text = doc.read_text()
    assert "**quick / mnist / small_cnn**" in text and "**quick-lr2x / mnist / small_cnn**" in text
    assert "| EL (LE=0.75)@quick-lr2x \u2212 CE@quick | " in text and paired_text(base, other) in text
    assert "| EL (LE=1) |" not in text


def test_docs_measures_block_prints_numbers_derived_from_rows(db, tmp_path, monkeypatch):
    """measures=NAME: a registered Measures turns each run's rows into named numbers; the block prints their
    mean ± std per loss, the paired differences from CE and the ratio of the means, computed here independently."""
    store, _ = db
    value = {}
    for run in store.runs(status="finished"):
        bonus = {"CE": 0.0, "EL (LE=0.75)": 0.05, "EL (LE=1)": 0.01 * (run["seed"] + 1) ** 2}[run["loss_label"]]
        value.setdefault(run["loss_label"], {})[run["seed"]] = -(0.5 + 0.1 * run["seed"] + bonus)
        # two rows per run: the measure is their mean
        store.add_rows(run["run_id"], "probe_rows", [{"score": 2 * value[run["loss_label"]][run["seed"]]},
                                                     {"score": 0.0}])

    def compute(rows):
        scores = [r["score"] for r in rows["probe_rows"]]
        return {"score": sum(scores) / len(scores)}

    monkeypatch.setattr(measures_module, "_MEASURES", {})
    register_measures("toy", Measures(("probe_rows",), compute, (Measure("score", "score |s| (%)", 100.0),),
                                      ratios=("score",)))
    register_measures("absent", Measures(("no_such_kind",), compute, (Measure("score", "score"),)))
    export_records(store, tmp_path / "records")
    doc = _doc(tmp_path, "records measures=toy")
    update_docs([doc], tmp_path)
    text = doc.read_text()
    assert "| metric | CE (n = 3) | EL (LE=0.75) (n = 3) | EL (LE=1) (n = 3) |" in text
    line = next(line for line in text.splitlines() if line.startswith("| score \\|s\\| (%) | "))
    assert pm(value["CE"].values()) in line and pm(value["EL (LE=1)"].values()) in line
    diff = next(line for line in text.splitlines() if line.startswith("| score \\|s\\| (%) | ") and "[" in line)
    assert paired_text(value["CE"], value["EL (LE=1)"]).split(",")[0] in diff
    ratios = [statistics.mean(value[label].values()) / statistics.mean(value["CE"].values())
              for label in ("EL (LE=0.75)", "EL (LE=1)")]
    assert f"| score \\|s\\| (%): ratio of the means | {ratios[0]:.2f}x | {ratios[1]:.2f}x |" in text
    assert "9 runs from `records`" in text
    for spec, message in (("records measures=nothing", "measures must be one of"),
                          ("records measures=toy rows=attack value=x by=y", "rows= or measures=, not both"),
                          ("records measures=absent", "has rows of no_such_kind")):
        with pytest.raises(ValueError, match=message):
            update_docs([_doc(tmp_path, spec)], tmp_path)
