"""One look for every figure: a colour and line style per loss (CE black and dashed), matplotlib without pyplot."""

from __future__ import annotations

from collections.abc import Iterable

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def is_plain_ce(label: str) -> bool:
    return label == "CE"


# label -> colour, kept for the whole process (a report resets it with its own labels in table order), so a loss
# keeps one colour in every figure of a report, whichever subset of losses a figure shows
_COLOURS: dict[str, str] = {}


def reset_styles(labels: Iterable[str] = ()) -> None:
    """Forget the colours given so far; hand out colours to ``labels`` in this order first."""
    _COLOURS.clear()
    loss_styles(labels)


def loss_styles(labels: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``label -> (colour, line style)``: plain CE black dashed, other CE variants dashed, the rest solid; a label
    keeps the colour it was first given."""
    out = {}
    for label in dict.fromkeys(labels):
        if is_plain_ce(label):
            out[label] = ("black", "--")
            continue
        if label not in _COLOURS:
            _COLOURS[label] = PALETTE[len(_COLOURS) % len(PALETTE)]
        out[label] = (_COLOURS[label], "--" if label.startswith("CE") else "-")
    return out


def new_figure(width: float = 7.0, height: float = 4.3, ncols: int = 1):
    """A constrained-layout figure rendered by Agg (no global pyplot state); returns ``(fig, axes)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)
