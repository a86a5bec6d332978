"""Where a run comes from: its database id and directory, package versions, git commit, hardware, and the record
the results database keeps (with the task's declared metrics and the loss's label and parameters)."""

from __future__ import annotations

import dataclasses
import functools
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..engine.config import Config, config_hash
from ..engine.criteria import loss_label, loss_params
from ..engine.task import get_task
from ..results import RunRecord


def run_id_for(cfg: Config) -> str:
    """The results-database id of a (config, seed): the config hash and the seed."""
    return f"{config_hash(cfg)}-s{cfg.train.seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def run_dir_for(cfg: Config, out_dir: str | Path) -> Path:
    """``<out>/<recipe>/<loss label>/seed<k>-<hash>``."""
    return (Path(out_dir) / _slug(cfg.name) / _slug(loss_label(cfg.loss))
            / f"seed{cfg.train.seed}-{config_hash(cfg)}")


def versions() -> dict[str, str]:
    from .. import __version__

    out = {"encouraging": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for package in ("torchvision", "torch_geometric", "sacrebleu", "transformers"):
        try:  # the installed version, without importing the package (torchvision's import alone takes seconds)
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.cache  # the checkout as this process found it: a grid's later commits do not change the code it runs
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
    """The results-database record of a (config, seed) trained in ``run_dir``.

    Besides the resolved config it stores what reports need without any task or loss code: the task's
    :class:`~encouraging.engine.task.MetricSpec` (``config["metrics"]``), the loss's label and its parameters.
    """
    return RunRecord(
        run_id=run_id_for(cfg), recipe=cfg.name, task=cfg.task, dataset=cfg.data.dataset, model=cfg.model.name,
        loss=cfg.loss.name, loss_label=loss_label(cfg.loss), loss_params=loss_params(cfg.loss), seed=cfg.train.seed,
        config_hash=config_hash(cfg),
        config={**dataclasses.asdict(cfg), "notes": notes, "metrics": get_task(cfg.task).metrics.to_dict()},
        versions=versions(), git_commit=git_commit(), hardware=hardware_text, run_dir=str(run_dir),
    )
