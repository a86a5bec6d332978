"""Run one (config, seed), or a grid of losses x seeds, recording everything in the results database.

Each run gets a directory ``<out>/<recipe>/<loss>/seed<k>-<hash>/`` with the resolved ``config.yaml``, the
per-epoch ``metrics.jsonl``, ``final.json``, the atomic ``checkpoint.pt`` and the files of the trackers that
``train.trackers`` names (:mod:`encouraging.engine.trackers`). A (config, seed) that the database marks finished is
skipped; one that was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from ..engine.checks import config_problems
from ..engine.config import Config, config_hash, save_config, to_dict
from ..engine.criteria import build_schedule, canonical, loss_label, parse_loss_spec
from ..engine.distributed import broadcast_flag, init_world, shutdown
from ..engine.runtime import seed_everything, select_device, set_threads
from ..engine.task import build_task, get_task
from ..engine.trackers import RunInfo, Trackers
from ..engine.trainer import Trainer
from ..plugins import load_plugins
from ..results import ResultsStore
from .provenance import hardware, run_dir_for, run_id_for, run_record


class ConfigError(ValueError):
    """A config, or a grid of them, that cannot run: the message lists every problem, each naming its field."""


def check_configs(configs: list[Config], problems: list[str] | None = None) -> None:
    """Raise :class:`ConfigError` with every problem of ``configs`` (and ``problems`` found earlier), or return."""
    found = list(problems or [])
    for cfg in configs:
        found += [p for p in config_problems(cfg) if p not in found]
    if found:
        raise ConfigError(f"{len(found)} problem{'s' if len(found) > 1 else ''}: " + "; ".join(found))


def run(cfg: Config, *, out_dir: str | Path = "runs", db: str | Path | None = "results.db", resume: bool = True,
        quiet: bool = False, position: str = "") -> dict[str, Any] | None:
    """Train one config (one seed). Returns the final metrics, or None when the database says it is done.

    The config is checked first (:func:`check_configs`); ``position`` (``"run 3/8"``) prefixes the run's start line.
    """
    load_plugins()
    cfg = dataclasses.replace(cfg, loss=canonical(cfg.loss))
    check_configs([cfg])
    *first, _ = _with_upstream([cfg])
    for one in first:  # runs this one builds on (cRT's stage 1), each skipped when already finished
        _launch(one, out_dir, db, resume, quiet, f"{position + ', ' if position else ''}needed first")
    return _launch(cfg, out_dir, db, resume, quiet, position)


def upstream(cfg: Config) -> dict[str, Config]:
    """The canonical configs of the runs ``cfg`` builds on (:meth:`Task.upstream`), by role."""
    return {role: dataclasses.replace(up, loss=canonical(up.loss))
            for role, up in get_task(cfg.task).upstream(cfg).items()}


def _with_upstream(configs: list[Config]) -> list[Config]:
    """``configs`` with the runs each builds on (:meth:`Task.upstream`, recursively) placed before it, once each.

    The upstream configs are checked here; ``configs`` must have been checked (their upstream is read from them).
    """
    ordered: dict[str, Config] = {}

    def add(cfg: Config) -> None:
        ups = list(upstream(cfg).values())
        check_configs([up for up in ups if run_id_for(up) not in ordered])
        for up in ups:
            add(up)
        ordered.setdefault(run_id_for(cfg), cfg)

    for cfg in configs:
        add(cfg)
    return list(ordered.values())


def _upstream_dirs(cfg: Config, out_dir: Path, store: ResultsStore | None) -> dict[str, Path]:
    """The run directory of each run ``cfg`` builds on; a ConfigError names one that is unfinished or diverged."""
    dirs = {}
    for role, up in upstream(cfg).items():
        where, name = run_dir_for(up, out_dir), f"{up.name} / {loss_label(up.loss)} / seed {up.train.seed}"
        if store is not None:
            done = store.is_finished(config_hash(up), up.train.seed)
            if done and "diverged_epoch" in store.final(run_id_for(up)):
                raise ConfigError(f"{role}: the run {name} diverged, so there is no model to build on ({where})")
        else:
            done = (where / "final.json").is_file()
        if not done or not (where / "checkpoint.pt").is_file():
            raise ConfigError(f"{role}: the run {name} is not finished (expected at {where}); train it first, with "
                              "the same --out and database")
        dirs[role] = where
    return dirs


def _launch(cfg: Config, out_dir: str | Path, db, resume: bool, quiet: bool, position: str) -> dict[str, Any] | None:
    """Run a checked, canonical config on its device (and process group)."""
    set_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    world = init_world(device)
    try:
        return _run(cfg, device, world, Path(out_dir), db, resume, quiet, position)
    finally:
        shutdown(world)


def _proceed(ok: bool, world, cfg: Config, label: str, db) -> bool:
    """Rank 0's decision to run, shared with every rank; a skip is reported once."""
    ok = broadcast_flag(ok, world)
    if not ok and world.main:
        print(f"skip {cfg.name} / {label} / seed {cfg.train.seed}: finished or running elsewhere ({db})", flush=True)
    return ok


def _run(cfg: Config, device: torch.device, world, out_dir: Path, db, resume: bool, quiet: bool, position: str):
    run_dir = run_dir_for(cfg, out_dir)
    chash, label = config_hash(cfg), loss_label(cfg.loss)
    store = ResultsStore(db) if db is not None and world.main else None
    say = print if world.main and not quiet else (lambda *a, **k: None)

    finished = store is not None and store.is_finished(chash, cfg.train.seed)  # skip before loading any data
    if not _proceed(not finished, world, cfg, label, db):
        return None
    say(f"{position + ': ' if position else ''}{cfg.name} / {label} / seed {cfg.train.seed}", flush=True)
    task = build_task(cfg, device, world)
    task.upstream_dirs = _upstream_dirs(cfg, out_dir, store)
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    start = time.perf_counter()
    say(f"  loading {cfg.task} data {cfg.data.dataset!r} and building model {cfg.model.name!r}", flush=True)
    prepared = task.setup()
    if task.upstream_dirs:  # what it built on, by database id and directory (load_run finds them again)
        prepared.notes["upstream"] = {role: {"run_id": run_id_for(up), "run_dir": str(task.upstream_dirs[role])}
                                      for role, up in upstream(cfg).items()}
    say(f"  ready in {time.perf_counter() - start:.1f} s", flush=True)
    if cfg.train.patience > 0 and prepared.val is None:
        raise ConfigError(f"train.patience={cfg.train.patience} needs a validation split; task {cfg.task!r} has "
                          "none with this config (image: set data.val_fraction)")
    record = run_record(cfg, prepared.notes, run_dir, f"{hardware(device)}, world {world.size}")
    if not _proceed(store.claim(record) if store is not None else True, world, cfg, label, db):
        return None
    try:  # from the claim on, any failure marks the run failed (with its error) instead of leaving it running
        title = f"{position.split(' (')[0] + ': ' if position else ''}{label} seed {cfg.train.seed}"
        final = _train(cfg, task, prepared, run_dir, store, record.run_id, world, resume, quiet, title)
    except BaseException as error:
        if store is not None:
            store.fail(record.run_id, f"{type(error).__name__}: {error}")
        raise
    return final


def _train(cfg: Config, task, prepared, run_dir: Path, store, run_id: str, world, resume: bool, quiet: bool,
           title: str) -> dict[str, Any]:
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "notes.json").write_text(json.dumps(prepared.notes, indent=2, default=str))
    trackers = Trackers(cfg.train.trackers if world.main else [])

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if store is not None:
            store.log_epoch(run_id, epoch, metrics)
            store.heartbeat(run_id)
        trackers.log(epoch, metrics)  # after the database: a tracker's failure never costs the record

    trainer = Trainer(task, prepared, task.build_criterion(prepared.stats), schedule=build_schedule(cfg.loss),
                      run_dir=run_dir if world.main else None, on_epoch=on_epoch, quiet=quiet, title=title)
    if resume and trainer.resume() and world.main:
        # the per-epoch log restarts from the checkpoint's history (drops epochs that will run again)
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in trainer.history))
        if not quiet:
            print(f"resumed {run_dir} at epoch {trainer.start_epoch}")
    elif world.main:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    trackers.start(RunInfo(run_id, run_dir, cfg.name, loss_label(cfg.loss), cfg.train.seed, to_dict(cfg),
                           trainer.start_epoch))
    final = None
    try:
        final = trainer.fit()
    finally:
        trackers.finish(final)  # None: the run failed
    if not final:
        raise RuntimeError("no epoch was trained, so there is no result to store")
    if world.main:
        (run_dir / "final.json").write_text(json.dumps(final, indent=2))
        if store is not None:
            store.finish(run_id, final)
        if "diverged_epoch" in final:
            print(f"  diverged: the training loss was not finite in epoch {final['diverged_epoch']}; stored as "
                  "diverged (reports count it and leave it out of every mean)", flush=True)
    return final


def grid(cfg: Config, losses: list[str], seeds: list[int], *, out_dir: str | Path = "runs",
         db: str | Path | None = "results.db", resume: bool = True, quiet: bool = False) -> list[tuple[Config, Any]]:
    """Run every (loss, seed) of a recipe: the same data, model and budget for each loss.

    Every loss spec and every config is checked before the first run starts: one :class:`ConfigError` lists all
    problems. Each run's start line says its place in the grid and, after the first, how long the rest should take.
    """
    configs = grid_configs(cfg, losses, seeds)
    results, start, ran = [], time.perf_counter(), 0
    for i, one in enumerate(configs):
        position = f"run {i + 1}/{len(configs)}"
        if ran:
            per_run = (time.perf_counter() - start) / ran
            position += f" (about {_duration(per_run * (len(configs) - i))} left in the grid)"
        final = _launch(one, out_dir, db, resume, quiet, position)  # checked above, with the whole grid
        ran += final is not None
        if final is None and not ran:  # skipped runs do not count towards the estimate
            start = time.perf_counter()
        results.append((one, final))
    return results


def grid_configs(cfg: Config, losses: list[str], seeds: list[int]) -> list[Config]:
    """The checked configs of every (loss, seed) of a recipe, each placed after the runs it builds on.

    Raises :class:`ConfigError` listing every problem of the loss specs and configs.
    """
    configs, problems = [], []
    if not seeds:
        problems.append("the grid needs at least one seed (--seeds >= 1)")
    for spec in losses:
        try:
            loss_cfg = parse_loss_spec(spec, cfg.loss)
        except ValueError as error:
            problems.append(f"loss spec {spec!r}: {error}")
            continue
        configs += [dataclasses.replace(cfg, loss=loss_cfg, train=dataclasses.replace(cfg.train, seed=seed))
                    for seed in seeds]
    if not losses:
        problems.append("the grid needs at least one loss")
    # the seed is the only field a loss's runs differ in, and nothing checks it: one config per loss is checked
    check_configs(configs[::len(seeds)] if seeds else [], problems)
    return _with_upstream(configs)  # a run's stage 1 first, in the same grid


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min {secs} s"
