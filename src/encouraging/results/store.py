"""SQLite results store: runs, per-epoch metrics, final metrics and analysis rows, safe across processes.

One file holds every run of every grid. Design rules, each for a failure we must survive:

* **Killed writers.** Every write is one short transaction (``BEGIN IMMEDIATE … COMMIT``) in WAL mode, so a process
  killed at any instant leaves either the whole write or none of it; the next reader sees a consistent file.
  ``synchronous=NORMAL`` is durable against a killed process (not against power loss, where the last commits may
  be lost but the file stays consistent).
* **Concurrent writers.** ``BEGIN IMMEDIATE`` takes the write lock before reading, so claim's read-decide-write is
  atomic across processes; other writers wait up to ``busy_timeout`` seconds instead of failing. WAL needs all
  processes on one machine (shared memory): do not put the file on a network file system.
* **Each process its own connection.** Connections are opened lazily per process and thread; one inherited through
  ``fork`` is never used (nor closed: closing it could drop the parent's POSIX locks).
* **A run is claimed before it runs.** ``(config_hash, seed)`` is unique. :meth:`ResultsStore.claim` returns True
  for a new pair, a failed one, or a stale ``running`` one (its heartbeat older than ``stale_after`` seconds, or its
  process dead on this machine); False for a finished pair or one that is alive elsewhere.

Tables: ``runs`` (one row per run), ``epochs`` (run_id, epoch, name, value: one row per metric and epoch),
``final`` (run_id, name, value), ``rows`` (flat rows of later analyses, JSON, by ``kind``), ``meta``.
NaN metrics are stored as SQL NULL and read back as NaN.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ResultsStore", "RunRecord", "RUN_FILTERS", "SCHEMA_VERSION", "loss_params_from_config"]

SCHEMA_VERSION = 1
STATUSES = ("running", "finished", "failed")
#: columns :meth:`ResultsStore.runs` and :meth:`ResultsStore.rows` can filter on
RUN_FILTERS = ("run_id", "recipe", "task", "dataset", "model", "loss", "loss_label", "seed", "config_hash", "status")
_MAX_TEXT = 20_000  # error messages and string values are cut here: the store holds results, not logs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    recipe       TEXT NOT NULL,
    task         TEXT NOT NULL,
    dataset      TEXT NOT NULL,
    model        TEXT NOT NULL,
    loss         TEXT NOT NULL,
    loss_label   TEXT NOT NULL,
    seed         INTEGER NOT NULL,
    config_hash  TEXT NOT NULL,
    config       TEXT NOT NULL,          -- JSON, the resolved config
    loss_params  TEXT NOT NULL,          -- JSON, the loss's arguments (from the config)
    test_note    TEXT,                   -- what the test set is (e.g. "JPEG copy of the CIFAR-10 test set")
    versions     TEXT NOT NULL,          -- JSON, package -> version
    git_commit   TEXT,
    hardware     TEXT NOT NULL,
    run_dir      TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
    host         TEXT NOT NULL,          -- the claiming process: hostname, pid namespace, pid
    pid_ns       TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    attempts     INTEGER NOT NULL,
    created_at   REAL NOT NULL,          -- unix time of the first claim
    started_at   REAL NOT NULL,          -- of the current attempt
    heartbeat_at REAL NOT NULL,
    finished_at  REAL,
    error        TEXT,
    UNIQUE (config_hash, seed)
);
CREATE INDEX IF NOT EXISTS runs_group ON runs (recipe, dataset, model, loss);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON UPDATE CASCADE ON DELETE CASCADE,
    epoch  INTEGER NOT NULL,
    name   TEXT NOT NULL,
    value  REAL,
    PRIMARY KEY (run_id, epoch, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS final (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON UPDATE CASCADE ON DELETE CASCADE,
    name   TEXT NOT NULL,
    value,                               -- REAL, or a short TEXT
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL REFERENCES runs (run_id) ON UPDATE CASCADE ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    data       TEXT NOT NULL,            -- JSON object
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_kind ON rows (kind, run_id);
"""

_JSON_COLUMNS = ("config", "loss_params", "versions")


# ---------------------------------------------------------------------------------------------------------------------
# The process identity used to tell a live claim from a dead one
# ---------------------------------------------------------------------------------------------------------------------

_HOST = socket.gethostname()


def _pid_namespace() -> str:
    """The pid namespace of this process (containers on one host see different pids), or '' where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


_PID_NS = _pid_namespace()


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` names a live (not zombie) process on this machine, in this pid namespace."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    try:  # a killed child that nobody reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------------------------------------------------------------
# Run record
# ---------------------------------------------------------------------------------------------------------------------

_LOSS_PARAM_SKIP = {"name", "type", "kind", "loss", "label", "cls", "class", "target"}


def loss_params_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The loss's arguments as recorded in a run config, best effort.

    Looks, in order, at ``config["loss"]`` (a dict; its ``name``/``type`` key is dropped), ``config["loss_params"]``,
    ``config["loss_kwargs"]`` and ``config["loss_args"]``; keeps scalar values only. Returns ``{}`` when none is found.
    """
    candidates = []
    node = config.get("loss")
    if isinstance(node, Mapping):
        candidates.append(node)
        for key in ("params", "kwargs", "args"):
            if isinstance(node.get(key), Mapping):
                candidates.append(node[key])
    for key in ("loss_params", "loss_kwargs", "loss_args"):
        if isinstance(config.get(key), Mapping):
            candidates.append(config[key])
    out: dict[str, Any] = {}
    for c in candidates:
        for k, v in c.items():
            if k in _LOSS_PARAM_SKIP or isinstance(v, Mapping):
                continue
            if v is None or isinstance(v, (bool, int, float, str)):
                out[str(k)] = v
            elif isinstance(v, (list, tuple)) and len(v) <= 16 and all(isinstance(x, (int, float, str)) for x in v):
                out[str(k)] = list(v)
    return out


def _test_note_from_config(config: Mapping[str, Any]) -> str | None:
    """``config["data"]["test_note"]``, ``config["notes"]["test_note"]`` (what the task prepared) or
    ``config["test_note"]``, the first one set."""
    for section in ("data", "notes"):
        node = config.get(section)
        if isinstance(node, Mapping) and node.get("test_note"):
            return str(node["test_note"])
    if config.get("test_note"):
        return str(config["test_note"])
    return None


def _to_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, sort_keys=True, default=str, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be JSON-serializable: {e}") from None


@dataclass
class RunRecord:
    """What the engine knows about a run before it starts; :meth:`ResultsStore.claim` stores it.

    Args:
        run_id: unique name of the run.
        recipe, task, dataset, model: the comparison a run belongs to is ``(recipe, dataset, model)``.
        loss: the loss's registry name (``"ce"``, ``"el"``, ``"focal"``, …); ``loss_label`` the row label in tables
            (``"EL (LE=0.75)"``).
        seed: the repetition; ``(config_hash, seed)`` is unique in a store.
        config_hash: hash of the resolved config (without the seed).
        config: the resolved config (JSON-serializable; other values are stored as ``str``).
        versions: package -> version.
        git_commit: commit of the code, ``None`` outside a repository.
        hardware: the machine in words (CPU/GPU name, threads).
        run_dir: where the run's checkpoints and logs live.
        loss_params: the loss's arguments; taken from ``config`` (see :func:`loss_params_from_config`) when ``None``.
        test_note: what the test set is; when ``None``, ``config["data"]["test_note"]`` or
            ``config["notes"]["test_note"]``.
    """

    run_id: str
    recipe: str
    task: str
    dataset: str
    model: str
    loss: str
    loss_label: str
    seed: int
    config_hash: str
    config: dict
    versions: dict
    git_commit: str | None
    hardware: str
    run_dir: str
    loss_params: dict | None = field(default=None)
    test_note: str | None = field(default=None)

    def __post_init__(self) -> None:
        for name in ("run_id", "recipe", "task", "dataset", "model", "loss", "config_hash"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"RunRecord.{name} must be a non-empty string, got {value!r}")
        for name in ("loss_label", "hardware", "run_dir"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"RunRecord.{name} must be a string, got {type(value).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            try:
                if float(self.seed) != int(self.seed):
                    raise ValueError
                self.seed = int(self.seed)
            except (TypeError, ValueError):
                raise TypeError(f"RunRecord.seed must be an int, got {self.seed!r}") from None
        for name in ("config", "versions"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"RunRecord.{name} must be a dict, got {type(getattr(self, name)).__name__}")
        if self.git_commit is not None and not isinstance(self.git_commit, str):
            raise TypeError(f"RunRecord.git_commit must be a string or None, got {type(self.git_commit).__name__}")
        if self.loss_params is None:
            self.loss_params = loss_params_from_config(self.config)
        if self.test_note is None:
            self.test_note = _test_note_from_config(self.config)
        if not self.loss_label:
            self.loss_label = self.loss


# ---------------------------------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------------------------------

_INHERITED: list[sqlite3.Connection] = []  # connections carried over a fork: kept alive, never used


def _number(name: str, value: Any, *, allow_text: bool = False) -> float | str | None:
    """A metric value as SQLite will store it: float (NaN -> NULL), short text when allowed, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        if allow_text:
            return value[:_MAX_TEXT]
        raise TypeError(f"metric {name!r} must be a number, got the string {value!r}")
    try:
        x = float(value)  # bool, int, numpy scalars and 0-d tensors all convert
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}") from None
    return None if math.isnan(x) else x


def _metrics(metrics: Mapping[str, Any], what: str, *, allow_text: bool = False) -> list[tuple[str, Any]]:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{what} must be a dict of name -> number, got {type(metrics).__name__}")
    out = []
    for k, v in metrics.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"{what}: metric names must be non-empty strings, got {k!r}")
        out.append((k, _number(k, v, allow_text=allow_text)))
    return out


class ResultsStore:
    """The results database: one SQLite file, safe for several processes at once (see the module docstring).

    Args:
        path: the SQLite file; created with its schema when missing (parent directories too).
        busy_timeout: seconds a writer waits for another one before giving up.
        stale_after: a ``running`` claim whose heartbeat is older than this many seconds may be taken over
            (a dead process on this machine is detected at once, whatever its heartbeat).

    Example:
        >>> store = ResultsStore(tmp / "results.db")                              # doctest: +SKIP
        >>> if store.claim(rec):                                                  # doctest: +SKIP
        ...     for epoch in range(epochs):
        ...         store.log_epoch(rec.run_id, epoch, {"test_acc": 0.98})
        ...     store.finish(rec.run_id, {"best_test_acc": 0.98})
    """

    def __init__(self, path: str | os.PathLike, *, busy_timeout: float = 60.0, stale_after: float = 3600.0):
        if busy_timeout <= 0:
            raise ValueError(f"busy_timeout must be > 0 seconds, got {busy_timeout}")
        if stale_after <= 0:
            raise ValueError(f"stale_after must be > 0 seconds, got {stale_after}")
        self.path = Path(path).expanduser().resolve()
        self.busy_timeout = float(busy_timeout)
        self.stale_after = float(stale_after)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    # -- plumbing ---------------------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    def __getstate__(self) -> dict:  # picklable for multiprocessing: the connection stays behind
        return {"path": self.path, "busy_timeout": self.busy_timeout, "stale_after": self.stale_after}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        if conn is not None:  # inherited through fork: never use it, never close it
            _INHERITED.append(conn)
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None, check_same_thread=True)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        local.conn, local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's connection (a later call reopens one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def _write(self):
        """One write transaction holding the write lock from its first statement (read-decide-write is atomic)."""
        conn = self._conn()
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as e:  # busy beyond the handler (rare in WAL): retry until the deadline
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError(
                        f"results database {self.path} stayed locked for {self.busy_timeout:.0f} s: {e}"
                    ) from e
                time.sleep(0.05)
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
            raise

    def _init_schema(self) -> None:
        try:
            self._create_schema()
        except sqlite3.DatabaseError as error:
            raise sqlite3.DatabaseError(f"results database {self.path}: {error}") from error

    def _create_schema(self) -> None:
        conn = self._conn()
        deadline = time.monotonic() + self.busy_timeout
        while True:  # several processes may create the same new file at once
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as e:
                if time.monotonic() > deadline or ("locked" not in str(e) and "busy" not in str(e)):
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise RuntimeError(f"results database {self.path}: could not switch to WAL mode (got {mode!r})")
        with self._write() as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:  # never add our tables to somebody else's database
                raise sqlite3.DatabaseError(f"not an encouraging results database (it has tables {sorted(tables)})")
            # one statement at a time: sqlite3's executescript() would COMMIT our transaction first
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            row = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                c.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"results database {self.path} has schema version {row[0]}, newer than this package's "
                    f"{SCHEMA_VERSION}: upgrade encouraging"
                )

    @staticmethod
    def _run_dict(row: sqlite3.Row) -> dict[str, Any]:
        d = dict(row)
        for k in _JSON_COLUMNS:
            d[k] = json.loads(d[k])
        return d

    def _require(self, c: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = c.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run {run_id!r} in {self.path}: claim() it first")
        return row

    # -- claiming ---------------------------------------------------------------------------------------------------

    def _claim_state(self, row: sqlite3.Row, now: float) -> str:
        """'finished', 'mine' (this process holds it), 'live' (someone else does) or 'free' (failed or stale)."""
        status = row["status"]
        if status == "finished":
            return "finished"
        if status == "failed":
            return "free"
        same_machine = row["host"] == _HOST and row["pid_ns"] == _PID_NS
        if same_machine and row["pid"] == os.getpid():
            return "mine"
        if same_machine and not _pid_alive(row["pid"]):
            return "free"
        if now - row["heartbeat_at"] > self.stale_after:
            return "free"
        return "live"

    def claim(self, rec: RunRecord) -> bool:
        """Reserve ``(rec.config_hash, rec.seed)`` for this process.

        Returns True when this process should run it: the pair is new, its last attempt failed, or its ``running``
        claim is stale (heartbeat older than ``stale_after``, or its process on this machine is dead); also when
        this very process already holds it (a retry). Returns False when it is finished (skip it) or alive in
        another process. A take-over keeps the earlier epochs (a resumed run re-logs and so replaces them), moves
        them to ``rec.run_id`` if the id changed, and stores ``rec``'s fields.

        Raises:
            ValueError: ``rec.run_id`` already names a run with another ``(config_hash, seed)``.
        """
        if not isinstance(rec, RunRecord):
            raise TypeError(f"claim() takes a RunRecord, got {type(rec).__name__}")
        now = time.time()
        fields = {
            "recipe": rec.recipe,
            "task": rec.task,
            "dataset": rec.dataset,
            "model": rec.model,
            "loss": rec.loss,
            "loss_label": rec.loss_label,
            "config": _to_json(rec.config, "RunRecord.config"),
            "loss_params": _to_json(rec.loss_params, "RunRecord.loss_params"),
            "test_note": rec.test_note,
            "versions": _to_json(rec.versions, "RunRecord.versions"),
            "git_commit": rec.git_commit,
            "hardware": rec.hardware,
            "run_dir": rec.run_dir,
            "status": "running",
            "host": _HOST,
            "pid_ns": _PID_NS,
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "finished_at": None,
            "error": None,
        }
        with self._write() as c:
            same_id = c.execute("SELECT config_hash, seed FROM runs WHERE run_id = ?", (rec.run_id,)).fetchone()
            if same_id is not None and (same_id["config_hash"], same_id["seed"]) != (rec.config_hash, rec.seed):
                raise ValueError(
                    f"run_id {rec.run_id!r} already names the run with config_hash={same_id['config_hash']!r}, "
                    f"seed={same_id['seed']}; got config_hash={rec.config_hash!r}, seed={rec.seed}"
                )
            row = c.execute(
                "SELECT * FROM runs WHERE config_hash = ? AND seed = ?", (rec.config_hash, rec.seed)
            ).fetchone()
            if row is None:
                cols = {"run_id": rec.run_id, "seed": rec.seed, "config_hash": rec.config_hash, **fields}
                cols.update(attempts=1, created_at=now)
                names = ", ".join(cols)
                marks = ", ".join("?" * len(cols))
                c.execute(f"INSERT INTO runs ({names}) VALUES ({marks})", tuple(cols.values()))
                return True
            state = self._claim_state(row, now)
            if state in ("finished", "live"):
                return False
            if row["run_id"] != rec.run_id:  # ON UPDATE CASCADE moves its epochs, final metrics and rows along
                c.execute("UPDATE runs SET run_id = ? WHERE run_id = ?", (rec.run_id, row["run_id"]))
            sets = ", ".join(f"{k} = ?" for k in fields)
            attempts = row["attempts"] + (0 if state == "mine" else 1)
            c.execute(
                f"UPDATE runs SET {sets}, attempts = ? WHERE run_id = ?",
                (*fields.values(), attempts, rec.run_id),
            )
            return True

    def heartbeat(self, run_id: str) -> bool:
        """Mark a ``running`` run alive, held by this process. False when it is not running (finished, failed)."""
        with self._write() as c:
            cur = c.execute(
                "UPDATE runs SET heartbeat_at = ?, host = ?, pid_ns = ?, pid = ? "
                "WHERE run_id = ? AND status = 'running'",
                (time.time(), _HOST, _PID_NS, os.getpid(), run_id),
            )
            if cur.rowcount == 0:
                self._require(c, run_id)
                return False
            return True

    # -- logging ----------------------------------------------------------------------------------------------------

    def log_epoch(self, run_id: str, epoch: int, metrics: Mapping[str, float]) -> None:
        """Store one epoch's metrics; logging an epoch again (after a resume) replaces all of that epoch's values.

        Also counts as a heartbeat for a running run.
        """
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        items = _metrics(metrics, "log_epoch metrics")
        with self._write() as c:
            self._require(c, run_id)
            c.execute("DELETE FROM epochs WHERE run_id = ? AND epoch = ?", (run_id, int(epoch)))
            c.executemany(
                "INSERT INTO epochs (run_id, epoch, name, value) VALUES (?, ?, ?, ?)",
                [(run_id, int(epoch), k, v) for k, v in items],
            )
            c.execute("UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'", (time.time(), run_id))

    def clear_epochs(self, run_id: str, from_epoch: int = 0) -> int:
        """Delete the epochs ``>= from_epoch`` of a run (e.g. before a restart from scratch); returns how many rows."""
        with self._write() as c:
            self._require(c, run_id)
            return c.execute("DELETE FROM epochs WHERE run_id = ? AND epoch >= ?", (run_id, int(from_epoch))).rowcount

    def finish(self, run_id: str, final: Mapping[str, float]) -> None:
        """Mark a run finished with its final metrics (numbers, or short strings); replaces earlier final metrics."""
        items = _metrics(final, "finish metrics", allow_text=True)
        now = time.time()
        with self._write() as c:
            self._require(c, run_id)
            c.execute("DELETE FROM final WHERE run_id = ?", (run_id,))
            c.executemany(
                "INSERT INTO final (run_id, name, value) VALUES (?, ?, ?)", [(run_id, k, v) for k, v in items]
            )
            c.execute(
                "UPDATE runs SET status = 'finished', finished_at = ?, heartbeat_at = ?, error = NULL WHERE run_id = ?",
                (now, now, run_id),
            )

    def fail(self, run_id: str, error: str) -> None:
        """Mark a run failed with its error text; a later :meth:`claim` of the same pair runs it again."""
        now = time.time()
        with self._write() as c:
            self._require(c, run_id)
            c.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, heartbeat_at = ?, error = ? WHERE run_id = ?",
                (now, now, str(error)[:_MAX_TEXT], run_id),
            )

    def add_rows(self, run_id: str, kind: str, rows: Iterable[Mapping[str, Any]], *, replace: bool = False) -> int:
        """Store flat rows of a later analysis or evaluation (``kind`` = ``"ood"``, ``"margins"``, …) for a run.

        Values must be numbers, short strings, booleans or None. Rows are appended; with ``replace=True`` the run's
        earlier rows of this ``kind`` are deleted in the same transaction (re-running an evaluation). Returns the
        number of rows written.
        """
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"kind must be a non-empty string, got {kind!r}")
        payload = []
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"add_rows: row {i} must be a dict, got {type(row).__name__}")
            clean = {}
            for k, v in row.items():
                if not isinstance(k, str):
                    raise TypeError(f"add_rows: row {i} has a non-string key {k!r}")
                if v is None or isinstance(v, (bool, str)):
                    clean[k] = v if not isinstance(v, str) else v[:_MAX_TEXT]
                else:
                    x = _number(k, v)
                    clean[k] = int(v) if isinstance(v, int) else (math.nan if x is None else x)
            payload.append(json.dumps(clean, allow_nan=True))
        now = time.time()
        with self._write() as c:
            self._require(c, run_id)
            if replace:
                c.execute("DELETE FROM rows WHERE run_id = ? AND kind = ?", (run_id, kind))
            c.executemany(
                "INSERT INTO rows (run_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
                [(run_id, kind, p, now) for p in payload],
            )
        return len(payload)

    def set_loss_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Replace the loss parameters a run recorded (a layer that knows the losses re-records old runs)."""
        with self._write() as c:
            self._require(c, run_id)
            text = _to_json(dict(params), "loss_params")
            c.execute("UPDATE runs SET loss_params = ? WHERE run_id = ?", (text, run_id))

    def meta(self, key: str) -> str | None:
        """A value of the ``meta`` table (None when unset)."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value)))

    def delete(self, run_id: str) -> bool:
        """Remove a run with its epochs, final metrics and rows. True when it existed."""
        with self._write() as c:
            return c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

    # -- reading ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _where(filters: Mapping[str, Any], prefix: str = "") -> tuple[str, list]:
        clauses, args = [], []
        for key, value in filters.items():
            if key not in RUN_FILTERS:
                raise ValueError(f"unknown filter {key!r}; valid: {', '.join(RUN_FILTERS)}")
            if value is None:
                continue
            if isinstance(value, (list, tuple, set, frozenset)):
                value = list(value)
                clauses.append(f"{prefix}{key} IN ({', '.join('?' * len(value))})")
                args.extend(value)
            else:
                clauses.append(f"{prefix}{key} = ?")
                args.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", args

    def runs(self, **filters: Any) -> list[dict[str, Any]]:
        """Runs as dicts (every column; ``config``, ``loss_params`` and ``versions`` parsed), sorted by recipe,
        dataset, model, loss, label and seed. Filters: any of :data:`RUN_FILTERS`, a value or a list of values."""
        where, args = self._where(filters)
        rows = self._conn().execute(
            f"SELECT * FROM runs{where} ORDER BY recipe, dataset, model, loss, loss_label, seed, run_id", args
        )
        return [self._run_dict(r) for r in rows.fetchall()]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run as a dict (see :meth:`runs`); KeyError when absent."""
        return self._run_dict(self._require(self._conn(), run_id))

    def is_finished(self, config_hash: str, seed: int) -> bool:
        """True when ``(config_hash, seed)`` has a finished run."""
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM runs WHERE config_hash = ? AND seed = ? AND status = 'finished'",
                (config_hash, int(seed)),
            )
            .fetchone()
        )
        return row is not None

    def epochs(self, run_id: str) -> list[dict[str, float]]:
        """One dict per logged epoch, in epoch order: ``{"epoch": e, <metric>: value, …}``."""
        return self.epochs_many([run_id]).get(run_id, [])

    def epochs_many(self, run_ids: Iterable[str] | None = None) -> dict[str, list[dict[str, float]]]:
        """:meth:`epochs` for many runs in one query (all runs when ``run_ids`` is None)."""
        conn = self._conn()
        if run_ids is None:
            rows = conn.execute("SELECT run_id, epoch, name, value FROM epochs").fetchall()
        else:
            ids, rows = list(dict.fromkeys(run_ids)), []
            for i in range(0, len(ids), 500):  # stay below SQLite's limit on bound parameters
                chunk = ids[i : i + 500]
                rows += conn.execute(
                    f"SELECT run_id, epoch, name, value FROM epochs WHERE run_id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        out: dict[str, dict[int, dict[str, float]]] = {}
        for run_id, epoch, name, value in rows:
            rec = out.setdefault(run_id, {}).setdefault(epoch, {"epoch": epoch})
            rec[name] = math.nan if value is None else value
        return {rid: [eps[e] for e in sorted(eps)] for rid, eps in out.items()}

    def final(self, run_id: str) -> dict[str, Any]:
        """The final metrics of a run (``{}`` before :meth:`finish`)."""
        return self.final_many([run_id]).get(run_id, {})

    def final_many(self, run_ids: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """:meth:`final` for many runs in one query (all runs when ``run_ids`` is None)."""
        conn = self._conn()
        rows = conn.execute("SELECT run_id, name, value FROM final ORDER BY run_id, name").fetchall()
        wanted = None if run_ids is None else set(run_ids)
        out: dict[str, dict[str, Any]] = {}
        for run_id, name, value in rows:
            if wanted is None or run_id in wanted:
                out.setdefault(run_id, {})[name] = math.nan if value is None else value
        return out

    def rows(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        """Rows of one ``kind`` stored with :meth:`add_rows`, each with its run's context.

        Every dict has the row's own values, plus ``run_id``, ``recipe``, ``task``, ``dataset``, ``model``, ``loss``,
        ``loss_label`` and ``seed`` of its run; where the row has a key of the same name, the row's value stays and
        the run's is under ``run_<key>``. Filters on :data:`RUN_FILTERS` select runs; any other key filters on the
        rows' own values (a value or a list of values).
        """
        run_filters = {k: v for k, v in filters.items() if k in RUN_FILTERS}
        row_filters = {k: v for k, v in filters.items() if k not in RUN_FILTERS}
        where, args = self._where(run_filters, prefix="r.")
        where = (where + " AND" if where else " WHERE") + " x.kind = ?"
        cur = self._conn().execute(
            "SELECT x.data, r.run_id, r.recipe, r.task, r.dataset, r.model, r.loss, r.loss_label, r.seed "
            f"FROM rows x JOIN runs r ON r.run_id = x.run_id{where} ORDER BY x.id",
            [*args, kind],
        )
        out = []
        for rec in cur.fetchall():
            row = json.loads(rec["data"])
            ok = True
            for k, v in row_filters.items():
                allowed = list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]
                if row.get(k) not in allowed:
                    ok = False
                    break
            if not ok:
                continue
            for k in ("run_id", "recipe", "task", "dataset", "model", "loss", "loss_label", "seed"):
                if k in row:
                    row[f"run_{k}"] = rec[k]
                else:
                    row[k] = rec[k]
            out.append(row)
        return out

    def run_rows(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """A run's own :meth:`add_rows` rows by ``kind``, in the order they were added, without run context."""
        out: dict[str, list[dict[str, Any]]] = {}
        cur = self._conn().execute("SELECT kind, data FROM rows WHERE run_id = ? ORDER BY id", (run_id,))
        for kind, data in cur.fetchall():
            out.setdefault(kind, []).append(json.loads(data))
        return out

    def import_run(self, run: Mapping[str, Any], epochs: Iterable[Mapping[str, Any]], final: Mapping[str, Any],
                   rows: Mapping[str, Iterable[Mapping[str, Any]]]) -> None:
        """Store a finished run read back from elsewhere (an exported record), in one transaction: ``run`` holds
        the columns of :meth:`runs` (at least the identifying ones), ``epochs`` the dicts of :meth:`epochs`,
        ``final`` and ``rows`` (by kind) as :meth:`final` and :meth:`run_rows` give them. A run with the same id or
        the same ``(config_hash, seed)`` is replaced."""
        now = time.time()
        cols = {
            "run_id": run["run_id"], "recipe": run["recipe"], "task": run["task"], "dataset": run["dataset"],
            "model": run["model"], "loss": run["loss"], "loss_label": run["loss_label"], "seed": int(run["seed"]),
            "config_hash": run["config_hash"], "config": _to_json(run.get("config", {}), "config"),
            "loss_params": _to_json(run.get("loss_params", {}), "loss_params"), "test_note": run.get("test_note"),
            "versions": _to_json(run.get("versions", {}), "versions"), "git_commit": run.get("git_commit"),
            "hardware": run.get("hardware", ""), "run_dir": run.get("run_dir", ""), "status": "finished",
            "host": "", "pid_ns": "", "pid": 0, "attempts": int(run.get("attempts", 1)),
            "created_at": run.get("created_at", now), "started_at": run.get("started_at", now),
            "heartbeat_at": run.get("finished_at", now), "finished_at": run.get("finished_at", now), "error": None,
        }
        epoch_items = [(int(e["epoch"]), _metrics({k: v for k, v in e.items() if k != "epoch"}, "epoch metrics"))
                       for e in epochs]
        final_items = _metrics(final, "final metrics", allow_text=True)
        with self._write() as c:
            c.execute("DELETE FROM runs WHERE run_id = ? OR (config_hash = ? AND seed = ?)",
                      (cols["run_id"], cols["config_hash"], cols["seed"]))
            c.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                      tuple(cols.values()))
            c.executemany("INSERT INTO epochs (run_id, epoch, name, value) VALUES (?, ?, ?, ?)",
                          [(cols["run_id"], e, k, v) for e, items in epoch_items for k, v in items])
            c.executemany("INSERT INTO final (run_id, name, value) VALUES (?, ?, ?)",
                          [(cols["run_id"], k, v) for k, v in final_items])
            c.executemany("INSERT INTO rows (run_id, kind, data, created_at) VALUES (?, ?, ?, ?)",
                          [(cols["run_id"], kind, json.dumps(dict(r), allow_nan=True), now)
                           for kind, kind_rows in rows.items() for r in kind_rows])

    def counts(self) -> dict[str, int]:
        """Number of runs per status (every status present, 0 when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn().execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall():
            out[status] = n
        return out

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``"ok"`` for a sound file."""
        return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])
