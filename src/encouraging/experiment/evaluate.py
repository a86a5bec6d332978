"""Evaluate trained runs (``encouraging eval ood|attack``): resolve the runs, evaluate each, store rows, write files.

RUN arguments are run directories (or their ``checkpoint.pt``), or a results database, meaning every finished run
in it (optionally of one ``recipe``). Rows go to ``db`` when given, else to the database of the grid the run
belongs to (``<out>/results.db`` beside ``<out>/<recipe>/<loss>/<seed>``); a run that database does not know is
recorded first. The output folder gets the rows as JSON and the figures, with every run's context in each row.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..engine.adversarial import default_spec
from ..engine.config import load_config
from ..engine.task import get_task, list_tasks
from ..evaluation.attacks import evaluate_attacks, masking_signs, plot_robustness, save_attacks
from ..evaluation.ood import DETECTORS, evaluate_ood, plot_histograms, save_ood
from ..evaluation.ood_metrics import POSITIVES
from ..results import ResultsStore
from .loading import LoadedRun, load_run
from .provenance import run_record


def resolve_runs(items: Iterable[str | os.PathLike], recipe: str | None = None) -> tuple[list[str], str | None]:
    """Run directories from RUN arguments, and the database named among them (None when none was); a database
    means its finished runs that did not diverge."""
    runs, db = [], None
    for item in items:
        if Path(item).suffix == ".db":
            if not Path(item).is_file():
                raise FileNotFoundError(f"no results database at {item}")
            filters = {"status": "finished"} | ({"recipe": recipe} if recipe else {})
            store = ResultsStore(item)
            finished = store.runs(**filters)
            finals = store.final_many([r["run_id"] for r in finished])
            # a diverged run's weights are not a trained model: reports leave it out, and so do evaluations
            found = [r["run_dir"] for r in finished if "diverged_epoch" not in finals.get(r["run_id"], {})]
            if not found:
                raise ValueError(f"no finished runs in {item} (filters: {filters})")
            runs += found
            db = db or str(item)
        else:
            runs.append(str(item))
    if not runs:
        raise ValueError("give at least one run directory or results database")
    return runs, db


def check_evaluation(runs: list[str], kind: str) -> None:
    """Refuse, before any run is loaded, a run whose task's inputs the evaluation ``kind`` cannot read."""
    for path in runs:
        run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
        task = load_config(run_dir / "config.yaml").task
        if kind not in get_task(task).evaluations:
            able = sorted(name for name in list_tasks() if kind in get_task(name).evaluations)
            raise ValueError(f"{'analyze' if kind == 'analyze' else f'eval {kind}'}: {run_dir} is a {task!r} run; "
                             f"{kind} {'reads' if kind == 'analyze' else 'evaluation reads'} the runs of tasks "
                             f"{', '.join(able)} only")


def _grid_database(run: LoadedRun) -> Path | None:
    """The results database of the grid that trained ``run`` (``OUT/results.db`` for ``OUT/recipe/label/seed``)."""
    guess = run.run_dir.parents[2] / "results.db" if len(run.run_dir.parents) > 2 else None
    return guess if guess is not None and guess.is_file() else None


def store_for(run: LoadedRun, db: str | os.PathLike | None) -> ResultsStore | None:
    """``db``, else the run's grid database when it exists. A run ``db`` lacks is copied from its grid database
    (its record as trained: commit, hardware, every epoch); a run without one is recorded from its folder, with its
    epochs from ``metrics.jsonl`` and no commit (the folder does not say which code trained it)."""
    own = _grid_database(run)
    if db is None:
        if own is None:
            return None
        db = own
    store = ResultsStore(db)
    if store.runs(run_id=run.run_id):
        return store
    source = ResultsStore(own) if own is not None and own.resolve() != Path(db).resolve() else None
    if source is not None and source.runs(run_id=run.run_id, status="finished"):
        rid = run.run_id
        store.import_run(source.run(rid), source.epochs(rid), source.final(rid), {})
        return store
    final_file, metrics_file = run.run_dir / "final.json", run.run_dir / "metrics.jsonl"
    record = dataclasses.replace(run_record(run.cfg, run.notes, run.run_dir, "not recorded"), git_commit=None)
    if store.claim(record):
        lines = metrics_file.read_text().splitlines() if metrics_file.is_file() else []
        for epoch in (json.loads(line) for line in lines if line.strip()):
            store.log_epoch(run.run_id, int(epoch.pop("epoch")), epoch)
        final = json.loads(final_file.read_text()) if final_file.is_file() else {}
        store.finish(run.run_id, final or {"epochs_trained": run.epochs_trained})
    return store


def _each_run(runs: list[str], db, device: str, data_root: str | None, quiet: bool,
              evaluate: Callable[[LoadedRun], list[dict[str, Any]]],
              save: Callable[[ResultsStore, str, list[dict]], None]) -> list[dict[str, Any]]:
    """Evaluate and store every run; return its rows with the run's context (loss_label, seed, ...)."""
    out = []
    for path in runs:
        run = load_run(path, device=device, data_root=data_root)
        if not quiet:
            print(f"evaluating {run.cfg.name} / {run.label} / seed {run.seed} ({run.run_dir})", flush=True)
        rows = evaluate(run)
        store = store_for(run, db)
        if store is not None:
            save(store, run.run_id, rows)
        elif not quiet:
            print(f"  no results database for {run.run_dir}: rows only in the output folder")
        context = {"run_id": run.run_id, "recipe": run.cfg.name, "dataset": run.cfg.data.dataset,
                   "model": run.cfg.model.name, "loss_label": run.label, "seed": run.seed}
        out += [{**r, **context} for r in rows]
    return out


def _write_json(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows, indent=1, default=str))


def eval_ood(items: Iterable[str], ood: list[str], *, detectors: list[str] | None = None, positive: str = "in",
             limit: int = 0, recipe: str | None = None, db: str | None = None, out: str | os.PathLike = "ood",
             device: str = "auto", data_root: str | None = None, quiet: bool = False) -> list[dict[str, Any]]:
    """``encouraging eval ood``: rows of :func:`~encouraging.evaluation.ood.evaluate_ood` for each run, stored, plus
    ``<out>/ood_rows.json`` and one score-histogram figure per OOD set. Returns the metric rows."""
    unknown = sorted(set(detectors or ()) - set(DETECTORS))
    if unknown or positive not in POSITIVES or not ood:
        raise ValueError(f"detectors must be among {sorted(DETECTORS)} (got unknown {unknown}), positive one of "
                         f"{POSITIVES} (got {positive!r}), and at least one OOD set (got {ood})")
    runs, named_db = resolve_runs(items, recipe)
    check_evaluation(runs, "ood")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    hists: dict[str, list[dict]] = {}  # run id -> histogram rows

    def evaluate(run: LoadedRun) -> list[dict]:
        rows, hists[run.run_id] = evaluate_ood(run, ood, detectors=detectors, positive=positive,
                                               data_root=data_root, limit=limit)
        return rows

    def save(store: ResultsStore, run_id: str, rows: list[dict]) -> None:
        save_ood(store, run_id, rows, hists[run_id])

    rows = _each_run(runs, db or named_db, device, data_root, quiet, evaluate, save)
    _write_json(folder / "ood_rows.json", rows)
    context = {r["run_id"]: {"loss_label": r["loss_label"], "seed": r["seed"]} for r in rows}
    all_hists = [{**h, **context[run_id]} for run_id, hs in hists.items() for h in hs]
    for name in ood:
        plot_histograms(all_hists, name, folder / f"ood_hist_{Path(name).name}.png")
    return rows


def eval_attacks(items: Iterable[str], attacks: list[str], eps: list[float], *, norm: str = "linf", steps: int = 0,
                 alpha: float = 0.0, limit: int = 0, recipe: str | None = None, db: str | None = None,
                 out: str | os.PathLike = "attacks", device: str = "auto", data_root: str | None = None,
                 quiet: bool = False) -> list[dict[str, Any]]:
    """``encouraging eval attack``: rows of :func:`~encouraging.evaluation.attacks.evaluate_attacks` for each run,
    stored, plus ``<out>/attack_rows.json`` and a robust-accuracy-vs-ε figure per norm. Returns the rows, each with
    the run's gradient-masking signs under ``masking``."""
    if not attacks or not eps:
        raise ValueError(f"give at least one attack and one eps, got attacks={attacks}, eps={eps}")
    for name in attacks:  # check every setting before loading any run
        for e in eps:
            default_spec(name, e, norm=norm, steps=steps, alpha=alpha)
    runs, named_db = resolve_runs(items, recipe)
    check_evaluation(runs, "attack")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)

    def evaluate(run: LoadedRun) -> list[dict]:
        rows = evaluate_attacks(run, attacks, eps, norm=norm, steps=steps, alpha=alpha, limit=limit)
        signs = "; ".join(masking_signs(rows)) or "none"
        return [{**r, "masking": signs} for r in rows]

    rows = _each_run(runs, db or named_db, device, data_root, quiet, evaluate, save_attacks)
    _write_json(folder / "attack_rows.json", rows)
    for n in sorted({r["norm"] for r in rows}):
        plot_robustness(rows, n, folder / f"robustness_{n}.png")
    return rows
