"""End-to-end runs on a small MNIST subset: metrics, resume after an interruption and after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from encouraging.engine.config import Config, apply_overrides
from encouraging.experiment.runner import run, run_dir_for

FAST = ["--name=t", "--data.dataset=mnist", "--data.train_subset=1024", "--data.test_subset=500",
        "--data.batch_size=64", "--model.name=mlp", "--optim.lr=0.05", "--train.epochs=3", "--train.threads=1"]
COMPARED = ("train_loss", "train_acc", "test_loss", "test_acc", "p_target", "grad_norm", "lr")


def _cfg(*extra: str) -> Config:
    return apply_overrides(Config(), FAST + list(extra))


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _same(a: list[dict], b: list[dict]) -> None:
    assert [m["epoch"] for m in a] == [m["epoch"] for m in b]
    for x, y in zip(a, b, strict=True):
        for key in COMPARED:
            assert x[key] == pytest.approx(y[key], rel=1e-6, abs=1e-9), key


def test_run_logs_every_metric_and_writes_its_files(tmp_path, data_root):
    cfg = _cfg("--loss.name=el")
    final = run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True)
    run_dir = run_dir_for(cfg, tmp_path)
    history = _history(run_dir)
    assert len(history) == 3
    for key in COMPARED + ("train_ce", "train_bonus", "frac_past_log_end", "epoch_time"):
        assert all(key in m for m in history), key
    assert history[-1]["train_bonus"] < 0 < history[-1]["train_ce"]  # EL's reward is negative
    assert 0.5 < final["best_test_acc"] <= 1 and (run_dir / "checkpoint.pt").exists()
    assert (run_dir / "config.yaml").exists() and json.loads((run_dir / "final.json").read_text()) == final
    assert run(cfg, out_dir=tmp_path, db=tmp_path / "r.db", quiet=True) is None  # finished: skipped


def test_interrupted_run_resumes_to_the_same_result(tmp_path, data_root):
    cfg = _cfg("--loss.name=el", "--data.augment=flip")
    run(cfg, out_dir=tmp_path / "a", db=None, quiet=True)
    reference = _history(run_dir_for(cfg, tmp_path / "a"))

    import encouraging.engine.trainer as trainer_module

    original = trainer_module.save_checkpoint
    calls = []

    def stop_after_second(state, path):
        original(state, path)
        calls.append(state["epoch"])
        if len(calls) == 2:
            raise KeyboardInterrupt

    trainer_module.save_checkpoint = stop_after_second
    try:
        with pytest.raises(KeyboardInterrupt):
            run(cfg, out_dir=tmp_path / "b", db=tmp_path / "b.db", quiet=True)
    finally:
        trainer_module.save_checkpoint = original
    run(cfg, out_dir=tmp_path / "b", db=tmp_path / "b.db", resume=True, quiet=True)
    _same(reference, _history(run_dir_for(cfg, tmp_path / "b")))


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "encouraging.cli", *args], env=env, **kwargs)


@pytest.mark.slow  # about 25 s; the default suite resumes an interrupted run in-process (the test above)
@pytest.mark.timeout(300)
def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path, data_root):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: killed\n")
    args = ["train", str(recipe), *FAST, "--train.epochs=4", "--data.train_subset=4096", "--loss.name=el", "--quiet"]
    assert _cli(*args, "--out", str(tmp_path / "a")).wait(timeout=240) == 0
    cfg = apply_overrides(Config(), ["--name=killed", *FAST, "--train.epochs=4", "--data.train_subset=4096",
                                     "--loss.name=el"])
    reference = _history(run_dir_for(cfg, tmp_path / "a"))

    proc = _cli(*args, "--out", str(tmp_path / "b"))
    metrics = run_dir_for(cfg, tmp_path / "b") / "metrics.jsonl"
    deadline = time.time() + 200
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = metrics.read_text().count("\n")
    assert 2 <= done < 4, f"the run was not killed mid-way ({done} epochs logged)"
    assert _cli(*args, "--out", str(tmp_path / "b"), "--resume").wait(timeout=240) == 0
    _same(reference, _history(run_dir_for(cfg, tmp_path / "b")))


def test_the_last_epochs_weights_are_averaged_and_scored(tmp_path, data_root):
    import torch

    from encouraging.engine.checkpoint import average_state_dicts, load_checkpoint

    cfg = _cfg("--train.average_last=2")
    final = run(cfg, out_dir=tmp_path, db=None, quiet=True)
    run_dir = run_dir_for(cfg, tmp_path)
    kept = sorted(p.name for p in run_dir.glob("weights-epoch*.pt"))
    assert kept == ["weights-epoch1.pt", "weights-epoch2.pt"]  # only the last two epochs stay
    states = [load_checkpoint(run_dir / name)["model"] for name in kept]
    averaged = load_checkpoint(run_dir / "weights-averaged.pt")
    assert averaged["epochs"] == [1, 2]
    for key, value in averaged["model"].items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key]) / 2)
    assert final["averaged_epochs"] == 2 and 0.5 < final["averaged_test_acc"] <= 1
    # the run's own (last-epoch) weights are what the checkpoint keeps
    torch.testing.assert_close(load_checkpoint(run_dir / "checkpoint.pt")["model"], states[1])
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([states[0], {"x": torch.zeros(1)}])
    from encouraging.results import ResultsStore, group_tables, table_rows

    run(cfg, out_dir=tmp_path / "db", db=tmp_path / "r.db", quiet=True)
    (row,) = table_rows(ResultsStore(tmp_path / "r.db"))
    assert row["averaged_mean"] == pytest.approx(100 * final["averaged_test_acc"])
    assert "averaged" in group_tables(ResultsStore(tmp_path / "r.db"))[0]["columns"]


def test_accumulating_two_half_batches_is_one_full_batch(tmp_path, data_root):
    import torch

    from encouraging.engine.checkpoint import load_checkpoint

    whole = _cfg("--data.batch_size=64", "--train.epochs=1", "--optim.schedule=cosine", "--optim.warmup_epochs=0.3")
    halves = apply_overrides(whole, ["--data.batch_size=32", "--optim.accumulate=2"])
    finals = [run(c, out_dir=tmp_path / name, db=None, quiet=True) for c, name in ((whole, "a"), (halves, "b"))]
    a, b = (load_checkpoint(run_dir_for(c, tmp_path / n) / "checkpoint.pt")["model"]
            for c, n in ((whole, "a"), (halves, "b")))
    for key in a:  # the same examples per optimizer step, the same learning rate at each step
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    assert finals[0]["final_test_acc"] == pytest.approx(finals[1]["final_test_acc"], abs=0.004)
