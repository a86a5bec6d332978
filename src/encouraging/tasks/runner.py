"""Run one (config, seed), or a grid of losses x seeds, recording everything in the results database.

Each run gets a directory ``<out>/<recipe>/<loss>/seed<k>-<hash>/`` with the resolved ``config.yaml``, the
per-epoch ``metrics.jsonl``, ``final.json`` and the atomic ``checkpoint.pt``. A (config, seed) that the database
marks finished is skipped; one that was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..engine.config import Config, config_hash, save_config
from ..engine.criteria import build_criterion, build_schedule, canonical, loss_label, parse_loss_spec
from ..engine.distributed import broadcast_flag, init_world, shutdown
from ..engine.runtime import seed_everything, select_device, set_threads
from ..engine.trainer import Trainer
from ..results import ResultsStore, RunRecord
from .loading import run_id_for
from .registry import get_task


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def run_dir_for(cfg: Config, out_dir: str | Path) -> Path:
    return (Path(out_dir) / _slug(cfg.name) / _slug(loss_label(cfg.loss))
            / f"seed{cfg.train.seed}-{config_hash(cfg)}")


def versions() -> dict[str, str]:
    from .. import __version__

    out = {"encouraging": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    return out


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[3]
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


def run_record(cfg: Config, notes: dict[str, Any], run_dir: Path, hardware_text: str) -> RunRecord:
    """The results-database record of a (config, seed) trained in ``run_dir``."""
    return RunRecord(
        run_id=run_id_for(cfg), recipe=cfg.name, task=cfg.task, dataset=cfg.data.dataset, model=cfg.model.name,
        loss=cfg.loss.name, loss_label=loss_label(cfg.loss), seed=cfg.train.seed, config_hash=config_hash(cfg),
        config={**dataclasses.asdict(cfg), "notes": notes}, versions=versions(), git_commit=git_commit(),
        hardware=hardware_text, run_dir=str(run_dir),
    )


def run(cfg: Config, *, out_dir: str | Path = "runs", db: str | Path | None = "results.db", resume: bool = True,
        quiet: bool = False) -> dict[str, Any] | None:
    """Train one config (one seed). Returns the final metrics, or None when the database says it is done."""
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
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    prepared = get_task(cfg.task).prepare(cfg, device, world)
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

    trainer = Trainer(cfg, prepared.model, build_criterion(cfg.loss), prepared.train, prepared.test, device=device,
                      world=world, schedule=build_schedule(cfg.loss), run_dir=run_dir if world.main else None,
                      on_epoch=on_epoch, quiet=quiet, title=f"{cfg.name} {label} s{cfg.train.seed}")
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
