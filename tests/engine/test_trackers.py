"""Experiment trackers (train.trackers): TensorBoard and offline W&B hold the metrics the results database stores."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

import encouraging.engine.trackers as trackers_module
from encouraging.engine.checks import config_problems
from encouraging.engine.config import Config, apply_overrides, config_hash, load_config
from encouraging.engine.trackers import RunInfo, Tracker, Trackers
from encouraging.experiment.provenance import run_id_for
from encouraging.experiment.runner import ConfigError, run, run_dir_for
from encouraging.results import ResultsStore

from ..conftest import shared_data_root

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--name=t", "--data.dataset=mnist", "--data.train_subset=512", "--data.test_subset=256",
        "--data.batch_size=64", "--model.name=mlp", "--optim.lr=0.05", "--train.epochs=2", "--train.threads=1"]


def _cfg(*extra: str) -> Config:
    return apply_overrides(Config(), TINY + list(extra))


def _stored(db: Path, cfg: Config) -> dict[int, dict[str, float]]:
    """The database's per-epoch metrics of ``cfg``'s run, by epoch (``epoch`` itself is the step, not a metric)."""
    return {int(m.pop("epoch")): m for m in ResultsStore(db).epochs(run_id_for(cfg))}


def _tensorboard(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _wandb_records(path: Path):
    """The records of an offline W&B run's ``.wandb`` file: a 7-byte header, then LevelDB log records (32 KiB
    blocks; each record a 7-byte header of CRC, little-endian length and type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a record header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending, pos = pending + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _items(items) -> dict:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One tiny run (2 epochs) with both trackers, W&B offline and isolated from the user's own W&B files."""
    root = shared_data_root()
    if root is None:
        pytest.skip("offline datasets not found (../shared/data or $ENCOURAGING_DATA)")
    for module in ("tensorboard", "wandb"):
        pytest.importorskip(module)
    folder = tmp_path_factory.mktemp("tracked")
    cfg = _cfg("--train.trackers=[tensorboard, wandb]")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ENCOURAGING_DATA", str(root))
        for name in ("CONFIG", "CACHE", "DATA"):
            env.setenv(f"WANDB_{name}_DIR", str(folder / f"wandb-{name.lower()}"))
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.delenv("WANDB_DIR", raising=False)  # the default: under the run directory
        env.delenv("WANDB_PROJECT", raising=False)
        final = run(cfg, out_dir=folder, db=folder / "r.db", quiet=True)
    return {"cfg": cfg, "final": final, "db": folder / "r.db", "run_dir": run_dir_for(cfg, folder)}


def test_tensorboard_event_files_hold_the_databases_metrics(tracked):
    stored = _stored(tracked["db"], tracked["cfg"])
    scalars = _tensorboard(tracked["run_dir"] / "tensorboard")
    assert sorted(stored) == [0, 1] and set(scalars) == set(stored[0])
    for tag, events in scalars.items():
        assert [step for step, _ in events] == [0, 1], tag
        assert [value for _, value in events] == pytest.approx([stored[e][tag] for e in (0, 1)], rel=1e-6), tag


def test_the_offline_wandb_run_holds_the_databases_metrics(tracked):
    stored = _stored(tracked["db"], tracked["cfg"])
    [offline] = (tracked["run_dir"] / "wandb").glob("offline-run-*/run-*.wandb")
    records = list(_wandb_records(offline))
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [h.pop("_step") for h in history] == [0, 1]
    for epoch, logged in enumerate(history):
        logged = {k: v for k, v in logged.items() if not k.startswith("_")}  # W&B's own _runtime, _timestamp
        assert logged == pytest.approx(stored[epoch], rel=1e-12)
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update(_items(record.summary.update))
    assert summary["selected_test_acc"] == pytest.approx(tracked["final"]["selected_test_acc"])
    assert summary["test_loss"] == pytest.approx(stored[1]["test_loss"])  # the last epoch's metrics
    [run_record] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.project == "t" and run_record.run_group == "CE" and run_record.display_name == "CE seed 0"
    config = _items(run_record.config.update)
    assert config["run_id"] == run_id_for(tracked["cfg"]) and config["train"]["trackers"] == ["tensorboard", "wandb"]
    [exit_record] = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


def test_a_resumed_run_replaces_the_epochs_it_trains_again(tmp_path, data_root, monkeypatch):
    """Killed after logging epoch 1 but before its checkpoint: the resumed run trains epoch 1 again, and the
    event files hold it once (TensorBoard's purge_step), with the database's values."""
    pytest.importorskip("tensorboard")
    import encouraging.engine.trainer as trainer_module

    cfg = _cfg("--train.epochs=3", "--train.trackers=[tensorboard]")
    original, calls = trainer_module.save_checkpoint, []

    def killed_before_second(state, path):
        calls.append(state["epoch"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_before_second)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    monkeypatch.setattr(trainer_module, "save_checkpoint", original)
    run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    stored = _stored(tmp_path / "r.db", cfg)
    for tag, events in _tensorboard(run_dir_for(cfg, tmp_path) / "tensorboard").items():
        assert [step for step, _ in events] == [0, 1, 2], tag
        assert [value for _, value in events] == pytest.approx([stored[e][tag] for e in (0, 1, 2)], rel=1e-6), tag


class Broken(Tracker):
    """A tracker that fails in the method ``fail_in`` names, recording the calls it gets in ``calls``."""

    module, fail_in, calls = "json", "", []

    def _call(self, what: str, *args) -> None:
        self.calls.append((what, *args))
        if what == self.fail_in:
            raise RuntimeError(f"{what} broke")

    def start(self, info):
        self._call("start")

    def log(self, epoch, metrics):
        self._call("log", epoch)

    def finish(self, final):
        self._call("finish", final)


def _broken(monkeypatch, **fail_in: str) -> dict[str, list]:
    """Registers a :class:`Broken` tracker under each name; returns the calls each gets."""
    calls = {name: [] for name in fail_in}
    for name, method in fail_in.items():
        kind = type(f"Broken_{name}", (Broken,), {"fail_in": method, "calls": calls[name]})
        monkeypatch.setitem(trackers_module.TRACKERS, name, kind)
    return calls


def test_a_tracker_failing_after_its_start_is_dropped_with_a_warning(monkeypatch, capsys):
    calls = _broken(monkeypatch, ok="", bad_log="log", bad_finish="finish")
    group = Trackers(["ok", "bad_log", "bad_finish"])
    group.start(RunInfo("id", Path("."), "r", "CE", 0, {}))
    group.log(0, {"epoch": 0, "test_acc": 0.5})
    group.log(1, {"epoch": 1, "test_acc": 0.6})
    group.finish({"best_test_acc": 0.6})
    assert calls["ok"] == [("start",), ("log", 0), ("log", 1), ("finish", {"best_test_acc": 0.6})]
    assert calls["bad_log"] == [("start",), ("log", 0), ("finish", None)]  # dropped, finished as failed
    assert calls["bad_finish"][-1] == ("finish", {"best_test_acc": 0.6})
    err = capsys.readouterr().err
    assert "tracker bad_log failed logging epoch 0 (RuntimeError: log broke)" in err
    assert "tracker bad_finish failed finishing" in err and "results database" in err


def test_a_tracker_that_cannot_start_fails_the_run_before_training(tmp_path, data_root, monkeypatch):
    calls = _broken(monkeypatch, ok="", bad_start="start")
    cfg = _cfg("--train.trackers=[ok, bad_start]")
    with pytest.raises(RuntimeError, match="start broke"):
        run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    assert calls["ok"] == [("start",), ("finish", None)] and calls["bad_start"] == [("start",)]
    [record] = ResultsStore(tmp_path / "r.db").runs()
    assert record["status"] == "failed" and "start broke" in record["error"]
    assert ResultsStore(tmp_path / "r.db").epochs(record["run_id"]) == []


def test_bad_tracker_names_are_refused_before_anything_runs(tmp_path, monkeypatch):
    cfg = _cfg("--train.trackers=[tensorboard, mlflow, tensorboard]")
    with pytest.raises(ConfigError) as error:
        run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    message = str(error.value)
    assert "train.trackers must list names among ['tensorboard', 'wandb'], got 'mlflow'" in message
    assert "train.trackers names tensorboard more than once" in message
    assert list(tmp_path.iterdir()) == []  # no database, no run directory
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert config_problems(_cfg("--train.trackers=[wandb]")) == [
        "train.trackers: wandb needs wandb: pip install 'encouraging[trackers]'"]
    with pytest.raises(TypeError, match="'train.trackers' expects list"):
        _cfg("--train.trackers=tensorboard")


def test_trackers_never_change_the_recipe_hash():
    recipe = load_config(ROOT / "configs" / "quick" / "mnist.yaml")
    assert config_hash(recipe) == "a4c3dc83b5c6"  # its hash before train.trackers existed
    for value in ("[tensorboard]", "[wandb, tensorboard]"):
        assert config_hash(apply_overrides(recipe, [f"--train.trackers={value}"])) == "a4c3dc83b5c6"
