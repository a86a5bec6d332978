"""Numbers per run derived from its stored evaluation rows, summarized over seeds and differenced between losses.

A layer that stores rows (the analyses store margins, energies, gradients and probes) registers a
:class:`Measures`: which row kinds it reads, how one run's rows become named numbers, and how to print each. Reports
and the docs' ``measures=NAME`` blocks then print the same two tables from it: mean ± std per loss over seeds, and
paired differences between losses with 95% t-intervals (plus, for the keys named in ``ratios``, the ratio of the
means, e.g. the paper's "4x lower true-class energy").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .report import LossRow, is_diverged
from .stats import compare, format_number, mean_std_text, summarize
from .store import ResultsStore

__all__ = ["Measure", "Measures", "difference_table", "measure_values", "register_measures", "registered_measures",
           "summary_table"]


@dataclass(frozen=True)
class Measure:
    """One number per run: ``key`` in what :attr:`Measures.compute` returns, printed as ``label`` after
    multiplying by ``scale`` (100 for fractions shown in %), with ``digits`` decimals."""

    key: str
    label: str
    scale: float = 1.0
    digits: int = 2


@dataclass(frozen=True)
class Measures:
    """``compute(kind -> rows of one run)`` gives ``key -> value`` for (some of) the keys of ``table``; ``kinds``
    are the row kinds it reads; each key of ``ratios`` also gets a difference-table line with the ratio of the
    other loss's mean to the base loss's mean."""

    kinds: tuple[str, ...]
    compute: Callable[[Mapping[str, list[dict[str, Any]]]], dict[str, float]]
    table: tuple[Measure, ...]
    ratios: tuple[str, ...] = ()


_MEASURES: dict[str, Measures] = {}

# label -> seed -> key -> value
Values = dict[str, dict[int, dict[str, float]]]


def register_measures(name: str, spec: Measures) -> Measures:
    """Make ``spec`` available to docs blocks as ``measures=name``."""
    _MEASURES[name] = spec
    return spec


def registered_measures(name: str) -> Measures:
    """The :class:`Measures` registered as ``name``."""
    try:
        return _MEASURES[name]
    except KeyError:
        raise ValueError(f"measures must be one of {sorted(_MEASURES)}, got {name!r}") from None


def measure_values(store: ResultsStore, rows: list[LossRow], spec: Measures) -> tuple[Values, set[str]]:
    """The numbers of every finite run of ``rows`` that has rows of ``spec.kinds`` (diverged runs are left out, as
    in the training tables); also the ids of the runs that have such rows."""
    by_run: dict[str, dict[str, list[dict]]] = {}
    ids = [r["run_id"] for row in rows for r in row.runs]
    for kind in spec.kinds:
        for r in store.rows(kind, run_id=ids) if ids else []:
            by_run.setdefault(r["run_id"], {}).setdefault(kind, []).append(r)
    values = {row.loss_label: {r["seed"]: spec.compute(by_run[r["run_id"]]) for r in row.runs
                               if r["run_id"] in by_run and not is_diverged(r)} for row in rows}
    return values, set(by_run)


def summary_table(values: Values, spec: Measures) -> tuple[list[str], list[list[str]]]:
    """Headers and lines: one line per measure that any loss has, mean ± std over seeds per loss."""
    headers = ["metric", *(f"{label} (n = {len(seeds)})" for label, seeds in values.items())]
    lines = []
    for m in spec.table:
        cells = [mean_std_text([v[m.key] for v in seeds.values() if m.key in v], m.scale, m.digits)
                 for seeds in values.values()]
        if any(c != "\u2013" for c in cells):
            lines.append([m.label, *cells])
    return headers, lines


def difference_table(values: Values, spec: Measures, pairs: list[tuple[str, str]], *, with_p: bool = False
                     ) -> tuple[list[str], list[list[str]]]:
    """Headers and lines: per measure, ``other − base`` for each ``(base, other)`` label pair as the mean
    difference [95% t-interval] paired over seeds (``with_p``: also the t-test's p and the number of pairs); then
    the ratio lines of ``spec.ratios``."""
    headers = ["difference (95% CI, paired over seeds)", *(f"{b} \u2212 {a}" for a, b in pairs)]
    lines = []
    for m in spec.table:
        cells = []
        for a, b in pairs:
            xa = {s: v[m.key] for s, v in values[a].items() if m.key in v}
            xb = {s: v[m.key] for s, v in values[b].items() if m.key in v}
            c = compare(xa, xb)
            cells.append((c.format if with_p else c.interval)(m.scale, m.digits) if xa and xb else "\u2013")
        if any(c != "\u2013" for c in cells):
            lines.append([m.label, *cells])
    labels = {m.key: m.label for m in spec.table}
    for key in spec.ratios:
        cells = []
        for a, b in pairs:
            base = summarize([v.get(key) for v in values[a].values()]).mean
            other = summarize([v.get(key) for v in values[b].values()]).mean
            cells.append(f"{format_number(other / base)}x" if base and other is not None else "\u2013")
        if any(c != "\u2013" for c in cells):
            lines.append([f"{labels.get(key, key)}: ratio of the means", *cells])
    return headers, lines
