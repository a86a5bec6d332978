"""Progress output: a rich progress bar in a terminal, one plain line per epoch otherwise (nothing with quiet).

Epochs are numbered from 0, as the results database, ``metrics.jsonl`` and reports number them.
"""

from __future__ import annotations

import sys
from typing import Any

EPOCH_FIELDS = (  # (metric, label, format); "{primary}" is the task's primary metric
    ("train_loss", "loss", "{:.4f}"),
    ("train_ce", "ce", "{:.4f}"),
    ("train_bonus", "bonus", "{:+.4f}"),
    ("train_acc", "train", "{:.2%}"),
    ("val_{primary}", "val", "{:.2%}"),
    ("test_{primary}", "test", "{:.2%}"),
    ("p_target", "p_y", "{:.3f}"),
    ("frac_past_log_end", ">LE", "{:.2f}"),
    ("grad_norm", "|g|", "{:.3g}"),
    ("lr", "lr", "{:.3g}"),
    ("epoch_time", "time", "{:.1f}s"),
)


def format_epoch(epoch: int, epochs: int, metrics: dict[str, float], primary: str = "acc",
                 percent: bool = True) -> str:
    """One epoch's line; validation and test show the task's ``primary`` metric (in % when ``percent``)."""
    parts = [f"epoch {epoch} of 0-{epochs - 1}"]
    for key, label, fmt in EPOCH_FIELDS:
        key = key.format(primary=primary)
        if key in metrics:
            shown = fmt if percent or not key.endswith(primary) else "{:.4g}"
            parts.append(f"{label} {shown.format(metrics[key])}")
    return "  ".join(parts)


class Progress:
    """Reports steps and epochs. Interactive only on the main rank of a TTY and without ``quiet``."""

    def __init__(self, title: str, epochs: int, steps: int, *, quiet: bool = False, main: bool = True,
                 primary: str = "acc", percent: bool = True) -> None:
        self.title, self.epochs, self.steps = title, epochs, steps
        self.primary, self.percent = primary, percent
        self.enabled = main and not quiet
        self.interactive = self.enabled and sys.stdout.isatty()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.title, total=self.steps)
        return self

    def start_epoch(self, epoch: int) -> None:
        if self._bar is not None:
            self._bar.reset(self._task, total=self.steps,
                            description=f"{self.title} epoch {epoch} of 0-{self.epochs - 1}")

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        line = f"{self.title}  {format_epoch(epoch, self.epochs, metrics, self.primary, self.percent)}"
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
