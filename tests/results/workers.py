"""Process entry points for the store tests (spawned processes import this module by name)."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path


def _store_module():
    if "encouraging" in sys.modules:
        from encouraging.results import store

        return store
    spec = importlib.util.find_spec("encouraging")
    assert spec is not None and spec.submodule_search_locations, "encouraging is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "results" / "store.py"
    module_spec = importlib.util.spec_from_file_location("_encouraging_results_store", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module  # dataclasses need the module registered
    module_spec.loader.exec_module(module)
    return module


_store = _store_module()
ResultsStore, RunRecord = _store.ResultsStore, _store.RunRecord

METRIC_NAMES = (
    "train_loss", "train_ce", "train_bonus", "train_acc", "test_loss", "test_acc",
    "p_target", "frac_past_log_end", "grad_norm", "lr", "epoch_time",
)  # fmt: skip


def record(run_id: str, config_hash: str, seed: int = 0, loss: str = "el") -> RunRecord:
    return RunRecord(
        run_id, "quick", "image", "mnist", "cnn", loss, loss.upper(), seed, config_hash,
        {"loss": {"name": loss, "log_end": 0.75}, "data": {"test_note": "MNIST test, 10k"}},
        {"torch": "x"}, None, "test machine", "/tmp/none",
    )  # fmt: skip


def metrics(run_id: str, epoch: int) -> dict[str, float]:
    """Deterministic values, so the parent can check every one of them."""
    base = sum(map(ord, run_id)) % 97
    return {name: base + epoch + i / 100.0 for i, name in enumerate(METRIC_NAMES)}


def log_many(path: str, run_id: str, n_epochs: int, barrier) -> int:
    store = ResultsStore(path)
    assert store.claim(record(run_id, f"hash-{run_id}"))
    barrier.wait()  # start together so the writes interleave
    for epoch in range(n_epochs):
        store.log_epoch(run_id, epoch, metrics(run_id, epoch))
        if epoch % 50 == 0:
            store.heartbeat(run_id)
            store.add_rows(run_id, "margins", [{"epoch": epoch, "bin": b, "count": b * epoch} for b in range(3)])
    store.finish(run_id, {"best_test_acc": 0.5, "n_epochs": n_epochs})
    return os.getpid()


def claim_many(path: str, n: int, tag: str, same_run_id: bool, barrier, queue) -> None:
    store = ResultsStore(path)
    recs = [record(f"run-{i}" if same_run_id else f"run-{i}-{tag}", f"race-{i}", seed=i) for i in range(n)]
    barrier.wait()
    wins = [store.claim(r) for r in recs]
    # stay alive until the other claimer is done too: a claim whose process has died may rightly be taken over
    barrier.wait()
    queue.put((tag, os.getpid(), wins))


def claim_and_exit(path: str, config_hash: str) -> None:
    """Claim a run and die without finishing it (as a killed trainer would)."""
    store = ResultsStore(path)
    assert store.claim(record(f"dead-{config_hash}", config_hash))
    store.log_epoch(f"dead-{config_hash}", 0, {"test_acc": 0.1})
    os._exit(0)


def claim_and_hold(path: str, config_hash: str, claimed, release) -> None:
    """Claim a run and stay alive until told to go."""
    store = ResultsStore(path)
    assert store.claim(record(f"live-{config_hash}", config_hash))
    claimed.set()
    release.wait(60)
    store.finish(f"live-{config_hash}", {"best_test_acc": 0.9})


def log_forever(path: str, run_id: str, started) -> None:
    """Log epochs as fast as possible until killed."""
    store = ResultsStore(path)
    store.claim(record(run_id, f"hash-{run_id}"))
    epoch = 0
    while True:
        store.log_epoch(run_id, epoch, metrics(run_id, epoch))
        if epoch == 20:
            started.set()
        epoch += 1
        if epoch > 1_000_000:  # pragma: no cover - the parent kills us long before
            time.sleep(1)
