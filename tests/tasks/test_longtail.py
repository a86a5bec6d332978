"""The long-tailed task: exact profile counts, a fixed subset, shot groups, and an end-to-end run with its columns."""

from __future__ import annotations

import pytest
import torch

from encouraging.data.longtail import long_tail_counts, long_tail_indices
from encouraging.engine.config import Config, apply_overrides
from encouraging.experiment import grid
from encouraging.results import ResultsStore, group_tables, table_rows, write_report
from encouraging.tasks.longtail import shot_groups


@pytest.mark.parametrize("ratio, expected", [
    (100, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]),  # CIFAR-10-LT as in LDAM-DRW's IMBALANCECIFAR10
    (10, [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]),
    (50, [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]),
])
def test_exponential_profile_counts_follow_cao_et_al(ratio, expected):
    assert long_tail_counts(10, 5000, "exp", ratio) == expected


def test_step_profile_and_bad_ratios():
    assert long_tail_counts(4, 100, "step", 10) == [100, 100, 10, 10]
    with pytest.raises(ValueError, match="imbalance ratio must be >= 1"):
        long_tail_counts(10, 5000, "exp", 0.5)
    with pytest.raises(ValueError, match="leaves a class with no examples"):
        long_tail_counts(10, 50, "exp", 100)
    with pytest.raises(ValueError, match="profile must be one of"):
        long_tail_counts(10, 50, "linear", 10)


def test_the_subset_is_fixed_per_seed_and_has_the_profiles_counts():
    labels = torch.arange(5).repeat_interleave(torch.tensor([120, 100, 140, 100, 110]))[torch.randperm(570)]
    keep = long_tail_indices(labels, 5, "exp", 10)
    assert torch.bincount(labels[keep], minlength=5).tolist() == long_tail_counts(5, 100, "exp", 10)
    assert torch.equal(keep, long_tail_indices(labels, 5, "exp", 10))  # every loss and run seed: the same subset
    assert not torch.equal(keep, long_tail_indices(labels, 5, "exp", 10, seed=1))
    with pytest.raises(ValueError, match="classes \\[2\\] have none"):
        long_tail_indices(torch.tensor([0, 1, 0, 1]), 3)


def test_shot_groups_on_a_known_count_vector():
    assert shot_groups((500, 101, 100, 20, 19, 3)) == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}


def test_a_long_tailed_grid_reports_many_medium_few(tmp_path, data_root):
    cfg = apply_overrides(Config(task="longtail"), [
        "--name=lt", "--data.dataset=mnist", "--data.imbalance_ratio=50", "--data.test_subset=1000",
        "--data.many_above=1000", "--data.few_below=300", "--data.batch_size=128", "--model.name=mlp",
        "--model.kwargs={hidden: [32]}", "--optim.name=adam", "--optim.lr=0.003", "--optim.schedule=constant",
        "--train.epochs=1", "--train.threads=1"])
    grid(cfg, ["ce", "ldam_el"], [0], out_dir=tmp_path / "runs", db=tmp_path / "r.db", quiet=True)
    store = ResultsStore(tmp_path / "r.db")
    runs = store.runs()
    assert {r["status"] for r in runs} == {"finished"} and len(runs) == 2
    notes = runs[0]["config"]["notes"]
    assert "exp profile, ratio 50" in notes["long_tail"] and "many" in notes["groups"]
    final = store.final(runs[0]["run_id"])
    for key in ("final_test_many_acc", "final_test_medium_acc", "final_test_few_acc", "final_test_balanced_acc"):
        assert 0.0 <= final[key] <= 1.0, key
    rows = {r["loss_label"]: r for r in table_rows(store)}
    assert set(rows) == {"CE", "LDAM (m=0.5, s=30) + EL (LE=0.75)"} and rows["CE"]["few_acc"] != "n/a"
    assert rows["CE"]["paper"] is None  # MNIST's balanced-data number is not a long-tailed one
    assert notes["train_size"] == sum(long_tail_counts(10, 5421, "exp", 50))  # MNIST's smallest class: 5421
    # every table states the subset and the shot-group thresholds
    thresholds = "(many: > 1000 training examples, few: < 300)"
    assert thresholds in rows["CE"]["table_notes"] and "ratio 50" in rows["CE"]["table_notes"]
    assert thresholds in write_report(store, tmp_path / "report").read_text()
    assert thresholds in group_tables(store)[0]["caption"]


def test_class_balanced_sampling_draws_every_class_equally_and_reproducibly():
    from encouraging.engine.batches import TensorBatches

    y = torch.arange(3).repeat_interleave(torch.tensor([900, 90, 10]))
    x = torch.arange(1000, dtype=torch.float32).unsqueeze(1)
    batches = TensorBatches(x, y, 100, train=True, seed=3, class_balanced=True)
    drawn = torch.cat([yb for _, yb in batches.epoch(0)])
    assert len(drawn) == 1000 and (torch.bincount(drawn, minlength=3).float() / 1000 - 1 / 3).abs().max() < 0.05
    assert torch.equal(drawn, torch.cat([yb for _, yb in batches.epoch(0)]))  # the same epoch: the same draws
    plain = torch.cat([yb for _, yb in TensorBatches(x, y, 100, train=True, seed=3).epoch(0)])
    assert torch.bincount(plain).tolist() == [900, 90, 10]  # without it: one pass over the examples


def test_loader_batches_sample_classes_equally_sharded_and_resumable():
    from torch.utils.data import TensorDataset

    from encouraging.engine.batches import LoaderBatches, TensorBatches
    from encouraging.engine.distributed import World

    y = torch.arange(3).repeat_interleave(torch.tensor([900, 90, 10]))
    data = TensorDataset(torch.arange(1000), y)
    one = LoaderBatches(data, 100, train=True, seed=3, num_workers=0, balance_by=y)
    drawn = torch.cat([yb for _, yb in one.epoch(1)])
    assert len(drawn) == 1000 and (torch.bincount(drawn, minlength=3).float() / 1000 - 1 / 3).abs().max() < 0.05
    assert torch.equal(drawn, torch.cat([yb for _, yb in one.epoch(1)]))  # a resumed epoch draws the same
    assert not torch.equal(drawn, torch.cat([yb for _, yb in one.epoch(2)]))
    # the tensor path draws the very same examples for the same seed and epoch
    tensors = TensorBatches(torch.arange(1000).unsqueeze(1).float(), y, 100, train=True, seed=3, class_balanced=True)
    assert torch.equal(torch.cat([xb.long().flatten() for xb, _ in tensors.epoch(1)]),
                       torch.cat([xb for xb, _ in one.epoch(1)]))
    # two ranks split one draw between them: every other index each, nothing drawn twice by design of the split
    ranks = [LoaderBatches(data, 50, train=True, seed=3, num_workers=0, balance_by=y,
                           world=World(rank=r, size=2)) for r in (0, 1)]
    shards = [torch.cat([xb for xb, _ in r.epoch(1)]) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 500
    assert torch.equal(torch.stack(shards, 1).flatten(), torch.cat([xb for xb, _ in one.epoch(1)]))
    with pytest.raises(ValueError, match="balance_by has 3 labels for 1000 examples"):
        LoaderBatches(data, 100, train=True, num_workers=0, balance_by=y[:3])


def test_posthoc_logit_adjustment_predicts_from_adjusted_logits():
    from encouraging.engine.batches import TensorBatches
    from encouraging.tasks.longtail import LongTailTask

    task = LongTailTask(apply_overrides(Config(task="longtail"), ["--data.posthoc_tau=1.0"]))
    task.groups, task.num_classes = shot_groups((90, 10), 50, 20), 2
    task.posthoc = torch.tensor([0.9, 0.1]).log()
    logits = torch.tensor([[0.0, -1.0], [0.0, -3.0]])  # class 0 wins raw; with the prior removed, class 1 wins row 0
    model = torch.nn.Sequential()  # identity: the "features" are the logits
    batches = TensorBatches(logits, torch.tensor([1, 0]), 2, train=False)
    metrics = task.evaluate(model, batches)
    assert metrics["acc"] == 1.0 and metrics["few_acc"] == 1.0  # row 0 -> 1 (−1 + 2.30 > 0 + 0.105), row 1 -> 0
    task.posthoc = None
    assert task.evaluate(model, batches)["acc"] == 0.5


def test_crt_retrains_only_the_classifier_of_its_stage1_run(tmp_path, longtail_features):
    from encouraging.engine.checkpoint import load_checkpoint
    from encouraging.experiment import run, run_dir_for
    from encouraging.experiment.runner import ConfigError

    stage1 = apply_overrides(Config(task="longtail"), longtail_features)
    db = tmp_path / "r.db"
    run(stage1, out_dir=tmp_path / "runs", db=db, quiet=True)
    first = run_dir_for(stage1, tmp_path / "runs")
    stage2 = apply_overrides(Config(task="longtail"), [*longtail_features, f"--model.stage1={first}",
                                                       "--data.sampling=class_balanced"])
    run(stage2, out_dir=tmp_path / "runs", db=db, quiet=True)
    before = load_checkpoint(first / "checkpoint.pt", map_location="cpu")["model"]
    after = load_checkpoint(run_dir_for(stage2, tmp_path / "runs") / "checkpoint.pt", map_location="cpu")["model"]
    head = [k for k in before if k.startswith(sorted(before)[-1].rsplit(".", 1)[0])]  # the last layer's tensors
    assert head and all(not torch.equal(before[k], after[k]) for k in head)  # re-initialised and trained
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head)  # the backbone, bit-identical
    runs = {r["run_dir"]: r for r in ResultsStore(db).runs()}
    assert len(runs) == 2 and runs[str(run_dir_for(stage2, tmp_path / "runs"))]["config"]["notes"]["stage1"] == \
        str(first)  # the stage-2 run points at its stage-1 run, both in the database
    with pytest.raises(ConfigError, match="no stage-1 run at"):
        run(apply_overrides(stage2, [f"--model.stage1={tmp_path / 'missing'}"]), out_dir=tmp_path / "x", db=None,
            quiet=True)
    with pytest.raises(ConfigError, match="class-balanced sampling"):
        run(apply_overrides(stage2, ["--data.sampling=instance"]), out_dir=tmp_path / "x", db=None, quiet=True)
    with pytest.raises(ConfigError, match=r"has data.imbalance_ratio=5.0, this run 10.0"):
        run(apply_overrides(stage2, ["--data.imbalance_ratio=10"]), out_dir=tmp_path / "x", db=None, quiet=True)


def _recipe(path, overrides):
    """Write the config of ``overrides`` as a recipe file."""
    from encouraging.engine.config import save_config

    save_config(apply_overrides(Config(task="longtail"), overrides), path)
    return path


def test_a_crt_grid_trains_each_losss_stage1_per_seed_first(tmp_path, longtail_features):
    from encouraging.experiment import load_run, run_dir_for, run_id_for

    first = _recipe(tmp_path / "stage1.yaml", longtail_features)
    stage2 = apply_overrides(Config(task="longtail"), [*longtail_features, "--name=crt2", f"--model.stage1={first}",
                                                       "--data.sampling=class_balanced", "--train.epochs=1"])
    db = tmp_path / "r.db"
    done = grid(stage2, ["ce", "el"], [0, 1], out_dir=tmp_path / "runs", db=db, quiet=True)
    assert [(c.name, c.loss.name, c.train.seed) for c, _ in done] == [
        ("crt", "ce", 0), ("crt2", "ce", 0), ("crt", "ce", 1), ("crt2", "ce", 1),
        ("crt", "el", 0), ("crt2", "el", 0), ("crt", "el", 1), ("crt2", "el", 1)]
    runs = {r["run_id"]: r for r in ResultsStore(db).runs()}
    assert len(runs) == 8 and all(r["status"] == "finished" for r in runs.values())
    for (stage1, _), (cfg, _) in zip(done[0::2], done[1::2], strict=True):  # each stage 2: its own loss and seed's
        assert runs[run_id_for(cfg)]["config"]["notes"]["upstream"] == {"stage1": {
            "run_id": run_id_for(stage1), "run_dir": str(run_dir_for(stage1, tmp_path / "runs"))}}
        assert stage1.loss == cfg.loss and stage1.train.seed == cfg.train.seed and stage1.train.epochs == 2
    loaded = load_run(run_dir_for(done[-1][0], tmp_path / "runs"), device="cpu")  # finds its stage 1 again
    assert loaded.task.frozen and loaded.epochs_trained == 1
    again = grid(stage2, ["ce", "el"], [0, 1], out_dir=tmp_path / "runs", db=db, quiet=True)
    assert all(final is None for _, final in again)  # all 8 finished: nothing trains twice


def test_crt_refuses_a_diverged_or_unfinished_stage1_run(tmp_path, longtail_features):
    from encouraging.experiment import run
    from encouraging.experiment.runner import ConfigError, _upstream_dirs

    first = _recipe(tmp_path / "stage1.yaml", [*longtail_features, "--optim.lr=1e30", "--optim.momentum=0"])
    stage2 = apply_overrides(Config(task="longtail"), [*longtail_features, "--name=crt2", f"--model.stage1={first}",
                                                       "--data.sampling=class_balanced", "--optim.lr=1e30",
                                                       "--optim.momentum=0"])
    with pytest.raises(ConfigError, match="stage1: the run crt / CE / seed 0 diverged"):
        run(stage2, out_dir=tmp_path / "runs", db=tmp_path / "r.db", quiet=True)
    with pytest.raises(ConfigError, match="stage1: the run crt / CE / seed 0 is not finished"):
        _upstream_dirs(stage2, tmp_path / "elsewhere", None)
    with pytest.raises(ConfigError, match="no stage-1 recipe at"):
        run(apply_overrides(stage2, [f"--model.stage1={tmp_path / 'no.yaml'}"]), out_dir=tmp_path, db=None)


def test_per_class_rows_are_the_tasks_own_post_hoc_predictions(tmp_path, longtail_features):
    from encouraging.analysis import AnalysisConfig, analyze_run
    from encouraging.experiment import load_run, run, run_dir_for

    cfg = apply_overrides(Config(task="longtail"), [*longtail_features, "--data.posthoc_tau=1.0"])
    final = run(cfg, out_dir=tmp_path / "runs", db=None, quiet=True)
    loaded = load_run(run_dir_for(cfg, tmp_path / "runs"), device="cpu")
    rows = analyze_run(loaded, AnalysisConfig(kinds=("per_class",)))["per_class"]
    assert [r["train_count"] for r in rows] == list(loaded.data.stats.class_counts) == [60, 26, 12]
    assert [r["test_count"] for r in rows] == [30, 30, 30]
    assert sum(r["test_acc"] for r in rows) / 3 == pytest.approx(final["final_test_acc"])  # balanced test set
    assert rows[2]["test_acc"] == pytest.approx(final["final_test_few_acc"])  # class 2 (12 examples): few-shot
