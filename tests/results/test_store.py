"""ResultsStore: concurrent writers lose nothing, claims are exclusive, killed writers leave a sound file."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import signal
import sqlite3
import time

import pytest

from encouraging.results import ResultsStore, RunRecord

from . import workers
from .workers import METRIC_NAMES, metrics, record

SPAWN = mp.get_context("spawn")
JOIN_S = 120  # generous: a loaded CI machine can be slow to spawn Python processes


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "results.db")


def _join(*procs):
    for p in procs:
        p.join(JOIN_S)
        assert not p.is_alive(), "a worker process hung"
        assert p.exitcode == 0, f"worker exited with {p.exitcode}"


# ---------------------------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------------------------


def test_two_processes_logging_concurrently_lose_nothing(db):
    n_epochs = 500
    ResultsStore(db)  # create the schema first, as the engine does
    barrier = SPAWN.Barrier(2)
    procs = [SPAWN.Process(target=workers.log_many, args=(db, rid, n_epochs, barrier)) for rid in ("run-a", "run-b")]
    for p in procs:
        p.start()
    _join(*procs)

    store = ResultsStore(db)
    assert store.integrity_check() == "ok"
    for rid in ("run-a", "run-b"):
        eps = store.epochs(rid)
        assert [e["epoch"] for e in eps] == list(range(n_epochs))
        for e in eps:
            assert e == {"epoch": e["epoch"], **metrics(rid, e["epoch"])}
        assert store.final(rid) == {"best_test_acc": 0.5, "n_epochs": n_epochs}
        assert len(store.rows("margins", run_id=rid)) == 3 * len(range(0, n_epochs, 50))
    rows = store._conn().execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    assert rows == 2 * n_epochs * len(METRIC_NAMES)
    assert store.counts() == {"running": 0, "finished": 2, "failed": 0}


@pytest.mark.parametrize("same_run_id", [True, False], ids=["same-run-id", "own-run-ids"])
def test_concurrent_claims_have_exactly_one_winner(db, same_run_id):
    n = 40
    barrier = SPAWN.Barrier(2)
    queue = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=workers.claim_many, args=(db, n, tag, same_run_id, barrier, queue)) for tag in ("x", "y")
    ]
    for p in procs:
        p.start()
    results = dict((tag, (pid, wins)) for tag, pid, wins in (queue.get(timeout=JOIN_S) for _ in procs))
    _join(*procs)
    (pid_x, wins_x), (pid_y, wins_y) = results["x"], results["y"]
    for i in range(n):
        assert wins_x[i] != wins_y[i], f"claim {i}: x={wins_x[i]}, y={wins_y[i]} (exactly one must win)"
    store = ResultsStore(db)
    runs = {r["config_hash"]: r for r in store.runs()}
    assert len(runs) == n
    for i in range(n):
        owner = runs[f"race-{i}"]
        assert owner["status"] == "running" and owner["attempts"] == 1
        assert owner["pid"] == (pid_x if wins_x[i] else pid_y)


# ---------------------------------------------------------------------------------------------------------------------
# Claim semantics
# ---------------------------------------------------------------------------------------------------------------------


def test_new_claim_then_finished_run_is_skipped(db):
    store = ResultsStore(db)
    rec = record("r1", "h1")
    assert not store.is_finished("h1", 0)
    assert store.claim(rec)
    store.finish("r1", {"best_test_acc": 0.98})
    assert store.is_finished("h1", 0)
    assert not store.claim(rec)
    assert not ResultsStore(db).claim(record("another-id", "h1"))  # a fresh connection, another run_id: still skipped
    assert store.claim(record("r2", "h1", seed=1))  # another seed is another run
    assert store.run("r1")["status"] == "finished"


def test_claim_of_a_dead_process_is_taken_over(db):
    p = SPAWN.Process(target=workers.claim_and_exit, args=(db, "hd"))
    p.start()
    _join(p)
    store = ResultsStore(db, stale_after=3600)  # the heartbeat is fresh: only the dead pid makes it stale
    before = store.run("dead-hd")
    assert before["status"] == "running" and before["pid"] == p.pid
    assert store.claim(record("dead-hd", "hd"))
    after = store.run("dead-hd")
    assert after["pid"] == os.getpid() and after["attempts"] == 2 and after["status"] == "running"
    assert store.epochs("dead-hd") == [{"epoch": 0, "test_acc": 0.1}]  # kept for the resumed run to replace


def test_claim_held_by_a_live_process_is_refused(db):
    claimed, release = SPAWN.Event(), SPAWN.Event()
    p = SPAWN.Process(target=workers.claim_and_hold, args=(db, "hl", claimed, release))
    p.start()
    try:
        assert claimed.wait(JOIN_S)
        store = ResultsStore(db)
        assert not store.claim(record("live-hl", "hl"))
        assert not store.claim(record("other-id", "hl"))
    finally:
        release.set()
    _join(p)
    assert ResultsStore(db).is_finished("hl", 0)


def test_stale_heartbeat_from_another_machine_is_taken_over(db):
    store = ResultsStore(db, stale_after=60)
    assert store.claim(record("r", "h"))
    conn = store._conn()
    # pretend another machine holds it: its pid cannot be checked, so only the heartbeat's age counts
    conn.execute("UPDATE runs SET host = 'elsewhere', pid = 1, heartbeat_at = ?", (time.time() - 10,))
    assert not store.claim(record("r", "h"))
    conn.execute("UPDATE runs SET heartbeat_at = ?", (time.time() - 61,))
    assert store.claim(record("r", "h"))
    assert store.run("r")["host"] != "elsewhere"


def test_failed_run_is_claimed_again_under_a_new_run_id(db):
    store = ResultsStore(db)
    assert store.claim(record("old", "h"))
    store.log_epoch("old", 0, {"test_acc": 0.5})
    store.add_rows("old", "ood", [{"auroc": 0.9}])
    store.fail("old", "RuntimeError: out of memory")
    assert store.run("old")["status"] == "failed" and "out of memory" in store.run("old")["error"]
    assert not store.is_finished("h", 0)
    assert store.claim(record("new", "h"))
    assert [r["run_id"] for r in store.runs()] == ["new"]
    new = store.run("new")
    assert new["status"] == "running" and new["error"] is None and new["attempts"] == 2
    assert store.epochs("new") == [{"epoch": 0, "test_acc": 0.5}]  # moved along with the run
    assert len(store.rows("ood")) == 1 and store.rows("ood")[0]["run_id"] == "new"


def test_same_process_may_reclaim_its_own_running_claim(db):
    store = ResultsStore(db)
    assert store.claim(record("r", "h"))
    assert store.claim(record("r", "h"))  # e.g. a retry after an exception that skipped fail()
    assert store.run("r")["attempts"] == 1


def test_run_id_reused_for_another_config_is_an_error(db):
    store = ResultsStore(db)
    assert store.claim(record("r", "h1"))
    with pytest.raises(ValueError, match="run_id 'r' already names"):
        store.claim(record("r", "h2"))


def test_heartbeat(db):
    store = ResultsStore(db)
    store.claim(record("r", "h"))
    store._conn().execute("UPDATE runs SET heartbeat_at = 0")
    assert store.heartbeat("r")
    assert time.time() - store.run("r")["heartbeat_at"] < 60
    store.finish("r", {})
    assert not store.heartbeat("r")
    with pytest.raises(KeyError, match="no run 'nope'"):
        store.heartbeat("nope")


# ---------------------------------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------------------------------


def test_log_epoch_is_idempotent_per_epoch(db):
    store = ResultsStore(db)
    store.claim(record("r", "h"))
    for e in range(3):
        store.log_epoch("r", e, {"test_acc": 0.1 * e, "train_loss": 1.0 - 0.1 * e})
    # a resumed run logs epoch 1 again, with a different set of metrics: the new values replace the old ones
    store.log_epoch("r", 1, {"test_acc": 0.55, "lr": 0.01})
    store.log_epoch("r", 1, {"test_acc": 0.55, "lr": 0.01})
    assert store.epochs("r") == [
        {"epoch": 0, "test_acc": 0.0, "train_loss": 1.0},
        {"epoch": 1, "test_acc": 0.55, "lr": 0.01},
        {"epoch": 2, "test_acc": 0.2, "train_loss": 0.8},
    ]
    assert store.clear_epochs("r", from_epoch=2) == 2
    assert [e["epoch"] for e in store.epochs("r")] == [0, 1]


def test_metric_values_round_trip(db):
    np = pytest.importorskip("numpy")
    store = ResultsStore(db)
    store.claim(record("r", "h"))
    store.log_epoch("r", 0, {"a": float("nan"), "b": float("inf"), "c": np.float32(0.25), "d": 3, "e": True, "f": None})
    (ep,) = store.epochs("r")
    assert math.isnan(ep["a"]) and ep["b"] == math.inf and ep["c"] == 0.25 and ep["d"] == 3.0 and ep["e"] == 1.0
    assert math.isnan(ep["f"])
    store.finish("r", {"best_test_acc": 0.9, "best_epoch": 4, "note": "stopped early"})
    assert store.final("r") == {"best_test_acc": 0.9, "best_epoch": 4.0, "note": "stopped early"}
    store.finish("r", {"best_test_acc": 0.95})  # finishing again replaces the final metrics
    assert store.final("r") == {"best_test_acc": 0.95}


def test_bad_input_raises_clear_errors(db):
    store = ResultsStore(db)
    with pytest.raises(KeyError, match="claim"):
        store.log_epoch("missing", 0, {"a": 1.0})
    store.claim(record("r", "h"))
    with pytest.raises(TypeError, match="metric 'a' must be a number"):
        store.log_epoch("r", 0, {"a": "high"})
    with pytest.raises(ValueError, match="epoch must be an integer"):
        store.log_epoch("r", -1, {"a": 1.0})
    with pytest.raises(ValueError, match="unknown filter 'colour'"):
        store.runs(colour="red")
    with pytest.raises(TypeError, match="seed must be an int"):
        RunRecord("r", "q", "t", "d", "m", "el", "EL", "zero", "h", {}, {}, None, "hw", "/")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="busy_timeout"):
        ResultsStore(db, busy_timeout=0)
    assert store.epochs("r") == []  # nothing half-written by the failed calls


def test_runs_filters_and_record_fields(db):
    store = ResultsStore(db)
    for seed in range(2):
        for loss in ("ce", "el"):
            store.claim(record(f"{loss}-{seed}", f"h-{loss}", seed=seed, loss=loss))
    store.finish("el-0", {})
    assert [r["run_id"] for r in store.runs(loss="el")] == ["el-0", "el-1"]
    assert [r["run_id"] for r in store.runs(loss=["ce", "el"], seed=1)] == ["ce-1", "el-1"]
    assert [r["run_id"] for r in store.runs(status="finished")] == ["el-0"]
    run = store.run("el-0")
    assert run["loss_params"] == {"log_end": 0.75}  # from config["loss"], without its name
    assert run["test_note"] == "MNIST test, 10k"
    assert run["config"]["loss"]["name"] == "el" and run["versions"] == {"torch": "x"}


def test_rows_with_run_context_and_filters(db):
    store = ResultsStore(db)
    store.claim(record("r", "h"))
    rows = [
        {"detector": "msp", "dataset": "fashion_mnist", "auroc": 0.95, "n": 10000, "ok": True},
        {"detector": "energy", "dataset": "fashion_mnist", "auroc": 0.98, "n": 10000, "ok": True},
    ]
    assert store.add_rows("r", "ood", rows) == 2
    got = store.rows("ood", detector="energy")
    assert len(got) == 1
    assert got[0]["auroc"] == 0.98 and got[0]["n"] == 10000 and got[0]["ok"] is True
    assert got[0]["dataset"] == "fashion_mnist" and got[0]["run_dataset"] == "mnist"  # the row's key wins
    assert got[0]["loss"] == "el" and got[0]["seed"] == 0 and got[0]["run_id"] == "r"
    assert store.rows("ood", loss="ce") == []
    assert store.rows("margins") == []
    store.add_rows("r", "ood", rows[:1], replace=True)
    assert [r["detector"] for r in store.rows("ood")] == ["msp"]
    with pytest.raises(TypeError, match="row 0"):
        store.add_rows("r", "ood", [["not", "a", "dict"]])


def test_store_pickles_without_its_connection(db):
    store = ResultsStore(db)
    store.claim(record("r", "h"))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.path == store.path and clone.run("r")["run_id"] == "r"


def test_file_is_in_wal_mode_and_delete_cascades(db):
    store = ResultsStore(db)
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.claim(record("r", "h"))
    store.log_epoch("r", 0, {"a": 1.0})
    store.finish("r", {"b": 2.0})
    assert store.delete("r") and not store.delete("r")
    for table in ("epochs", "final", "rows"):
        assert store._conn().execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------------------------------
# Killed writer
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_writer_leaves_a_sound_file_and_a_reclaimable_run(db):
    started = SPAWN.Event()
    p = SPAWN.Process(target=workers.log_forever, args=(db, "victim", started))
    p.start()
    try:
        assert started.wait(JOIN_S)
        time.sleep(0.3)  # let it get well into a stream of writes
    finally:
        os.kill(p.pid, signal.SIGKILL)
    p.join(JOIN_S)
    assert p.exitcode == -signal.SIGKILL

    store = ResultsStore(db)
    assert store.integrity_check() == "ok"
    eps = store.epochs("victim")
    n = len(eps)
    assert n > 20
    assert [e["epoch"] for e in eps] == list(range(n))  # a prefix, no gap
    for e in eps:  # every epoch complete: all its metrics or none (one transaction per epoch)
        assert e == {"epoch": e["epoch"], **metrics("victim", e["epoch"])}
    assert store.claim(record("victim", "hash-victim"))  # its process is dead: take it over
    store.log_epoch("victim", n, metrics("victim", n))  # and the file takes writes again
