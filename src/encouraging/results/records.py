"""Result records: one JSON text file per finished run, the form in which results are committed and checked.

A results database is a working file (binary, write-ahead log, claims tied to this machine's processes). A record
is what a reader can check and diff: the resolved config and its hash, the seed, code commit, package versions and
hardware, every epoch's metrics (one list per metric, ``null`` for an epoch that did not log it), the final metrics
and the rows of later evaluations and analyses. :func:`export_records` writes them, :func:`records_store` reads
files or folders of them back into a database, so ``encouraging report`` and the docs tables work on either.

JSON keeps floats exactly (shortest round-trip repr); NaN is written as ``NaN``, which Python's json reads.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .store import ResultsStore

__all__ = ["RECORD_VERSION", "export_records", "import_record", "read_record", "record_paths", "records_store",
           "run_record", "write_record"]

RECORD_VERSION = 1
#: the run columns a record keeps: the machine-local ones (host, pid, run_dir, heartbeat) mean nothing elsewhere
RUN_FIELDS = ("run_id", "recipe", "task", "dataset", "model", "loss", "loss_label", "seed", "config_hash", "config",
              "loss_params", "test_note", "versions", "git_commit", "hardware", "attempts", "created_at",
              "started_at", "finished_at")


def run_record(store: ResultsStore, run_id: str) -> dict[str, Any]:
    """The record of one run of ``store`` (see the module docstring)."""
    run = store.run(run_id)
    epochs = store.epochs(run_id)
    names = sorted({k for e in epochs for k in e if k != "epoch"})
    return {
        "record_version": RECORD_VERSION,
        "run": {k: run[k] for k in RUN_FIELDS},
        "epochs": {"epoch": [e["epoch"] for e in epochs], **{k: [e.get(k) for e in epochs] for k in names}},
        "final": store.final(run_id),
        "rows": store.run_rows(run_id),
    }


def _dump(record: Mapping[str, Any]) -> str:
    """Stable text: sorted keys, one line per config entry, final metric and row, and one per metric curve."""

    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, allow_nan=True)

    def block(mapping: Mapping[str, Any], line) -> str:
        inner = ",\n".join(f"  {compact(k)}: {line(v)}" for k, v in sorted(mapping.items()))
        return "{\n" + inner + "\n }" if inner else "{}"

    sections = {
        "record_version": compact(record["record_version"]),
        "run": block(record["run"], compact),
        "epochs": block(record["epochs"], compact),
        "final": block(record["final"], compact),
        "rows": block(record["rows"], lambda rows: "[\n" + ",\n".join(f"   {compact(r)}" for r in rows) + "\n  ]"),
    }
    return "{\n" + ",\n".join(f" {compact(k)}: {v}" for k, v in sections.items()) + "\n}\n"


def export_records(store: ResultsStore | str | os.PathLike, out_dir: str | os.PathLike,
                   **filters: Any) -> list[Path]:
    """Write ``<out_dir>/<run_id>.json`` for every finished run of ``store`` that matches ``filters`` (as
    :meth:`ResultsStore.runs`), each atomically (a killed export leaves whole files only); return the paths."""
    store = store if isinstance(store, ResultsStore) else _existing_store(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [write_record(run_record(store, run["run_id"]), out / f"{run['run_id']}.json")
            for run in store.runs(**{**filters, "status": "finished"})]


def write_record(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``record`` to ``path`` atomically (a killed writer never leaves half a file); return the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_dump(record))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for the half-written file; a record is for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _existing_store(path: str | os.PathLike) -> ResultsStore:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no results database at {path}")
    return ResultsStore(path)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """One record, checked: a ValueError names the file and what is wrong with it."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a result record: invalid JSON ({e})") from None
    if not isinstance(record, dict) or "record_version" not in record:
        raise ValueError(f"{path} is not a result record (no record_version)")
    if record["record_version"] > RECORD_VERSION:
        raise ValueError(f"{path} has record_version {record['record_version']}, newer than this package's "
                         f"{RECORD_VERSION}: upgrade encouraging")
    missing = [k for k in ("run", "epochs", "final", "rows") if k not in record]
    missing += [f"run.{k}" for k in RUN_FIELDS[:9] if k not in record.get("run", {})]
    if missing:
        raise ValueError(f"{path} is not a complete result record: missing {', '.join(missing)}")
    return record


def record_paths(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """The record files named by ``sources``: files, or folders searched recursively for ``*.json``."""
    paths: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = sorted(p for p in source.rglob("*.json") if not p.name.startswith("."))
            if not found:
                raise FileNotFoundError(f"no result records (*.json) under {source}")
            paths += found
        elif source.is_file():
            paths.append(source)
        else:
            raise FileNotFoundError(f"no result records at {source}")
    return paths


def records_store(sources: Iterable[str | os.PathLike], db: str | os.PathLike | None = None) -> ResultsStore:
    """A database holding the records of ``sources`` (files or folders): ``db``, or a fresh temporary file."""
    sources = list(sources)
    paths = record_paths(sources)
    if db is None:  # removed when the process exits
        folder = tempfile.mkdtemp(prefix="encouraging-records-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        db = Path(folder) / "results.db"
    store = ResultsStore(db)
    for path in paths:
        import_record(store, read_record(path))
    store.set_meta("source", ", ".join(str(s) for s in sources) + f" ({len(paths)} records)")
    return store


def import_record(store: ResultsStore, record: Mapping[str, Any]) -> None:
    """Store one record (as :func:`run_record` or :func:`read_record` give it) as a finished run of ``store``,
    replacing the same run; a ``run_dir`` among its run columns is kept."""
    epochs = record["epochs"]
    names = [k for k in epochs if k != "epoch"]
    rows = [{"epoch": e, **{k: epochs[k][i] for k in names if epochs[k][i] is not None}}
            for i, e in enumerate(epochs["epoch"])]
    store.import_run(record["run"], rows, record["final"], record["rows"])


def is_records_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` names records (a folder or a .json file) rather than a database."""
    path = Path(path)
    return path.is_dir() or path.suffix == ".json"
