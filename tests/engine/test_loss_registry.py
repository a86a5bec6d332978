"""The loss registry: one entry per loss, builders that see the training statistics, what a run records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encouraging.engine import criteria
from encouraging.engine.config import LossConfig
from encouraging.engine.criteria import (
    LossPreset,
    build_criterion,
    get_loss,
    list_losses,
    loss_label,
    loss_params,
    parse_loss_spec,
    register_loss,
)
from encouraging.engine.task import DataStats
from encouraging.experiment import grid
from encouraging.results import ResultsStore, table_rows

from .test_task_interface import _features


class LogitAdjusted(nn.Module):
    """Cross-entropy of ``f + tau log(prior)`` (Menon et al. 2021): a loss that needs the training class counts."""

    def __init__(self, class_counts, tau: float = 1.0) -> None:
        super().__init__()
        prior = torch.as_tensor(class_counts, dtype=torch.float32)
        self.register_buffer("shift", tau * (prior / prior.sum()).log())

    def forward(self, logits, target):
        return F.cross_entropy(logits + self.shift, target)


@pytest.fixture
def logit_adjusted():
    """A preset registered for one test (a real one is one register_loss call in engine/criteria.py)."""
    seen = []

    def build(cfg: LossConfig, stats: DataStats) -> nn.Module:
        seen.append(stats)
        return LogitAdjusted(stats.class_counts, tau=cfg.epsilon)

    preset = register_loss(LossPreset("test_la", "logit-adjusted CE", ("epsilon",), build,
                                      lambda c: f"LA (tau={c.epsilon:g})", shown=("epsilon",)))
    yield preset, seen
    criteria._LOSSES.remove(preset.name)


def test_a_loss_needing_class_counts_is_one_entry_and_gets_the_training_split(tmp_path, logit_adjusted):
    _, seen = logit_adjusted
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], [200, 70, 30])  # imbalanced training classes
    np.savez(tmp_path / "lt.npz", x_train=x, y_train=y, x_test=x[:90], y_test=np.repeat([0, 1, 2], 30))
    cfg = _features(f"--data.path={tmp_path / 'lt.npz'}", "--data.dataset=lt", "--data.val_fraction=0.1",
                    "--train.epochs=2")
    db = tmp_path / "r.db"
    grid(cfg, ["ce", "test_la(epsilon=0.5)"], [0], out_dir=tmp_path / "runs", db=db, quiet=True)
    stats = seen[-1]  # the run's build; the ones before are the grid's up-front check with placeholder statistics
    assert stats.num_classes == 3 and sum(stats.class_counts) == 270  # after the 10% validation hold-out
    assert stats.class_counts[0] > stats.class_counts[1] > stats.class_counts[2]
    (run,) = ResultsStore(db).runs(loss="test_la")
    assert run["loss_label"] == "LA (tau=0.5)" and run["loss_params"] == {"epsilon": 0.5}
    assert {r["loss_label"]: r["params"] for r in table_rows(db)} == {"CE": "", "LA (tau=0.5)": "epsilon=0.5"}


def test_specs_resolve_to_canonical_configs_and_recorded_params():
    el = parse_loss_spec("el(log_end=1.0, epsilon=3)")
    assert el.epsilon == LossConfig().epsilon  # a field EL does not use is reset: equal losses, equal hashes
    assert loss_label(el) == "EL (LE=1)" and loss_params(el) == {"log_end": 1.0}
    assert loss_params(parse_loss_spec("el")) == {"log_end": 0.75}  # shown even at its default
    assert loss_params(parse_loss_spec("el(defer=25, log_end=0.5)")) == {"log_end": 0.5, "defer": 25.0}
    assert loss_params(parse_loss_spec("ce_ls")) == {"label_smoothing": 0.1}
    assert loss_params(parse_loss_spec("ce")) == {}
    assert isinstance(build_criterion(parse_loss_spec("focal")), nn.Module)
    assert {"ce", "ce_ls", "el", "el_ls", "poly1", "focal", "hfl"} <= set(list_losses())


def test_bad_entries_and_names_are_refused():
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("hinge")
    with pytest.raises(ValueError, match="does not have"):
        register_loss(LossPreset("bad", "x", ("margin",), lambda c, s: nn.Identity(), lambda c: "x"))
    with pytest.raises(ValueError, match="already registered"):
        register_loss(get_loss("ce"))


def test_the_long_tail_presets_train_with_and_without_the_bonus(tmp_path):
    x = np.random.default_rng(1).normal(size=(240, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], [180, 45, 15])
    np.savez(tmp_path / "lt.npz", x_train=x, y_train=y, x_test=x[:60], y_test=np.repeat([0, 1, 2], 20))
    cfg = _features(f"--data.path={tmp_path / 'lt.npz'}", "--data.dataset=lt", "--train.epochs=1")
    specs = ["ldam", "ldam_el(log_end=0.5)", "la(la_tau=0.5)", "la_el", "bsm", "cb_el(cb_beta=0.99)"]
    grid(cfg, specs, [0], out_dir=tmp_path / "runs", db=tmp_path / "r.db", quiet=True)
    runs = {r["loss_label"]: r for r in ResultsStore(tmp_path / "r.db").runs()}
    assert set(runs) == {"LDAM (m=0.5, s=30)", "LDAM (m=0.5, s=30) + EL (LE=0.5)", "LA (tau=0.5)",
                         "LA (tau=1) + EL (LE=0.75)", "BSM", "CB (beta=0.99) + EL (LE=0.75)"}
    assert all(r["status"] == "finished" for r in runs.values())
    assert runs["CB (beta=0.99) + EL (LE=0.75)"]["loss_params"] == {"cb_beta": 0.99, "log_end": 0.75}
    with pytest.raises(ValueError, match="needs the training set's class counts"):
        build_criterion(parse_loss_spec("ldam"), DataStats(num_classes=3))


def test_deferred_reweighting_switches_at_its_epoch_with_the_bonus_weights():
    from encouraging.engine.criteria import DeferredReweighting, build_schedule
    from encouraging.losses import class_balanced_weights

    cfg = parse_loss_spec("ldam_el(drw_from=2, cb_beta=0.99)")
    criterion = build_criterion(cfg, DataStats(3, (100, 10, 1)))
    schedule = build_schedule(cfg)
    assert isinstance(schedule, DeferredReweighting) and criterion.weight is None
    schedule.apply(criterion, 1)
    assert criterion.weight is None
    schedule.apply(criterion, 2)
    assert torch.equal(criterion.weight, class_balanced_weights((100, 10, 1), 0.99))
    assert criterion.bonus_weight == "same"  # the bonus is weighted by the same weights from the same epoch
    schedule.apply(criterion, 0)  # stateless: a resumed run sees the weights its epoch asks for
    assert criterion.weight is None


def test_a_drw_run_resumed_across_the_switch_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    import json

    import encouraging.engine.trainer as trainer_module
    from encouraging.experiment import run, run_dir_for

    x = np.random.default_rng(2).normal(size=(240, 4)).astype(np.float32)
    y = np.repeat([0, 1, 2], [180, 45, 15])
    np.savez(tmp_path / "lt.npz", x_train=x + y[:, None], y_train=y, x_test=x[:60], y_test=np.repeat([0, 1, 2], 20))
    cfg = _features(f"--data.path={tmp_path / 'lt.npz'}", "--data.dataset=lt", "--train.epochs=4",
                    "--loss.name=cb_el", "--loss.drw_from=2")

    def history(out):
        return [json.loads(line) for line in (run_dir_for(cfg, out) / "metrics.jsonl").read_text().splitlines()]

    run(cfg, out_dir=tmp_path / "a", db=None, quiet=True)
    original, saved = trainer_module.save_checkpoint, []

    def stop_after_two(state, path):
        original(state, path)
        saved.append(state["epoch"])
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out_dir=tmp_path / "b", db=None, quiet=True)
    monkeypatch.setattr(trainer_module, "save_checkpoint", original)
    run(cfg, out_dir=tmp_path / "b", db=None, quiet=True)
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    assert [m["epoch"] for m in b] == [0, 1, 2, 3]
    for ma, mb in zip(a, b, strict=True):
        assert ma["train_loss"] == pytest.approx(mb["train_loss"], rel=1e-6) and ma["test_acc"] == mb["test_acc"]
