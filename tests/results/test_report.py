"""Reports: the numbers in report.md are the ones computed independently here; plots exist; odd cases are explained."""

from __future__ import annotations

import math
import statistics

import pytest

from encouraging.results import (
    ResultsStore,
    RunRecord,
    collect,
    comparison_rows,
    group_tables,
    table_rows,
    write_report,
)

T975_DF2 = 4.302652729749464  # two-sided 95% t critical value, 2 degrees of freedom (t table)
MINUS = "\u2212"
LOSSES = [  # (loss, label, loss config)
    ("ce", "CE", {"name": "ce"}),
    ("el", "EL (LE=0.75)", {"name": "el", "log_end": 0.75}),
    ("el", "EL (LE=1)", {"name": "el", "log_end": 1.0}),
]
TEST_NOTE = "MNIST test set, 10,000 images (exact copy)"


def accuracy(li: int, seed: int, epoch: int) -> float:
    """Deterministic synthetic test accuracy with some spread over seeds."""
    return 0.90 + 0.015 * epoch + 0.002 * li + 0.001 * ((seed * 7 + li * 3 + epoch) % 5)


def add_run(store, recipe, model, li, seed, n_epochs=5, *, finish=True, final=True, config_extra=None):
    loss, label, lcfg = LOSSES[li]
    config = {"loss": dict(lcfg), "data": {"test_note": TEST_NOTE}, "epochs": n_epochs, **(config_extra or {})}
    run_id = f"{recipe}-{model}-{label}-{seed}".replace(" ", "_") + (
        f"-{sorted(config_extra.items())}" if config_extra else ""
    )
    rec = RunRecord(
        run_id, recipe, "image", "mnist", model, loss, label, seed, f"{recipe}-{model}-{label}-{config_extra}",
        config, {"torch": "2.99.0", "encouraging": "0.1.0"}, "0123456789abcdef", "test CPU, 2 threads",
        f"/runs/{run_id}",
    )  # fmt: skip
    assert store.claim(rec)
    accs = []
    for e in range(n_epochs):
        acc = accuracy(li, seed, e)
        accs.append(acc)
        store.log_epoch(run_id, e, {"test_acc": acc, "p_target": 0.5 + 0.08 * e + 0.01 * li, "train_loss": 1 / (1 + e)})
    if finish:
        best = max(accs)
        metrics = {"best_test_acc": best, "best_epoch": accs.index(best), "final_test_acc": accs[-1]} if final else {}
        store.finish(run_id, metrics)
    return accs


@pytest.fixture
def grid(tmp_path):
    """3 losses x 3 seeds x 5 epochs, and the per-seed best / final accuracies by loss label."""
    store = ResultsStore(tmp_path / "results.db")
    best, final = {}, {}
    for li, (_, label, _) in enumerate(LOSSES):
        for seed in range(3):
            accs = add_run(store, "quick", "small_cnn", li, seed)
            best.setdefault(label, {})[seed] = max(accs)
            final.setdefault(label, {})[seed] = accs[-1]
    return store, best, final


def pm(values) -> str:
    """mean ± sample std in %, computed with the standard library."""
    values = list(values)
    return f"{statistics.mean(values) * 100:.2f} ± {statistics.stdev(values) * 100:.2f}"


def signed(x: float) -> str:
    s = f"{x:+.2f}"
    return MINUS + s[1:] if s.startswith("-") else s


def paired_text(a: dict, b: dict) -> str:
    d = [b[s] - a[s] for s in sorted(a)]
    m, sd = statistics.mean(d), statistics.stdev(d)
    half = T975_DF2 * sd / math.sqrt(len(d))
    t = m / (sd / math.sqrt(len(d)))
    p = 1 - abs(t) / math.sqrt(t * t + 2)  # two-sided p of Student's t with 2 degrees of freedom, closed form
    p_text = f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.2g}"
    return f"{signed(m * 100)} [{signed((m - half) * 100)}, {signed((m + half) * 100)}], {p_text}, n = {len(d)}"


def test_report_numbers_match_independent_computation(grid, tmp_path):
    store, best, final = grid
    out = tmp_path / "report"
    md_path = write_report(store, out, html=True)
    assert md_path == out / "report.md"
    md = md_path.read_text()

    for label in best:
        row = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        assert pm(best[label].values()) in row, (label, row)
        assert pm(final[label].values()) in row, (label, row)
        assert "| 3 |" in row
    for label in ("EL (LE=0.75)", "EL (LE=1)"):
        assert f"best on test (paper's protocol): {label} {MINUS} CE: {paired_text(best['CE'], best[label])}" in md
        assert f"final: {label} {MINUS} CE: {paired_text(final['CE'], final[label])}" in md
    assert "CI excludes 0" in md or "CI includes 0" in md

    # header, test-set note, paper column (labelled as the paper's own recipe and model)
    assert str(store.path) in md and "runs: 9 (9 finished, 0 running, 0 failed)" in md
    assert "test CPU, 2 threads" in md and "torch 2.99.0" in md and "encouraging 0.1.0" in md
    assert f"Test set: {TEST_NOTE}" in md
    assert "paper (their recipe)" in md
    assert "99.42 ± 0.06 [1] (other model)" in md and "MNISTNet" in md and "a different model from ours" in md
    assert "99.50 [2]" in md and "99.56 ± 0.05 [3]" in md
    assert "loss:el|log_end:0.75|seeds:0,1,2|epochs:5|select:last" in md  # signature
    assert "top-1 accuracy (%), final" in md and "top-1 accuracy (%), best on test (paper's protocol)" in md
    assert "selected" not in md.split("How to read")[0]  # no validation split: no selected column

    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["quick-mnist-small-cnn_p_target.png", "quick-mnist-small-cnn_test_acc.png"]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"]({p.name})" in md
    html = (out / "report.html").read_text()
    assert (
        html.startswith("<!DOCTYPE html>") and "<table>" in html and 'src="quick-mnist-small-cnn_test_acc.png"' in html
    )
    assert pm(best["CE"].values()) in html


def test_table_and_comparison_rows_for_the_cli(grid):
    store, best, final = grid
    rows = table_rows(store)
    assert [r["loss_label"] for r in rows] == ["CE", "EL (LE=0.75)", "EL (LE=1)"]
    for r in rows:
        assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
        assert r["best_mean"] == pytest.approx(statistics.mean(best[r["loss_label"]].values()) * 100)
        assert r["final_std"] == pytest.approx(statistics.stdev(final[r["loss_label"]].values()) * 100)
        assert r["best"] == pm(best[r["loss_label"]].values())
        assert r["test_note"] == TEST_NOTE and r["paper"]
    assert rows[0]["vs_ce_best"] is None and rows[1]["vs_ce_best"] == paired_text(best["CE"], best["EL (LE=0.75)"])
    comps = comparison_rows(store)
    assert len(comps) == 4 and {c["metric"] for c in comps} == {"best", "final"}
    c = next(c for c in comps if c["b"] == "EL (LE=1)" and c["metric"] == "final")
    d = [final["EL (LE=1)"][s] - final["CE"][s] for s in range(3)]
    assert c["diff"] == pytest.approx(statistics.mean(d) * 100) and c["method"] == "paired" and c["n"] == 3
    assert c["excludes_zero"] == (c["ci_low"] > 0 or c["ci_high"] < 0)


def test_group_without_ce_and_with_single_seeds_is_explained(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    for seed in range(2):  # EL only: nothing to compare with
        add_run(store, "no-ce", "small_cnn", 1, seed)
    add_run(store, "one-seed", "small_cnn", 0, 0)  # one seed per loss: no std, no interval, no test
    add_run(store, "one-seed", "small_cnn", 1, 0)
    add_run(store, "one-seed", "small_cnn", 2, 0, finish=False)  # still running: listed, left out
    md = write_report(store, tmp_path / "out").read_text()

    no_ce = md[md.index("## no-ce / mnist / small_cnn") : md.index("## one-seed")]
    assert "No CE run in this group" in no_ce
    one = md[md.index("## one-seed / mnist / small_cnn") :]
    ce_acc = accuracy(0, 0, 4) * 100
    assert f"| CE | – | 1 | {ce_acc:.2f} (n = 1, no std) |" in one
    assert "Single seed (CE, EL (LE=0.75))" in one
    diff = (accuracy(1, 0, 4) - accuracy(0, 0, 4)) * 100
    best = "best on test (paper's protocol)"
    assert f"{best}: EL (LE=0.75) {MINUS} CE: {signed(diff)}, n = 1 (1 pair: no interval or test)." in one
    assert "not finished (1)" in one and "EL (LE=1), seed 0): running" in one
    assert (tmp_path / "out" / "one-seed-mnist-small-cnn_test_acc.png").stat().st_size > 0


def test_unmatched_seeds_use_welch_and_say_so(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    for seed in (0, 1):
        add_run(store, "q", "m", 0, seed)
    for seed in (2, 3, 4):
        add_run(store, "q", "m", 1, seed)
    md = write_report(store, tmp_path / "out").read_text()
    assert "n = 2 + 3 (Welch t-test; seeds do not match: unpaired Welch test)" in md


def test_best_and_final_fall_back_to_the_epoch_log(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    accs = add_run(store, "q", "m", 0, 0, final=False)  # finished without final metrics
    (row,) = table_rows(store)
    assert row["best_mean"] == pytest.approx(max(accs) * 100) and row["final_mean"] == pytest.approx(accs[-1] * 100)
    assert row["best_epoch_mean"] == accs.index(max(accs))


def test_same_label_and_seed_from_two_configs_are_not_mixed(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    add_run(store, "q", "m", 1, 0, config_extra={"lr": 0.1})
    add_run(store, "q", "m", 1, 0, config_extra={"lr": 0.2})
    groups = collect(store)
    assert [len(r.runs) for r in groups[0].rows] == [1, 1]
    assert all("[cfg " in r.loss_label for r in groups[0].rows)
    assert "different configs" in groups[0].notes[0]


def test_empty_and_missing_databases(tmp_path):
    md = write_report(ResultsStore(tmp_path / "empty.db"), tmp_path / "out").read_text()
    assert "runs: 0" in md and "No runs in this database." in md
    missing = tmp_path / "missing.db"
    with pytest.raises(FileNotFoundError, match="no results database"):
        write_report(missing, tmp_path / "out2")
    assert not missing.exists()
    assert table_rows(tmp_path / "empty.db") == []


# the engine's run config: every LossConfig field recorded (unused ones at their defaults), the test note in "notes"
ENGINE_LOSS_DEFAULTS = {
    "log_end": 0.75, "bonus_scale": 1.0, "bonus": "log", "gamma": 2.0, "bonus_start": 0.0, "label_smoothing": 0.0,
    "epsilon": 1.0, "focal_gamma": 2.0, "halt": 0.5, "schedule": "constant", "schedule_length": 0.0, "defer": 0.0,
    "schedule_target": "bonus_scale",
}  # fmt: skip


def add_engine_run(store, loss, label, seed, acc, train=None, **loss_fields):
    config = {
        "name": "paper-mnist-mnistnet",
        **({"train": train} if train else {}),
        "data": {"dataset": "mnist", "batch_size": 256},
        "model": {"name": "mnistnet", "kwargs": {}},
        "loss": {"name": loss, **ENGINE_LOSS_DEFAULTS, **loss_fields},
        "notes": {"test_note": "MNIST test set (10,000 images, exact)", "num_classes": 10},
    }
    chash = f"{loss}-{sorted(loss_fields.items())}"
    rec = RunRecord(f"{chash}-s{seed}", "paper-mnist-mnistnet", "image", "mnist", "mnistnet", loss, label, seed,
                    chash, config, {"torch": "2.99.0"}, None, "cpu", "/runs/x")  # fmt: skip
    assert store.claim(rec)
    store.log_epoch(rec.run_id, 0, {"test_acc": acc})
    store.finish(rec.run_id, {"best_test_acc": acc, "final_test_acc": acc, "best_epoch": 0})


def test_adversarially_trained_runs_get_no_paper_number(tmp_path):
    """The paper's numbers are for standard training: a run on attacked batches is not set beside them."""
    store = ResultsStore(tmp_path / "results.db")
    adversarial = {"adversarial": {"attack": "fgsm", "eps": 0.3}}
    for seed in range(2):
        add_engine_run(store, "ce", "CE", seed, 0.97, train=adversarial)
        add_engine_run(store, "el", "EL (LE=1)", seed, 0.97, train={"adversarial": {"attack": "none"}}, log_end=1.0)
    (table,) = group_tables(store)
    rows = {r["loss_label"]: r for r in table_rows(store)}
    assert rows["CE"]["paper"] is None and rows["EL (LE=1)"]["paper"] == "99.56 ± 0.05"


def test_engine_shaped_runs_from_before_the_loss_registry_are_upgraded_once(tmp_path):
    from encouraging.experiment.upgrade import upgrade

    store = ResultsStore(tmp_path / "results.db")
    for seed in range(2):
        add_engine_run(store, "ce", "CE", seed, 0.990 + 0.001 * seed)
        add_engine_run(store, "ce_ls", "CE+LS (0.1)", seed, 0.991 + 0.002 * seed, label_smoothing=0.1)
        add_engine_run(store, "el", "EL (LE=1)", seed, 0.993 + 0.001 * seed, log_end=1.0)
        add_engine_run(store, "el_ls", "EL (LE=1, LS=0.1)", seed, 0.994, log_end=1.0, label_smoothing=0.1)
    assert "epsilon" in table_rows(store)[0]["params"]  # every LossConfig field, as such runs recorded them
    assert upgrade(store) == 8 and upgrade(store) == 0  # re-recorded from the stored configs, once
    rows = {r["loss_label"]: r for r in table_rows(store)}
    assert rows["CE"]["params"] == "" and rows["EL (LE=1)"]["params"] == "log_end=1"
    assert rows["EL (LE=1, LS=0.1)"]["params"] == "label_smoothing=0.1, log_end=1"
    assert rows["CE"]["test_note"] == "MNIST test set (10,000 images, exact)"
    # the paper's MNISTNet numbers, label smoothing included (§5.1, §5.10)
    assert rows["CE"]["paper"] == "99.42 ± 0.06" and rows["CE+LS (0.1)"]["paper"] == "99.54 ± 0.04"
    assert rows["EL (LE=1)"]["paper"] == "99.56 ± 0.05" and rows["EL (LE=1, LS=0.1)"]["paper"] == "99.63 ± 0.04"
    # label-smoothed EL is compared with label-smoothed CE; CE+LS with plain CE
    pairs = {(c["b"], c["a"]) for c in comparison_rows(store)}
    assert pairs == {("CE+LS (0.1)", "CE"), ("EL (LE=1)", "CE"), ("EL (LE=1, LS=0.1)", "CE+LS (0.1)")}
    sig = next(r["signature"] for r in table_rows(store) if r["loss_label"] == "EL (LE=1)")
    assert "log_end:1|" in sig and "bonus_scale" not in sig and "focal_gamma" not in sig and "epsilon" not in sig

    (table,) = group_tables(store)
    assert table["title"] == "paper-mnist-mnistnet / mnist / mnistnet" and table["recipe"] == "paper-mnist-mnistnet"
    assert [r["loss"] for r in table["rows"]] == ["CE", "CE+LS (0.1)", "EL (LE=1)", "EL (LE=1, LS=0.1)"]
    assert all(set(r) == set(table["columns"]) for r in table["rows"])
    assert table["rows"][2]["best on test*"] == pm([0.993, 0.994])
    assert "MNIST test set" in table["caption"] and len(table["comparisons"]) == 6


def add_task_run(store, label, seed, per_epoch, *, selection):
    """A run of a task that declares BLEU (higher is better, no scale) with one extra column."""
    metrics = {"primary": "bleu", "label": "BLEU", "higher_is_better": True, "scale": 1.0, "extra": ["chrf"],
               "paper": "bleu"}
    rec = RunRecord(f"{label}-{seed}", "mt", "translation", "multi30k", "transformer", label.lower(), label, seed,
                    f"h-{label}", {"metrics": metrics}, {}, None, "cpu", "/runs/x", loss_params={})
    assert store.claim(rec)
    for e, (val, test) in enumerate(per_epoch):
        store.log_epoch(rec.run_id, e, {"val_bleu": val, "test_bleu": test, "test_chrf": 50 + e})
    chosen = max(range(len(per_epoch)), key=lambda e: (per_epoch[e][0], -e))
    final = {"selected_test_bleu": per_epoch[chosen][1], "selected_epoch": chosen, "selection": selection,
             "final_test_bleu": per_epoch[-1][1], "best_test_bleu": max(t for _, t in per_epoch),
             "best_epoch": max(range(len(per_epoch)), key=lambda e: per_epoch[e][1])}
    store.finish(rec.run_id, final)


def test_a_task_declared_metric_drives_the_table_and_comparisons(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    for seed in range(3):
        add_task_run(store, "CE", seed, [(20, 21), (25, 24 + seed), (24, 26)], selection="val")
        add_task_run(store, "EL", seed, [(21, 22), (26, 25 + seed), (25, 27 + seed)], selection="val")
    (g,) = collect(store)
    assert g.metric.primary == "bleu" and g.columns == ["selected", "final", "best"]
    rows = {r["loss_label"]: r for r in table_rows(store)}
    assert rows["CE"]["selected_mean"] == pytest.approx(25.0) and rows["EL"]["final_mean"] == pytest.approx(28.0)
    assert rows["EL"]["chrf"] == "51.00 ± 0.00"  # the extra column, at the selected epoch (1)
    assert rows["EL"]["vs_ce_selected"].startswith("+1.00")  # the same +1 on every seed
    (table,) = group_tables(store)
    assert table["columns"][2:5] == ["selected", "final", "best on test*"]
    assert "vs CE (selected)" in table["columns"] and "paper (their recipe)" not in table["columns"]  # none
    assert table["rows"][1]["vs CE (selected)"] == "+1.00"  # the same +1 on every seed: no interval
    md = write_report(store, tmp_path / "out").read_text()
    assert "BLEU, selected" in md and "| selected epoch (mean) |" in md and "mt-multitask" not in md
    assert (tmp_path / "out" / "mt-multi30k-transformer_test_bleu.png").is_file()
