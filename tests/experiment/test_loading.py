"""Opening trained runs: the weights, the data, the run's identity and loss, and refusals of mismatched files."""

from __future__ import annotations

import shutil

import pytest
import torch

from encouraging.engine.checkpoint import CheckpointError
from encouraging.experiment import load_run
from encouraging.results import ResultsStore


@torch.no_grad()
def _accuracy(model, batches):
    correct = total = 0
    for x, y in batches.epoch(0):
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total, total


def test_load_run_restores_the_trained_model(trained_runs):
    store = ResultsStore(trained_runs["db"])
    for name in ("CE", "EL"):
        loaded = load_run(trained_runs[name], device="cpu")
        assert loaded.run_id in {r["run_id"] for r in store.runs()}
        assert loaded.epochs_trained == 2 and len(loaded.history) == 2 and not loaded.model.training
        acc, n = _accuracy(loaded.model, loaded.data.test)
        assert n == 300
        assert acc == pytest.approx(store.final(loaded.run_id)["final_test_acc"], abs=1e-9)
    assert load_run(trained_runs["EL"], device="cpu").label == "EL (LE=1)"


def test_train_eval_reads_every_training_example_once_in_order(trained_runs):
    loaded = load_run(trained_runs["CE"] / "checkpoint.pt", device="cpu")
    xs, ys = zip(*loaded.data.train_eval.epoch(0), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert len(y) == 600
    again = torch.cat([b for _, b in loaded.data.train_eval.epoch(1)])
    assert torch.equal(y, again)  # no shuffling between epochs
    assert torch.equal(x, torch.cat([a for a, _ in loaded.data.train_eval.epoch(3)]))  # no augmentation


def test_criterion_is_the_run_loss_per_example(trained_runs):
    el = load_run(trained_runs["EL"], device="cpu").criterion()
    logits, target = torch.randn(5, 10), torch.randint(0, 10, (5,))
    expected = -logits.log_softmax(1).gather(1, target[:, None])[:, 0] \
        + torch.log1p(-logits.softmax(1).gather(1, target[:, None])[:, 0])
    torch.testing.assert_close(el(logits, target), expected, rtol=1e-5, atol=1e-5)


def test_refuses_a_checkpoint_of_another_config(trained_runs, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(trained_runs["CE"], mixed)
    shutil.copy(trained_runs["EL"] / "checkpoint.pt", mixed / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="another config"):
        load_run(mixed, device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        load_run(tmp_path, device="cpu")
