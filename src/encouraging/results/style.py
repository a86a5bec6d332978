"""One look for every figure: a colour and line style per loss (CE black and dashed), matplotlib without pyplot."""

from __future__ import annotations

from collections.abc import Iterable

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def is_plain_ce(label: str) -> bool:
    return label == "CE"


def loss_styles(labels: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``label -> (colour, line style)``: plain CE black dashed, other CE variants dashed, the rest solid."""
    out, i = {}, 0
    for label in dict.fromkeys(labels):
        if is_plain_ce(label):
            out[label] = ("black", "--")
            continue
        out[label] = (PALETTE[i % len(PALETTE)], "--" if label.startswith("CE") else "-")
        i += 1
    return out


def new_figure(width: float = 7.0, height: float = 4.3, ncols: int = 1):
    """A constrained-layout figure rendered by Agg (no global pyplot state); returns ``(fig, axes)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)
