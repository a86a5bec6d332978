"""Open a finished (or interrupted) run for analysis: its config, its trained model and its data.

A run is a directory written by :func:`encouraging.experiment.run` (``config.yaml`` + ``checkpoint.pt``), or the
checkpoint file itself. The config is re-read, the task rebuilds the model and the batch sources exactly as for
training, and the checkpoint's weights are loaded after checking that they belong to that config and seed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine.checkpoint import CheckpointError, load_checkpoint
from ..engine.config import Config, apply_overrides, config_hash, load_config
from ..engine.criteria import build_criterion, build_schedule, loss_label
from ..engine.runtime import select_device
from ..engine.task import Prepared, Task, build_task
from ..engine.trainer import CHECKPOINT
from ..plugins import load_plugins
from .provenance import run_id_for


@dataclass
class LoadedRun:
    """A trained run ready for evaluation: ``model`` is in eval mode on ``device`` with the checkpoint's weights."""

    run_dir: Path
    cfg: Config
    model: nn.Module
    data: Prepared
    task: Task
    device: torch.device
    epochs_trained: int
    history: list[dict[str, float]]

    @property
    def run_id(self) -> str:
        return run_id_for(self.cfg)

    @property
    def label(self) -> str:
        return loss_label(self.cfg.loss)

    @property
    def seed(self) -> int:
        return self.cfg.train.seed

    def criterion(self) -> nn.Module:
        """The run's training loss as it stood in the last epoch, per example (``reduction='none'``)."""
        criterion = build_criterion(self.cfg.loss, self.data.stats)
        schedule = build_schedule(self.cfg.loss)
        if schedule is not None:
            schedule.apply(criterion, max(self.epochs_trained - 1, 0))
        criterion.reduction = "none"
        return criterion

    @property
    def notes(self) -> dict[str, Any]:
        return self.data.notes


def _locate(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        run_dir, checkpoint = path, path / CHECKPOINT
    else:
        run_dir, checkpoint = path.parent, path
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"run: no config.yaml in {run_dir}; pass a run directory written by "
                                "`encouraging train`/`compare`, or the checkpoint.pt inside one")
    return run_dir, checkpoint


def load_run(path: str | Path, *, device: str | torch.device = "auto", data_root: str | None = None) -> LoadedRun:
    """Rebuild a run's model and data from its directory (or checkpoint path) and load the trained weights.

    Args:
        path: a run directory, or a ``checkpoint.pt`` with the run's ``config.yaml`` beside it.
        device: ``"auto"`` (CUDA, MPS, CPU), or any torch device.
        data_root: where the dataset lives, when not where the run found it (default: the run's setting, then
            ``$ENCOURAGING_DATA`` and the cache).
    """
    load_plugins()
    run_dir, checkpoint = _locate(path)
    cfg = load_config(run_dir / "config.yaml")
    fields = {f.name for f in dataclasses.fields(cfg.data)}
    overrides = [f"--data.root={data_root}"] if data_root else []
    if "download" in fields:  # a trained run's data is where it was: never fetch it again
        overrides.append("--data.download=false")
    cfg = apply_overrides(cfg, overrides)
    dev = select_device(str(device))
    state = load_checkpoint(checkpoint, map_location=dev)
    if state.get("config_hash") != config_hash(cfg) or state.get("seed") != cfg.train.seed:
        raise CheckpointError(f"{checkpoint} belongs to another config or seed than {run_dir / 'config.yaml'}")
    notes_file = run_dir / "notes.json"
    notes = json.loads(notes_file.read_text()) if notes_file.is_file() else {}
    task = build_task(cfg, dev)
    task.upstream_dirs = {role: Path(up["run_dir"]) for role, up in notes.get("upstream", {}).items()}
    data = task.setup()
    model = data.model.to(dev)
    model.load_state_dict(state["model"])
    model.eval()
    data.notes = {**data.notes, **notes}  # what the run saw at training time (e.g. the test-set note) wins
    return LoadedRun(run_dir, cfg, model, data, task, dev, int(state["epoch"]), list(state.get("history", [])))
