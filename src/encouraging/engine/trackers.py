"""Experiment trackers: optional mirrors of the per-epoch metrics that the results database stores.

``train.trackers`` names them (``tensorboard``, ``wandb``; the ``trackers`` extra installs both). The runner starts
them once a run is claimed, gives them each epoch's metrics right after the database stored them (same names and
values, the epoch as the step) and finishes them when the run ends, diverges or fails. Their files go under the run
directory. The database stays the source of truth, so a tracker never costs a run its record: a tracker that cannot
start stops the run before its first epoch (the run is marked failed with the error), and one that fails later is
dropped with a warning while training goes on. Trackers change no result, so they never enter the recipe hash.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a tracker is told about the run it mirrors."""

    run_id: str  # the results-database id
    run_dir: Path  # the run's directory: trackers write their files under it
    recipe: str  # the config's name
    loss: str  # the loss label
    seed: int
    config: dict[str, Any]  # the resolved config
    start_epoch: int = 0  # the first epoch this process trains (after a resume, the checkpoint's)


class Tracker:
    """One experiment tracker: started once per run, given each epoch's metrics, finished once.

    ``module`` is the import name it needs (checked, without importing it, before any run starts).
    """

    module = ""

    def start(self, info: RunInfo) -> None:
        raise NotImplementedError

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch's metrics as the database stored them (``epoch`` is the step, not a metric)."""
        raise NotImplementedError

    def finish(self, final: dict[str, Any] | None) -> None:
        """The run ended with the final metrics ``final``, or failed (None)."""
        raise NotImplementedError


class TensorBoardTracker(Tracker):
    """Scalars in ``<run_dir>/tensorboard`` (``torch.utils.tensorboard``): ``tensorboard --logdir runs``."""

    module = "tensorboard"

    def start(self, info: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: the epochs a resumed run trains again replace their earlier events instead of doubling them
        self.writer = SummaryWriter(info.run_dir / "tensorboard", purge_step=info.start_epoch or None)

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if name != "epoch":
                self.writer.add_scalar(name, value, epoch)
        self.writer.flush()  # an epoch is long: readable while the run trains

    def finish(self, final: dict[str, Any] | None) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A Weights & Biases run: project = the recipe (or ``$WANDB_PROJECT``), group = the loss label, name = loss and
    seed, config = the resolved config with the database's ``run_id``; the final metrics go to its summary (its
    ``train_time`` is then the run's total, not the last epoch's).

    Offline unless ``$WANDB_MODE`` says otherwise (``wandb sync`` uploads an offline run later); its files go under
    the run directory unless ``$WANDB_DIR`` names another. A resumed training run is a new W&B run from its resume
    epoch on.
    """

    module = "wandb"

    def start(self, info: RunInfo) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or info.recipe, group=info.loss,
                              name=f"{info.loss} seed {info.seed}", config={"run_id": info.run_id, **info.config},
                              dir=os.environ.get("WANDB_DIR") or info.run_dir,
                              mode=os.environ.get("WANDB_MODE") or "offline")

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        # commit: written now, not held back until the next step (nor after the final summary)
        self.run.log({name: value for name, value in metrics.items() if name != "epoch"}, step=epoch, commit=True)

    def finish(self, final: dict[str, Any] | None) -> None:
        if final:
            self.run.summary.update(final)
        self.run.finish(exit_code=0 if final is not None else 1)


TRACKERS: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}  # the registry


def tracker_problems(names: Any) -> list[str]:
    """One message per problem with the ``train.trackers`` value ``names``: an unknown or repeated name, or a
    tracker whose package is not installed (looked up, not imported)."""
    problems = []
    for name in names:
        if not isinstance(name, str) or name not in TRACKERS:
            problems.append(f"train.trackers must list names among {sorted(TRACKERS)}, got {name!r}")
        elif importlib.util.find_spec(TRACKERS[name].module) is None:
            problems.append(f"train.trackers: {name} needs {TRACKERS[name].module}: pip install "
                            "'encouraging[trackers]'")
    repeated = sorted({name for name in names if isinstance(name, str) and list(names).count(name) > 1})
    if repeated:
        problems.append(f"train.trackers names {', '.join(repeated)} more than once")
    return problems


class Trackers:
    """The trackers ``names`` of one run, fed together (none: every call does nothing).

    :meth:`start` raises when a tracker cannot start (the ones already started are finished as failed);
    :meth:`log` and :meth:`finish` never raise: a tracker that fails there is dropped with a warning on stderr.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.names = list(names)
        self.active: list[tuple[str, Tracker]] = []

    def start(self, info: RunInfo) -> None:
        for name in self.names:
            tracker = TRACKERS[name]()
            try:
                tracker.start(info)
            except BaseException:
                self.finish(None)
                raise
            self.active.append((name, tracker))

    def log(self, epoch: int, metrics: dict[str, float]) -> None:
        for name, tracker in list(self.active):
            try:
                tracker.log(epoch, metrics)
            except Exception as error:
                self.active.remove((name, tracker))
                _warn(name, f"logging epoch {epoch}", error)
                self._finish(name, tracker, None)

    def finish(self, final: dict[str, Any] | None) -> None:
        """Finish every tracker: the run ended with ``final``, or failed (None)."""
        active, self.active = self.active, []
        for name, tracker in active:
            self._finish(name, tracker, final)

    @staticmethod
    def _finish(name: str, tracker: Tracker, final: dict[str, Any] | None) -> None:
        try:
            tracker.finish(final)
        except Exception as error:
            _warn(name, "finishing", error)


def _warn(name: str, doing: str, error: Exception) -> None:
    print(f"warning: tracker {name} failed {doing} ({type(error).__name__}: {error}); it is dropped from this run, "
          "whose metrics the results database keeps", file=sys.stderr, flush=True)
