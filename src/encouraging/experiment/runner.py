"""Run one (config, seed), or a grid of losses x seeds, recording everything in the results database.

Each run gets a directory ``<out>/<recipe>/<loss>/seed<k>-<hash>/`` with the resolved ``config.yaml``, the
per-epoch ``metrics.jsonl``, ``final.json`` and the atomic ``checkpoint.pt``. A (config, seed) that the database
marks finished is skipped; one that was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..engine.config import Config, config_hash, save_config
from ..engine.criteria import build_schedule, canonical, loss_label, parse_loss_spec
from ..engine.distributed import broadcast_flag, init_world, shutdown
from ..engine.runtime import seed_everything, select_device, set_threads
from ..engine.task import build_task
from ..engine.trainer import Trainer
from ..plugins import load_plugins
from ..results import ResultsStore
from .provenance import hardware, run_dir_for, run_record


def run(cfg: Config, *, out_dir: str | Path = "runs", db: str | Path | None = "results.db", resume: bool = True,
        quiet: bool = False) -> dict[str, Any] | None:
    """Train one config (one seed). Returns the final metrics, or None when the database says it is done."""
    load_plugins()
    cfg = dataclasses.replace(cfg, loss=canonical(cfg.loss))
    set_threads(cfg.train.threads)
    device = select_device(cfg.train.device)
    world = init_world(device)
    try:
        return _run(cfg, device, world, Path(out_dir), db, resume, quiet)
    finally:
        shutdown(world)


def _proceed(ok: bool, world, cfg: Config, label: str, db) -> bool:
    """Rank 0's decision to run, shared with every rank; a skip is reported once."""
    ok = broadcast_flag(ok, world)
    if not ok and world.main:
        print(f"skip {cfg.name} / {label} / seed {cfg.train.seed}: finished or running elsewhere ({db})")
    return ok


def _run(cfg: Config, device: torch.device, world, out_dir: Path, db, resume: bool, quiet: bool):
    run_dir = run_dir_for(cfg, out_dir)
    chash, label = config_hash(cfg), loss_label(cfg.loss)
    store = ResultsStore(db) if db is not None and world.main else None

    finished = store is not None and store.is_finished(chash, cfg.train.seed)  # skip before loading any data
    if not _proceed(not finished, world, cfg, label, db):
        return None
    task = build_task(cfg, device, world)
    problems = task.check()
    if problems:
        raise ValueError("; ".join(problems))
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    prepared = task.setup()
    if cfg.train.patience > 0 and prepared.val is None:
        raise ValueError(f"train.patience={cfg.train.patience} needs a validation split; task {cfg.task!r} has none "
                         "with this config (image: set data.val_fraction)")
    record = run_record(cfg, prepared.notes, run_dir, f"{hardware(device)}, world {world.size}")
    if not _proceed(store.claim(record) if store is not None else True, world, cfg, label, db):
        return None
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "notes.json").write_text(json.dumps(prepared.notes, indent=2, default=str))

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if store is not None:
            store.log_epoch(record.run_id, epoch, metrics)
            store.heartbeat(record.run_id)

    trainer = Trainer(task, prepared, task.build_criterion(prepared.stats), schedule=build_schedule(cfg.loss),
                      run_dir=run_dir if world.main else None, on_epoch=on_epoch, quiet=quiet,
                      title=f"{cfg.name} {label} s{cfg.train.seed}")
    try:
        if resume and trainer.resume() and world.main:
            # the per-epoch log restarts from the checkpoint's history (drops epochs that will run again)
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in trainer.history))
            if not quiet:
                print(f"resumed {run_dir} at epoch {trainer.start_epoch}")
        elif world.main:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        final = trainer.fit()
    except BaseException as error:
        if store is not None:
            store.fail(record.run_id, f"{type(error).__name__}: {error}")
        raise
    if world.main:
        (run_dir / "final.json").write_text(json.dumps(final, indent=2))
        if store is not None:
            store.finish(record.run_id, final)
    return final


def grid(cfg: Config, losses: list[str], seeds: list[int], **kwargs: Any) -> list[tuple[Config, Any]]:
    """Run every (loss, seed) of a recipe: the same data, model and budget for each loss."""
    results = []
    for spec in losses:
        loss_cfg = parse_loss_spec(spec, cfg.loss)
        for seed in seeds:
            one = dataclasses.replace(cfg, loss=loss_cfg, train=dataclasses.replace(cfg.train, seed=seed))
            results.append((one, run(one, **kwargs)))
    return results
