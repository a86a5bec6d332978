"""The loss, bonus and gradient against the target probability ``p`` (the paper's Figure 2 and its ``log_end``
panels), computed with the library's own loss functions rather than re-typed formulas.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..losses import EncouragingLoss, encouraging_loss_parts
from ..results.style import PALETTE, new_figure
from .gradients import analytic_target_grad

LOG_ENDS = (0.5, 0.75, 0.9, 1.0)


def loss_shape_rows(log_ends: tuple[float, ...] = LOG_ENDS, points: int = 400) -> list[dict]:
    """Rows ``(log_end, p, ce, bonus, loss, grad)`` on a grid of ``p`` in (0, 1); ``log_end=None`` is plain CE.

    ``grad`` is ``dL/df_y`` (the same for any number of classes, without label smoothing).
    """
    p = torch.linspace(0.0, 1.0, points + 2, dtype=torch.float64)[1:-1]
    logits = torch.stack([torch.log(p) - torch.log1p(-p), torch.zeros_like(p)], 1)  # softmax -> (p, 1 - p)
    target = torch.zeros(len(p), dtype=torch.long)
    rows = []
    for log_end in (None, *log_ends):
        scale = 0.0 if log_end is None else 1.0
        le = 1.0 if log_end is None else log_end
        parts = encouraging_loss_parts(logits, target, reduction="none", log_end=le, bonus_scale=scale)
        grad = analytic_target_grad(EncouragingLoss(reduction="none", log_end=le, bonus_scale=scale), p, 2)
        rows += [{"log_end": log_end, "p": float(p[i]), "ce": float(parts.ce[i]), "bonus": float(parts.bonus[i]),
                  "loss": float(parts.loss[i]), "grad": float(grad[i])} for i in range(len(p))]
    return rows


def _series(rows: list[dict], log_end, key: str) -> tuple[list[float], list[float]]:
    sel = [r for r in rows if r["log_end"] == log_end]
    return [r["p"] for r in sel], [r[key] for r in sel]


def plot_loss_shapes(rows: list[dict], path: str | Path) -> str:
    """Figure 2: CE ``-log p``, the full bonus ``log(1 - p)`` and EL = CE + bonus, against ``p``."""
    fig, (ax,) = new_figure(5.6, 4.0)
    p, ce = _series(rows, None, "loss")
    ax.plot(p, ce, "--", color="black", lw=2, label="CE: $-\\log p$")
    p, bonus = _series(rows, 1.0, "bonus")
    ax.plot(p, bonus, ":", color=PALETTE[1], lw=2, label="bonus: $\\log(1-p)$")
    p, el = _series(rows, 1.0, "loss")
    ax.plot(p, el, "-", color=PALETTE[0], lw=2, label="EL: $-\\log p + \\log(1-p)$")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_ylim(-6, 6)
    ax.set_xlabel("target probability $p$")
    ax.set_ylabel("loss (nats)")
    ax.set_title("CE, the bonus and the encouraging loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return ("CE, the full bonus log(1 - p) and EL against the target probability p (computed with "
            "`encouraging_loss_parts`). EL keeps falling steeply as p -> 1, where CE is flat.")


def plot_log_end_panels(rows: list[dict], path: str | Path) -> str:
    """The conservative bonus for each ``log_end`` and the target-logit gradient ``|dL/df_y|`` it gives."""
    fig, (left, right) = new_figure(10.0, 4.0, ncols=2)
    p, g = _series(rows, None, "grad")
    right.plot(p, [abs(x) for x in g], "--", color="black", lw=2, label="CE: $1-p$")
    ends = sorted({r["log_end"] for r in rows if r["log_end"] is not None})
    for i, le in enumerate(ends):
        color = PALETTE[i % len(PALETTE)]
        p, b = _series(rows, le, "bonus")
        left.plot(p, b, color=color, lw=1.8, label=f"LE = {le:g}")
        p, g = _series(rows, le, "grad")
        right.plot(p, [abs(x) for x in g], color=color, lw=1.8, label=f"EL, LE = {le:g}")
        if le < 1:
            left.axvline(le, color=color, lw=0.6, ls=":")
    left.set_ylim(-6, 0.2)
    left.set_xlabel("target probability $p$")
    left.set_ylabel("bonus (nats)")
    left.set_title("Conservative bonus: $\\log(1-p)$ up to LE, its tangent after")
    right.set_xlabel("target probability $p$")
    right.set_ylabel("$|\\partial L / \\partial f_y|$")
    right.set_title("Target-logit gradient")
    right.set_ylim(0, 2.2)
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path)
    return ("Left: the conservative bonus for each log_end (LE; dotted lines mark LE). Right: the size of the "
            "target-logit gradient: CE's 1 - p vanishes as p -> 1; EL's is 1 up to LE = 1, and for LE < 1 it is "
            "(1 - p)(1 + p/(1 - LE)) beyond LE.")
