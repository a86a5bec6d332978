"""The task interface without any dataset on disk: the example `features` task end to end, model selection, early
stopping (also across a resume), the metric's direction, a task whose batches are dicts, and per-task config
sections. Tasks defined here are registered under names no other test uses."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import encouraging.engine.trainer as trainer_module
from encouraging.engine.classification import classification_step
from encouraging.engine.config import Config, apply_overrides, config_hash, from_dict
from encouraging.engine.criteria import build_criterion
from encouraging.engine.task import DataStats, MetricSpec, Prepared, Step, Task, build_task, register_task
from encouraging.engine.trainer import Trainer
from encouraging.experiment import grid, run, run_dir_for, run_id_for
from encouraging.results import ResultsStore, group_tables

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "feature_task.py"


def _load_example():
    """Import examples/feature_task.py once per process (a second import would register a second class)."""
    name = "encouraging_example_feature_task"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


feature_task = _load_example()

SMALL = ["--name=feat", "--data.n_train=240", "--data.n_test=120", "--data.dim=6", "--data.classes=3",
         "--data.separation=1.0", "--data.batch_size=32", "--optim.name=adam", "--optim.lr=0.01",
         "--optim.schedule=constant", "--optim.weight_decay=0", "--train.epochs=4", "--train.threads=1",
         "--train.device=cpu"]


def _features(*overrides: str) -> Config:
    return apply_overrides(Config(task="features"), SMALL + list(overrides))


def _history(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _first_best(history: list[dict[str, float]], key: str) -> dict[str, float]:
    values = [m[key] for m in history]
    return history[values.index(max(values))]


# --- the example task end to end -----------------------------------------------------------------------------------


def test_example_task_trains_through_grid_into_the_database_and_run_dirs(tmp_path):
    cfg = _features("--data.val_fraction=0.25")
    db = tmp_path / "results.db"
    done = grid(cfg, ["ce", "el"], [0], out_dir=tmp_path, db=db, quiet=True)
    assert len(done) == 2
    store = ResultsStore(db)
    for one, final in done:
        run_dir = run_dir_for(one, tmp_path)
        for name in ("config.yaml", "notes.json", "metrics.jsonl", "final.json", "checkpoint.pt"):
            assert (run_dir / name).is_file(), name
        assert json.loads((run_dir / "final.json").read_text()) == final
        assert final["epochs_trained"] == 4 and final["selection"] == "val"
        assert final["best_test_acc"] > 0.6  # three well separated classes: far above chance (1/3)
        history = _history(run_dir)
        for key in ("train_loss", "train_acc", "p_target", "val_acc", "val_balanced_acc", "test_acc",
                    "test_balanced_acc", "test_loss"):
            assert all(key in m for m in history), key
        record = store.run(run_id_for(one))
        assert record["status"] == "finished" and record["task"] == "features"
        assert record["dataset"] == "gaussian_mixture" and record["model"] == "mlp"
        assert record["config"]["metrics"]["extra"] == ["balanced_acc"]  # the spec is stored with the run
        assert [m["test_acc"] for m in store.epochs(run_id_for(one))] == [m["test_acc"] for m in history]
        assert store.final(run_id_for(one))["selected_test_acc"] == final["selected_test_acc"]
    assert run(done[0][0], out_dir=tmp_path, db=db, quiet=True) is None  # finished: skipped
    (table,) = group_tables(db)
    assert "balanced_acc" in table["columns"] and len(table["rows"]) == 2  # the declared extra metric is reported


def test_example_task_reads_npz_arrays_and_balanced_accuracy_averages_recall_over_present_classes(tmp_path):
    rng = np.random.default_rng(0)
    x_train, y_train = rng.normal(size=(64, 5)), np.repeat([0, 1, 2], [40, 16, 8])
    x_test, y_test = rng.normal(size=(30, 5)), np.repeat([0, 1], [24, 6])  # class 2 is absent from the test set
    np.savez(tmp_path / "d.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    cfg = _features(f"--data.path={tmp_path / 'd.npz'}", "--data.eval_batch_size=7")
    task = build_task(cfg, "cpu")
    assert task.check() == []
    prepared = task.setup()
    assert prepared.stats == DataStats(3, (40, 16, 8))
    metrics = task.evaluate(prepared.model.eval(), prepared.test)
    with torch.no_grad():
        pred = prepared.model(torch.as_tensor(x_test, dtype=torch.float32)).argmax(1).numpy()
    recall = [np.mean(pred[y_test == c] == c) for c in (0, 1)]
    assert metrics["acc"] == pytest.approx(np.mean(pred == y_test))
    assert metrics["balanced_acc"] == pytest.approx(np.mean(recall))
    assert build_task(_features("--data.path=/no/such.npz"), "cpu").check() == ["data.path: no such file "
                                                                                   "'/no/such.npz'"]


def test_the_docs_show_the_example_as_it_is():
    doc = (ROOT / "docs" / "experiments.md").read_text().split("## Add a task", 1)[1]
    shown = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown.startswith("from __future__") and shown in EXAMPLE.read_text()


# --- model selection and early stopping on the example task ---------------------------------------------------------


def test_selection_on_validation_and_best_on_test_agree_with_the_history(tmp_path):
    cfg = _features("--data.val_fraction=0.25", "--train.epochs=5", "--optim.lr=0.003")
    final = run(cfg, out_dir=tmp_path, db=None, quiet=True)
    history = _history(run_dir_for(cfg, tmp_path))
    chosen = _first_best(history, "val_acc")
    assert final["selection"] == "val" and final["selected_epoch"] == chosen["epoch"]
    assert final["selected_test_acc"] == chosen["test_acc"] and final["selected_val_acc"] == chosen["val_acc"]
    assert final["best_test_acc"] == max(m["test_acc"] for m in history)
    assert final["best_epoch"] == _first_best(history, "test_acc")["epoch"]
    assert final["final_test_acc"] == history[-1]["test_acc"]


def test_without_a_validation_split_the_last_epoch_is_reported(tmp_path):
    cfg = _features()
    final = run(cfg, out_dir=tmp_path, db=None, quiet=True)
    history = _history(run_dir_for(cfg, tmp_path))
    assert final["selection"] == "last" and final["selected_epoch"] == 3 and "selected_val_acc" not in final
    assert final["selected_test_acc"] == final["final_test_acc"] == history[-1]["test_acc"]
    assert final["best_test_acc"] == max(m["test_acc"] for m in history)
    assert not any(k.startswith("val_") for k in history[-1])


def test_patience_stops_a_run_whose_validation_metric_plateaus(tmp_path):
    # lr 1e-12 (lr must be > 0): the weights barely move, so no epoch after the first is better on validation
    cfg = _features("--data.val_fraction=0.25", "--optim.lr=1e-12", "--train.epochs=10", "--train.patience=2")
    final = run(cfg, out_dir=tmp_path, db=None, quiet=True)
    assert final["epochs_trained"] == 3 < cfg.train.epochs  # epoch 0, then 2 epochs without a better one
    assert final["selected_epoch"] == 0


def test_patience_without_a_validation_split_is_refused(tmp_path):
    with pytest.raises(ValueError, match="patience"):
        run(_features("--train.patience=2"), out_dir=tmp_path, db=None, quiet=True)


# --- a scripted task: dict batches, metrics chosen per epoch ----------------------------------------------------


class DictBatches:
    """Training batches that are dicts, not ``(x, y)`` pairs; remembers which epoch the trainer is in."""

    def __init__(self, steps: int = 2) -> None:
        self.steps, self.current = steps, -1

    def __len__(self) -> int:
        return self.steps

    def epoch(self, epoch: int):
        self.current = epoch
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(self.steps):
            yield {"inputs": torch.randn(8, 3, generator=gen), "target": torch.randint(2, (8,), generator=gen)}


class Curve:
    """An evaluation split whose metric is scripted per epoch (the evaluation reads no batches)."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def __len__(self) -> int:
        return 1

    def epoch(self, epoch: int):
        return iter(())


@dataclass
class ScriptedData:
    dataset: str = "scripted"
    val: list = field(default_factory=list)  # the validation metric per epoch (empty: no validation split)
    test: list = field(default_factory=list)  # the test metric per epoch


@register_task
class ScriptedTask(Task):
    name = "test_task_interface_scripted"
    description = "test stub: dict batches, scripted metrics"
    data_config = ScriptedData
    metrics = MetricSpec(primary="acc")

    def setup(self) -> Prepared:
        d = self.cfg.data
        self.train, self.batch_types = DictBatches(), set()
        return Prepared(nn.Linear(3, 2), self.train, Curve(d.test), DataStats(2), val=Curve(d.val) if d.val else None)

    def training_step(self, model: nn.Module, batch: Any, criterion: nn.Module) -> Step:
        self.batch_types.add(type(batch))
        step = classification_step(self.logits(model, batch["inputs"]), batch["target"], criterion)
        step.sums["inputs_mean"] = batch["inputs"].sum()  # a task's own diagnostic, averaged per example
        return step

    def evaluate(self, model: nn.Module, batches: Any) -> dict[str, float]:
        return {self.metrics.primary: batches.values[self.train.current]}


@register_task
class ScriptedErrorTask(ScriptedTask):
    name = "test_task_interface_scripted_error"
    description = "test stub: a metric where lower is better"
    metrics = MetricSpec(primary="error", label="error (%)", higher_is_better=False)


def _scripted(task: str, val: list[float], test: list[float], *overrides: str) -> Config:
    base = from_dict({"task": task, "data": {"val": val, "test": test}})
    return apply_overrides(base, ["--name=scripted", "--model.name=linear", "--optim.lr=0.01", "--train.threads=1",
                                  "--train.device=cpu", f"--train.epochs={len(test)}", *overrides])


def test_the_trainer_is_batch_agnostic_and_logs_a_tasks_own_diagnostics():
    cfg = _scripted("test_task_interface_scripted", [], [0.1, 0.2, 0.3])
    task = build_task(cfg, "cpu")
    prepared = task.setup()
    before = prepared.model.weight.detach().clone()
    trainer = Trainer(task, prepared, build_criterion(cfg.loss, prepared.stats), quiet=True)
    final = trainer.fit()
    assert task.batch_types == {dict}
    assert not torch.equal(prepared.model.weight, before)  # the optimizer stepped on the dict batches' loss
    assert [m["epoch"] for m in trainer.history] == [0, 1, 2]
    assert all(0 <= m["train_acc"] <= 1 and "inputs_mean" in m and m["train_loss"] > 0 for m in trainer.history)
    assert final["selection"] == "last" and final["selected_test_acc"] == 0.3


def test_scripted_selection_picks_the_first_best_validation_epoch(tmp_path):
    val, test = [0.5, 0.8, 0.7, 0.8, 0.6], [0.4, 0.6, 0.9, 0.7, 0.5]
    final = run(_scripted("test_task_interface_scripted", val, test), out_dir=tmp_path, db=None, quiet=True)
    assert final["selected_epoch"] == 1 and final["selected_test_acc"] == 0.6 and final["selected_val_acc"] == 0.8
    assert final["best_test_acc"] == 0.9 and final["best_epoch"] == 2 and final["final_test_acc"] == 0.5


def test_a_metric_where_lower_is_better_selects_the_minimum(tmp_path):
    val, test = [0.5, 0.3, 0.4, 0.2, 0.35], [0.6, 0.1, 0.5, 0.3, 0.4]
    final = run(_scripted("test_task_interface_scripted_error", val, test), out_dir=tmp_path, db=None, quiet=True)
    assert final["selected_epoch"] == 3 and final["selected_test_error"] == 0.3
    assert final["best_test_error"] == 0.1 and final["best_epoch"] == 1


VAL_PLATEAU = [0.5, 0.7, 0.6, 0.6, 0.65, 0.9, 0.95, 0.99]  # best at 1; epoch 5 would improve, but patience is 3


def test_patience_counts_epochs_since_the_best_validation_epoch(tmp_path):
    cfg = _scripted("test_task_interface_scripted", VAL_PLATEAU, [0.1] * 8, "--train.patience=3")
    final = run(cfg, out_dir=tmp_path, db=None, quiet=True)
    assert final["epochs_trained"] == 5 and final["selected_epoch"] == 1  # epochs 2, 3, 4 without a better one
    assert [m["epoch"] for m in _history(run_dir_for(cfg, tmp_path))] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("interrupt_after", [3, 5])  # mid-patience, and right after the last epoch
def test_a_resumed_run_stops_where_an_uninterrupted_one_does(tmp_path, monkeypatch, interrupt_after):
    cfg = _scripted("test_task_interface_scripted", VAL_PLATEAU, [0.1] * 8, "--train.patience=3")
    original, saved = trainer_module.save_checkpoint, []

    def save_then_stop(state, path):
        original(state, path)
        saved.append(state["epoch"])
        if len(saved) == interrupt_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    monkeypatch.setattr(trainer_module, "save_checkpoint", original)
    final = run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", resume=True, quiet=True)
    assert final["epochs_trained"] == 5 and final["selected_epoch"] == 1
    assert [m["epoch"] for m in _history(run_dir_for(cfg, tmp_path))] == [0, 1, 2, 3, 4]


# --- config sections ------------------------------------------------------------------------------------------


def test_the_task_decides_the_data_and_model_sections():
    switched = apply_overrides(Config(), ["--task=features", "--data.dim=5"])
    assert isinstance(switched.data, feature_task.FeatureDataConfig) and switched.data.dim == 5
    assert isinstance(switched.model, feature_task.FeatureModelConfig)
    read = from_dict({"task": "features", "data": {"classes": 7}})
    assert read.data.classes == 7 and read.model.name == "mlp" and read.data.dataset == "gaussian_mixture"
    with pytest.raises(ValueError, match="data.augment"):  # an image field: not in this task's section
        apply_overrides(Config(task="features"), ["--data.augment=flip"])
    with pytest.raises(ValueError, match="data.bogus"):
        from_dict({"task": "features", "data": {"bogus": 1}})


def test_switching_task_keeps_the_new_tasks_defaults_and_carries_values_set():
    switched = apply_overrides(Config(), ["--task=features"])
    assert switched.model.name == "mlp" and switched.data.dataset == "gaussian_mixture"
    assert switched.data.batch_size == feature_task.FeatureDataConfig().batch_size
    carried = apply_overrides(apply_overrides(Config(), ["--data.batch_size=32"]), ["--task=features"])
    assert carried.data.batch_size == 32  # set away from the image default: carried to the same-named field


def test_unhashed_fields_leave_the_recipe_hash_alone():
    assert config_hash(Config()) == "2b9f294fea96"  # the default image recipe keeps its hash
    base = config_hash(Config(task="features"))
    assert base != config_hash(Config())
    assert config_hash(apply_overrides(Config(task="features"), ["--data.eval_batch_size=17"])) == base
    assert config_hash(apply_overrides(Config(task="features"), ["--train.threads=3"])) == base
    assert config_hash(apply_overrides(Config(task="features"), ["--data.dim=17"])) != base
    assert config_hash(apply_overrides(Config(task="features"), ["--model.kwargs={hidden: [8]}"])) != base


def test_the_logged_bonus_is_never_the_smoothing_term():
    from encouraging.engine.classification import classification_step
    from encouraging.losses import EncouragingLoss

    torch.manual_seed(0)
    logits, target = torch.randn(64, 5), torch.randint(5, (64,))
    smoothed_ce = classification_step(logits, target, EncouragingLoss(label_smoothing=0.1, bonus_scale=0.0))
    assert float(smoothed_ce.sums["train_bonus"]) == pytest.approx(0.0, abs=1e-4)  # CE+LS: no bonus at all
    el_ls = classification_step(logits, target, EncouragingLoss(label_smoothing=0.1, log_end=1.0))
    smoothed = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1, reduction="sum")
    assert float(el_ls.sums["train_bonus"]) == pytest.approx(float(el_ls.loss) * 64 - float(smoothed), rel=1e-5)
    assert float(el_ls.sums["train_bonus"]) < 0  # EL's reward
    plain = classification_step(logits, target, EncouragingLoss(log_end=1.0))
    assert float(plain.sums["train_bonus"]) == pytest.approx(float(plain.loss) * 64 - float(plain.sums["train_ce"]),
                                                             rel=1e-5)
