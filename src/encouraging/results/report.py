"""Reports from the results store: markdown (and optional HTML) with tables, paired comparisons and PNG curves.

Runs group into comparisons by ``(recipe, dataset, model)``; within a group the rows are losses
``(loss, loss_label)`` and the repetitions are seeds. Everything a report says about a run comes from what the run
stored: its task's declared metrics (``config["metrics"]``: the primary metric, its label, scale and direction,
extra columns; runs stored before tasks declared them are top-1 accuracy), its loss label and loss parameters.
For each group the report gives:

* a table, one row per loss: seeds, the primary metric at the *selected* epoch (chosen on the validation split; the
  last epoch when the recipe has none), at the *final* epoch, and *best on test* (the best epoch chosen on the test
  set itself, the paper's protocol: optimistic, always labelled so), the task's extra metrics at the selected epoch,
  and the paper's number where one exists, labelled "paper (their recipe)" with its model and recipe in a footnote
  (our quick recipes are not the paper's);
* each other loss against CE on each of those columns: the mean difference over shared seeds with a 95%
  t-interval and a paired t-test (Welch when the seeds do not match), saying plainly whether the interval excludes
  0, and whether the paper's direction holds;
* curves: the primary test metric, mean target probability and the share of targets past ``log_end`` per epoch,
  mean over seeds with a min–max band;
* the test-set note and a sacrebleu-style signature per row.

:func:`group_tables` (one rich-ready table per group), :func:`table_rows` and :func:`comparison_rows` return the
same content as plain dicts for the CLI.
"""

from __future__ import annotations

import html as _html
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from .paper import PaperNumber, canonical_loss, paper_number
from .records import is_records_source, records_store
from .stats import Comparison, Summary, compare, format_signed, summarize
from .store import ResultsStore
from .style import loss_styles, new_figure, reset_styles

__all__ = ["Group", "LossRow", "collect", "comparison_rows", "group_tables", "table_rows", "write_report"]

DIGITS = 2
MINUS = "\u2212"
#: the report's columns of the primary metric: name -> (final-metrics key prefix, heading)
COLUMNS = {
    "selected": ("selected_test_", "selected"),
    "final": ("final_test_", "final"),
    "best": ("best_test_", "best on test (paper's protocol)"),
    "averaged": ("averaged_test_", "mean weights of the last epochs"),  # train.average_last (fairseq's protocol)
}


@dataclass(frozen=True)
class Metric:
    """A task's declared metric as its runs stored it (see ``encouraging.engine.task.MetricSpec``)."""

    primary: str = "acc"
    label: str = "top-1 accuracy (%)"
    higher_is_better: bool = True
    scale: float = 100.0
    extra: tuple[str, ...] = ()
    paper: str = "top1"  # the paper's name of the metric ("" if it has none)
    notes: tuple[str, ...] = ()  # run notes printed under the table

    @classmethod
    def of(cls, run: Mapping[str, Any]) -> Metric:
        data = (run.get("config") or {}).get("metrics")
        if not isinstance(data, Mapping):  # stored before tasks declared metrics: the image task's accuracy
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in names}, "extra": tuple(data.get("extra", ())),
                      "notes": tuple(data.get("notes", ()))})


# ---------------------------------------------------------------------------------------------------------------------
# Collecting runs into groups
# ---------------------------------------------------------------------------------------------------------------------


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class LossRow:
    """One loss in a group: its runs (one per seed) and, per column of :data:`COLUMNS`, seed -> value."""

    loss: str
    loss_label: str
    loss_params: dict  # what the run recorded: the preset's shown parameters and those switched on
    runs: list[dict]  # run dicts from the store, each with "final" and "epochs" added
    values: dict[str, dict[int, float]]  # column -> seed -> primary metric (stored units)
    epochs: dict[str, dict[int, float]]  # "selected" / "best" -> seed -> epoch
    extra: dict[str, dict[int, float]]  # extra metric -> seed -> value at the selected epoch
    paper: PaperNumber | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.runs)

    @property
    def diverged(self) -> list[dict]:
        """Runs whose training loss stopped being finite: counted in n, left out of every number and curve."""
        return [r for r in self.runs if is_diverged(r)]

    def n_text(self) -> str:
        return f"{len(self.runs)} ({len(self.diverged)} diverged)" if self.diverged else str(len(self.runs))

    def summary(self, column: str) -> Summary:
        return summarize(self.values[column].values())

    @property
    def is_ce(self) -> bool:
        return canonical_loss(self.loss) == "ce"

    @property
    def label_smoothing(self) -> float:
        return _float(self.loss_params.get("label_smoothing")) or 0.0

    @property
    def log_end(self) -> float | None:
        return _float(self.loss_params.get("log_end"))

    def params_text(self) -> str:
        """The loss parameters the run recorded, e.g. ``log_end=0.75``."""
        shown = {k: v for k, v in self.loss_params.items() if not isinstance(v, (list, dict))}
        return ", ".join(f"{k}={_text(v)}" for k, v in sorted(shown.items()))

    def signature(self) -> str:
        """sacrebleu-style: every setting a number depends on, in one line."""
        parts = [f"loss:{self.loss}"]
        parts += [f"{k}:{_text(v)}" for k, v in sorted(self.loss_params.items())]
        parts.append("seeds:" + ",".join(str(s) for s in self.seeds))
        n_epochs = sorted({len(r["epochs"]) for r in self.runs})
        parts.append("epochs:" + ",".join(str(n) for n in n_epochs))
        selection = sorted({str(r["final"].get("selection", "last")) for r in self.runs})
        parts.append("select:" + ",".join(selection))
        hashes = sorted({r["config_hash"] for r in self.runs})
        parts.append("cfg:" + ",".join(h[:10] for h in hashes))
        versions: dict[str, set] = defaultdict(set)
        for r in self.runs:
            for k, v in (r.get("versions") or {}).items():
                versions[k].add(str(v))
        for k in sorted(versions):
            if k.lower() in ("torch", "encouraging", "torchvision", "python", "cuda"):
                parts.append(f"{k}:{'/'.join(sorted(versions[k]))}")
        commits = sorted({(r.get("git_commit") or "none")[:10] for r in self.runs})
        parts.append("commit:" + "/".join(commits))
        return "|".join(parts)


@dataclass
class Pair:
    """One loss against its CE baseline in a group, per column of :data:`COLUMNS` the group shows."""

    row: LossRow
    base: LossRow
    comparisons: dict[str, Comparison]

    @property
    def title(self) -> str:
        return f"{self.row.loss_label} {MINUS} {self.base.loss_label}"


@dataclass
class Group:
    """The runs of one comparison ``(recipe, dataset, model)``."""

    recipe: str
    dataset: str
    model: str
    task: str
    metric: Metric
    rows: list[LossRow]
    pairs: list[Pair] = field(default_factory=list)
    unfinished: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why something could not be computed

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.recipe, self.dataset, self.model)

    @property
    def title(self) -> str:
        return f"{self.recipe} / {self.dataset} / {self.model}"

    @property
    def test_notes(self) -> list[str]:
        return sorted({r["test_note"] for row in self.rows for r in row.runs if r.get("test_note")})

    @property
    def table_notes(self) -> list[str]:
        """The run notes the task asks every table to print (:attr:`Metric.notes`), each distinct text once."""
        seen: dict[str, None] = {}
        for key in self.metric.notes:
            for row in self.rows:
                for r in row.runs:
                    text = ((r.get("config") or {}).get("notes") or {}).get(key)
                    if text:
                        seen.setdefault(str(text))
        return list(seen)

    @cached_property
    def extra(self) -> list[str]:
        """The task's extra metrics that some run logged (BLEU on tokenized text exists only for tokenized corpora)."""
        return [x for x in self.metric.extra if any(row.extra[x] for row in self.rows)]

    @cached_property
    def columns(self) -> list[str]:
        """The columns shown: ``selected`` only when some run selected on a validation split, ``averaged`` only when
        some run averaged its last epochs' weights."""
        on_val = any(r["final"].get("selection") == "val" for row in self.rows for r in row.runs)
        averaged = any(f"averaged_test_{self.metric.primary}" in r["final"] for row in self.rows for r in row.runs)
        return [c for c in COLUMNS if (c != "selected" or on_val) and (c != "averaged" or averaged)]

    def heading(self, column: str) -> str:
        return f"{self.metric.label}, {COLUMNS[column][1]}"

    def scaled(self, x: float | None) -> float | None:
        return None if x is None else x * self.metric.scale


def is_diverged(run: Mapping[str, Any]) -> bool:
    return _float((run.get("final") or {}).get("diverged_epoch")) is not None


def _run_values(run: dict, metric: Metric) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """A run's primary metric per column, the selected and best epochs, and its extra metrics at the selected epoch.

    Runs that stored only per-epoch values get them from the epochs (best: the first best epoch on test)."""
    final, p = run["final"], metric.primary
    history = [e for e in run["epochs"] if _float(e.get(f"test_{p}")) is not None]
    values = {c: _float(final.get(prefix + p)) for c, (prefix, _) in COLUMNS.items()}
    epochs = {"best": _float(final.get("best_epoch")), "selected": _float(final.get("selected_epoch"))}
    if history:
        last = history[-1]
        sign = 1.0 if metric.higher_is_better else -1.0
        best = max(history, key=lambda e: (sign * float(e[f"test_{p}"]), -e["epoch"]))
        if values["best"] is None:
            values["best"], epochs["best"] = float(best[f"test_{p}"]), float(best["epoch"])
        if values["final"] is None:
            values["final"] = float(last[f"test_{p}"])
        if values["selected"] is None and final.get("selection", "last") == "last":
            values["selected"], epochs["selected"] = values["final"], float(last["epoch"])
    at = {int(e["epoch"]): e for e in run["epochs"]}.get(int(epochs["selected"])) if epochs["selected"] is not None \
        else None
    extra = {x: _float(at.get(f"test_{x}")) for x in metric.extra} if at else {}
    drop = lambda d: {k: v for k, v in d.items() if v is not None}  # noqa: E731
    return drop(values), drop(epochs), drop(extra)


def _open(store_or_path: ResultsStore | str | os.PathLike) -> ResultsStore:
    if isinstance(store_or_path, ResultsStore):
        return store_or_path
    path = Path(store_or_path)
    if is_records_source(path):
        return records_store([path])
    if not path.exists():  # do not create an empty database just to report on it
        raise FileNotFoundError(f"no results database at {path}")
    return ResultsStore(path)


def _make_row(runs: list[dict], label: str, metric: Metric) -> LossRow:
    values: dict[str, dict[int, float]] = {c: {} for c in COLUMNS}
    epochs: dict[str, dict[int, float]] = {"selected": {}, "best": {}}
    extra: dict[str, dict[int, float]] = {x: {} for x in metric.extra}
    for r in runs:
        if is_diverged(r):
            continue
        v, e, x = _run_values(r, metric)
        for column, value in v.items():
            values[column][r["seed"]] = value
        for column, value in e.items():
            epochs[column][r["seed"]] = value
        for name, value in x.items():
            extra[name][r["seed"]] = value
    return LossRow(loss=runs[0]["loss"], loss_label=label, loss_params=dict(runs[0].get("loss_params") or {}),
                   runs=runs, values=values, epochs=epochs, extra=extra)


def _baseline(row: LossRow, rows: list[LossRow]) -> LossRow | None:
    """The CE row a loss is compared with: CE with the same label smoothing, else plain CE; never itself."""
    ces = [r for r in rows if r.is_ce and r is not row]
    for want in (row.label_smoothing, 0.0):
        for r in ces:
            if abs(r.label_smoothing - want) < 1e-12:
                return r
    return None


def collect(store_or_path: ResultsStore | str | os.PathLike, **filters: Any) -> list[Group]:
    """Finished runs grouped by ``(recipe, dataset, model)``, with summaries, paper numbers and comparisons.

    ``filters`` are those of :meth:`ResultsStore.runs` (``recipe=``, ``dataset=``, …). Runs that are not finished
    are listed in :attr:`Group.unfinished` and left out of every number.
    """
    store = _open(store_or_path)
    if "status" in filters:
        raise ValueError("collect() reports finished runs; filter on recipe, task, dataset, model or loss instead")
    runs = store.runs(**filters)
    finished = [r for r in runs if r["status"] == "finished"]
    finals = store.final_many([r["run_id"] for r in finished])
    epochs = store.epochs_many([r["run_id"] for r in finished])
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    pending: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        key = (r["recipe"], r["dataset"], r["model"])
        if r["status"] != "finished":
            pending[key].append(r)
            continue
        r["final"] = finals.get(r["run_id"], {})
        r["epochs"] = epochs.get(r["run_id"], [])
        by_group[key].append(r)
    return [_group(key, by_group.get(key, []), pending.get(key, [])) for key in sorted(set(by_group) | set(pending))]


def _adversarially_trained(runs: list[dict]) -> bool:
    """Whether the runs trained on attacked batches (``train.adversarial.attack`` other than ``none``)."""
    return any(((r.get("config") or {}).get("train") or {}).get("adversarial", {}).get("attack", "none") != "none"
               for r in runs)


def _group(key: tuple[str, str, str], group_runs: list[dict], pending: list[dict]) -> Group:
    notes = []
    metrics = {Metric.of(r) for r in group_runs} or {Metric()}
    metric = next(iter(metrics))
    if len(metrics) > 1:
        notes.append(f"runs declare {len(metrics)} different metrics; the table uses {metric.primary!r}")
    by_loss: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in group_runs:
        by_loss[(r["loss"], r["loss_label"])].append(r)
    rows = []
    for (_loss, label), lruns in by_loss.items():
        seeds = Counter(r["seed"] for r in lruns)
        hashes = sorted({r["config_hash"] for r in lruns})
        if len(hashes) > 1 and max(seeds.values()) > 1:
            # the same label and seed under two configs: those are two settings, not two repetitions
            notes.append(f"{label}: runs with the same seed come from {len(hashes)} different configs; "
                         "shown as separate rows, labelled by config hash")
            rows += [_make_row([r for r in lruns if r["config_hash"] == h], f"{label} [cfg {h[:7]}]", metric)
                     for h in hashes]
        else:
            rows.append(_make_row(lruns, label, metric))
    rows.sort(key=lambda row: (not row.is_ce, row.label_smoothing, row.loss_label))
    task = (group_runs or pending)[0]["task"]
    g = Group(key[0], key[1], key[2], task, metric, rows, unfinished=pending, notes=notes)
    if metric.paper:
        for row in rows:
            if not _adversarially_trained(row.runs):  # the paper's numbers are for standard training
                row.paper = paper_number(g.dataset, g.model, row.loss, row.log_end,
                                         label_smoothing=row.label_smoothing, metric=metric.paper)
    if rows and not any(r.is_ce for r in rows):
        notes.append("no CE run in this group: no comparison with CE")
    for row in rows:
        base = _baseline(row, rows)
        if base is None or (row.is_ce and row.label_smoothing == 0.0):
            continue
        g.pairs.append(Pair(row, base, {c: compare(base.values[c], row.values[c]) for c in g.columns}))
    return g


# ---------------------------------------------------------------------------------------------------------------------
# Plain rows for the CLI
# ---------------------------------------------------------------------------------------------------------------------


def _fmt_summary(s: Summary, scale: float) -> str:
    if s.mean is None:
        return "n/a"
    if s.std is None:
        return f"{s.mean * scale:.{DIGITS}f} (n = 1, no std)"
    return f"{s.mean * scale:.{DIGITS}f} ± {s.std * scale:.{DIGITS}f}"


def _headline(g: Group) -> str:
    """The column a loss is judged on: selected on validation when the recipe has a validation split, else final."""
    return g.columns[0]


def table_rows(store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any) -> list[dict[str, Any]]:
    """One dict per (group, loss) with raw numbers (scaled for display) and display strings, ready for a table.

    Keys: recipe, dataset, model, task, metric (the primary metric's label), loss, loss_label, params, n, seeds;
    per shown column ``c`` of :data:`COLUMNS` (``selected`` only with a validation split, ``final``, ``best``):
    ``c`` (text), ``c_mean``, ``c_std``, ``vs_ce_c`` (text or None); ``selected_epoch_mean``, ``best_epoch_mean``;
    each extra metric (text, at the selected epoch); paper (text or None), paper_note, test_note, table_notes (the
    task's notes for every table, such as shot-group thresholds), signature.
    """
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    out = []
    for g in groups:
        pairs = {id(p.row): p for p in g.pairs}
        scale = g.metric.scale
        for row in g.rows:
            p = pairs.get(id(row))
            item: dict[str, Any] = {
                "recipe": g.recipe, "dataset": g.dataset, "model": g.model, "task": g.task, "metric": g.metric.label,
                "loss": row.loss, "loss_label": row.loss_label, "params": row.params_text(), "n": len(row.runs),
                "diverged": len(row.diverged), "seeds": row.seeds,
            }
            for c in g.columns:
                s = row.summary(c)
                item.update({c: _fmt_summary(s, scale), f"{c}_mean": g.scaled(s.mean), f"{c}_std": g.scaled(s.std),
                             f"vs_ce_{c}": p.comparisons[c].format(scale, DIGITS) if p else None})
            for name in ("selected", "best"):
                item[f"{name}_epoch_mean"] = summarize(row.epochs[name].values()).mean
            for x in g.extra:
                item[x] = _fmt_summary(summarize(row.extra[x].values()), scale)
            item.update({
                "paper": row.paper.format() if row.paper else None,
                "paper_note": row.paper.describe() if row.paper else None,
                "test_note": "; ".join(g.test_notes) or None,
                "table_notes": "; ".join(g.table_notes) or None,
                "signature": row.signature(),
            })
            out.append(item)
    return out


def group_tables(store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any) -> list[dict[str, Any]]:
    """One table per group, ready for ``rich.table.Table``.

    Each dict has ``recipe``, ``dataset``, ``model``, ``task``, ``title``, ``caption`` (test-set note and how to
    read the numbers), ``columns`` (names) and ``rows`` (dicts keyed by those names, values are strings), plus
    ``comparisons`` (one line per loss vs CE and column, as in the report) and ``notes`` (why something is missing).
    """
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    out = []
    for g in groups:
        pairs = {id(p.row): p for p in g.pairs}
        head = _headline(g)
        # narrow terminal columns
        short = {"selected": "selected", "final": "final", "best": "best on test*", "averaged": "averaged"}
        vs = f"vs CE ({short[head]})"
        with_paper = any(row.paper is not None for row in g.rows)
        columns = ["loss", "n", *(short[c] for c in g.columns), *g.extra, vs,
                   *(["paper (their recipe)"] if with_paper else [])]
        rows = []
        for row in g.rows:
            p = pairs.get(id(row))
            paper = "–"
            if row.paper is not None:
                paper = row.paper.format() + ("" if row.paper.same_model else " (other model)")
            cells = {"loss": row.loss_label, "n": row.n_text()}
            cells.update({short[c]: _fmt_summary(row.summary(c), g.metric.scale) for c in g.columns})
            cells.update({x: _fmt_summary(summarize(row.extra[x].values()), g.metric.scale) for x in g.extra})
            cells[vs] = p.comparisons[head].interval(g.metric.scale, DIGITS) if p else "–"
            if with_paper:
                cells["paper (their recipe)"] = paper
            rows.append(cells)
        caption = (f"{g.metric.label}, mean ± std over seeds; vs CE: B − A [95% CI] over paired seeds; "
                   "*best epoch chosen on the test set (the paper's protocol, optimistic)")
        if g.test_notes:
            caption = "test set: " + "; ".join(g.test_notes) + "\n" + caption
        if g.table_notes:
            caption = "; ".join(g.table_notes) + "\n" + caption
        comparisons = [f"{p.title}, {COLUMNS[c][1]}: {cmp.format(g.metric.scale, DIGITS)}: {cmp.verdict()}"
                       for p in g.pairs for c, cmp in p.comparisons.items()]
        notes = list(g.notes)
        if g.unfinished:
            notes.append(f"{len(g.unfinished)} unfinished run(s) left out")
        out.append({"recipe": g.recipe, "dataset": g.dataset, "model": g.model, "task": g.task, "title": g.title,
                    "caption": caption, "columns": columns, "rows": rows, "comparisons": comparisons, "notes": notes})
    return out


def comparison_rows(
    store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any
) -> list[dict[str, Any]]:
    """One dict per (group, loss vs its CE baseline, column): the difference (scaled) with its CI and test."""
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    out = []
    for g in groups:
        for p in g.pairs:
            for column, c in p.comparisons.items():
                out.append({
                    "recipe": g.recipe, "dataset": g.dataset, "model": g.model, "a": p.base.loss_label,
                    "b": p.row.loss_label, "metric": column, "method": c.method,
                    "n": c.n if c.method != "welch" else c.n_a + c.n_b,
                    "diff": g.scaled(c.mean_diff), "ci_low": g.scaled(c.ci_low), "ci_high": g.scaled(c.ci_high),
                    "p": c.p, "excludes_zero": c.excludes_zero,
                    "text": f"{p.title}: {c.format(g.metric.scale, DIGITS)}", "verdict": c.verdict(), "note": c.note,
                })
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------


def _curve(row: LossRow, metric: str, scale: float) -> tuple[list, list, list, list] | None:
    """Mean, min and max over seeds of one metric per epoch (epochs some seed logged it)."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for r in row.runs:
        if is_diverged(r):  # its NaN or exploded values would hide the curves of the runs that trained
            continue
        for e in r["epochs"]:
            v = _float(e.get(metric))
            if v is not None:
                per_epoch[int(e["epoch"])].append(v * scale)
    if not per_epoch:
        return None
    xs = sorted(per_epoch)
    means = [math.fsum(per_epoch[x]) / len(per_epoch[x]) for x in xs]
    return xs, means, [min(per_epoch[x]) for x in xs], [max(per_epoch[x]) for x in xs]


def _plot(group: Group, metric: str, ylabel: str, title: str, path: Path, scale: float, zoom: bool) -> str | None:
    """One figure: ``metric`` per epoch, a line per loss (mean over seeds), shaded min–max. Returns a caption."""
    from matplotlib.ticker import MaxNLocator

    curves = [(row, _curve(row, metric, scale)) for row in group.rows]
    curves = [(row, c) for row, c in curves if c is not None]
    if not curves:
        return None
    fig, (ax,) = new_figure()
    styles = loss_styles(row.loss_label for row, _ in curves)
    zoom_lows = []
    for row, (xs, mean, lo, hi) in curves:
        color, style = styles[row.loss_label]
        n = len(row.runs) - len(row.diverged)
        ax.plot(xs, mean, style, color=color, lw=1.8, marker="o" if len(xs) <= 20 else None, ms=3,
                label=f"{row.loss_label}, n = {n}")  # fmt: skip
        if n > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        tail = len(xs) // 4  # zoom so the last three quarters of training are in view (early epochs squash the rest)
        zoom_lows.append(min(lo[tail:]))
    all_lo = min(min(c[2]) for _, c in curves)
    all_hi = max(max(c[3]) for _, c in curves)
    caption = f"{title}: mean over seeds, shaded band = min–max over seeds; CE dashed."
    diverged = sum(len(row.diverged) for row in group.rows)
    if diverged:
        caption += f" {diverged} diverged run(s) left out (listed under the table), so the axis shows the others."
    zoom_lo = min(zoom_lows)
    if zoom and all_hi > zoom_lo and (zoom_lo - all_lo) > 2.0 * (all_hi - zoom_lo):
        pad = 0.08 * (all_hi - zoom_lo)
        ax.set_ylim(zoom_lo - pad, all_hi + pad)
        caption += " The y-axis is zoomed to the last three quarters of training (early epochs run off the bottom)."
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{group.title}", fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path)
    return caption


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "group"


# ---------------------------------------------------------------------------------------------------------------------
# Document model, rendered to markdown and HTML
# ---------------------------------------------------------------------------------------------------------------------


class Doc:
    """A report being written: headings, paragraphs, lists, tables, images and code, rendered to markdown/HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: list[str]) -> None:
        if items:
            self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[str]], align: list[str] | None = None) -> None:
        self.blocks.append(("table", headers, rows, align or ["l"] * len(headers)))

    def img(self, src: str, alt: str) -> None:
        self.blocks.append(("img", src, alt))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                out.append(b[1])
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in b[1]))
            elif kind == "table":
                headers, rows, align = b[1], b[2], b[3]
                esc = [[c.replace("|", "\\|") for c in r] for r in rows]
                sep = ["---:" if a == "r" else "---" for a in align]
                lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
                lines += ["| " + " | ".join(r) + " |" for r in esc]
                out.append("\n".join(lines))
            elif kind == "img":
                out.append(f"![{b[2]}]({b[1]})")
            elif kind == "code":
                out.append("```\n" + b[1] + "\n```")
        return "\n\n".join(out) + "\n"

    @staticmethod
    def _inline(text: str) -> str:
        parts = re.split(r"(`[^`]*`)", text)
        out = []
        for part in parts:
            if part.startswith("`") and part.endswith("`") and len(part) >= 2:
                out.append(f"<code>{_html.escape(part[1:-1])}</code>")
            else:
                s = _html.escape(part)
                s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
                s = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", s)
                out.append(s)
        return "".join(out)

    def html(self, title: str) -> str:
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{self._inline(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p>{self._inline(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{self._inline(i)}</li>" for i in b[1]) + "</ul>")
            elif kind == "table":
                headers, rows, align = b[1], b[2], b[3]
                th = "".join(f"<th>{self._inline(h)}</th>" for h in headers)
                trs = []
                for r in rows:
                    tds = "".join(
                        f'<td class="{"num" if a == "r" else ""}">{self._inline(c)}</td>'
                        for c, a in zip(r, align, strict=True)
                    )
                    trs.append(f"<tr>{tds}</tr>")
                body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
            elif kind == "img":
                body.append(f'<figure><img src="{_html.escape(b[1])}" alt="{_html.escape(b[2])}"></figure>')
            elif kind == "code":
                body.append(f"<pre><code>{_html.escape(b[1])}</code></pre>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
            "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem}"
            "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
            "img{max-width:100%}pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.85em}"
            "code{font-size:.9em}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


# ---------------------------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------------------------


def _distinct(values: list[str]) -> str:
    counts = Counter(v for v in values if v)
    if not counts:
        return "unknown"
    return "; ".join(f"{v} ({n} run{'s' if n != 1 else ''})" if len(counts) > 1 else v for v, n in counts.most_common())


def _versions_text(runs: list[dict]) -> str:
    seen: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        for k, v in (r.get("versions") or {}).items():
            seen[k][str(v)] += 1
    if not seen:
        return "not recorded"
    return ", ".join(f"{k} {' / '.join(sorted(seen[k]))}" for k in sorted(seen))


def _paper_direction(p: Pair) -> str | None:
    """Does our best-on-test difference (the paper's protocol) agree with the paper's direction (their recipe)?"""
    if p.row.paper is None or p.base.paper is None or p.row.paper.metric != p.base.paper.metric:
        return None
    paper_diff = p.row.paper.mean - p.base.paper.mean
    c = p.comparisons["best"]
    text = f"paper (their recipe): {format_signed(paper_diff, DIGITS)} points; ours on the same protocol (best on test)"
    if c.excludes_zero is None:
        return text + "; we cannot tell the direction (no interval)."
    ours_up = c.ci_low > 0 if c.excludes_zero else None
    if not c.excludes_zero:
        return text + "; our interval includes 0, so this run neither confirms nor contradicts it."
    if ours_up == (paper_diff > 0):
        return text + "; ours has the same sign with an interval that excludes 0."
    return text + "; ours has the **opposite** sign with an interval that excludes 0."


# A section draws the rows that a later analysis or evaluation stored (``ResultsStore.add_rows``) for one group's
# runs. Higher layers register theirs when imported (encouraging.analysis, encouraging.evaluation.ood, ...), so this
# module stays below them; a section writes nothing when the group has no rows of its kind.
ReportSection = Callable[[ResultsStore, Group, Doc, Path, str], None]
_SECTIONS: dict[str, ReportSection] = {}


def group_rows(store: ResultsStore, group: Group, kind: str) -> list[dict[str, Any]]:
    """The rows of ``kind`` stored for the runs of a report group (what a section draws)."""
    ids = [r["run_id"] for row in group.rows for r in row.runs]
    return store.rows(kind, run_id=ids) if ids else []


def register_section(name: str, render: ReportSection) -> ReportSection:
    """Add ``render(store, group, doc, out_dir, slug)`` to every group of every report (``slug`` names its files)."""
    _SECTIONS[name] = render
    return render


def write_report(
    store_or_path: ResultsStore | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    html: bool = False,
    title: str = "encouraging: results",
    **filters: Any,
) -> Path:
    """Write ``report.md`` (and ``report.html`` when ``html``) with PNG curves into ``out_dir``; return the .md path.

    ``filters`` select runs as in :meth:`ResultsStore.runs` (``recipe="quick-mnist"``, …).
    """
    store = _open(store_or_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = collect(store, **filters)
    reset_styles(row.loss_label for g in groups for row in g.rows)  # one colour per loss in every figure
    all_runs = store.runs(**filters)
    counts = Counter(r["status"] for r in all_runs)

    doc = Doc()
    doc.h(1, title)
    doc.ul(
        [
            f"results: {store.meta('source') or f'`{store.path}`'}",
            f"written: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"runs: {len(all_runs)} ({counts.get('finished', 0)} finished, {counts.get('running', 0)} running, "
            f"{counts.get('failed', 0)} failed)" + (f"; filters: {filters}" if filters else ""),
            f"hardware: {_distinct([r['hardware'] for r in all_runs])}",
            f"versions: {_versions_text(all_runs)}",
            f"git commits: {_distinct([(r.get('git_commit') or 'none')[:12] for r in all_runs])}",
        ]
    )
    doc.p(
        "How to read: each table shows its task's primary metric (named in the column headings), mean ± sample std "
        "(ddof = 1) over seeds. *Selected* is the value at the epoch chosen on the validation split (shown only "
        "when the recipe holds one out); *final* is the last epoch's. *Best on test (paper's protocol)* is the best "
        "epoch chosen on the test set itself, as the paper reports: it selects on the test set, so it is "
        "optimistic and never the headline. Differences are B − A over the seeds both losses ran, with a 95% "
        "t-interval and a two-sided paired t-test (Welch's unpaired test when seeds do not match). "
        '"paper (their recipe)" is the paper\'s number for its own model and schedule, shown for orientation: '
        "our recipes are not the paper's, so only the direction of a difference is comparable, and only on the "
        "paper's protocol."
    )
    if not groups:
        doc.p("No runs in this database" + (" match the filters." if filters else "."))

    used: set[str] = set()
    for g in groups:
        doc.h(2, g.title)
        if g.task:
            doc.p(f"task: {g.task}")
        if not g.rows:
            doc.p("No finished runs in this group yet.")
        else:
            footnotes: list[PaperNumber] = []
            table = []
            for row in g.rows:
                paper = "–"
                if row.paper is not None:
                    if row.paper not in footnotes:
                        footnotes.append(row.paper)
                    paper = f"{row.paper.format()} [{footnotes.index(row.paper) + 1}]"
                    if not row.paper.same_model:
                        paper += " (other model)"
                epoch = summarize(row.epochs[_headline(g) if _headline(g) == "selected" else "best"].values())
                table.append([row.loss_label, row.params_text() or "–", row.n_text(),
                              *(_fmt_summary(row.summary(c), g.metric.scale) for c in g.columns),
                              *(_fmt_summary(summarize(row.extra[x].values()), g.metric.scale)
                                for x in g.extra),
                              "–" if epoch.mean is None else f"{epoch.mean:.1f}", paper])
            epoch_heading = "selected epoch (mean)" if _headline(g) == "selected" else "best-on-test epoch (mean)"
            headers = ["loss", "params", "n seeds", *(g.heading(c) for c in g.columns), *g.extra,
                       epoch_heading, "paper (their recipe)"]
            doc.table(headers, table, ["l", "l"] + ["r"] * (len(headers) - 2))
            notes = g.test_notes
            doc.p("Test set: " + ("; ".join(notes) + "." if notes else "not recorded in the run config.")
                  + (" Notes: " + "; ".join(g.table_notes) + "." if g.table_notes else ""))
            if footnotes:
                doc.ul([f"[{i + 1}] {pn.format()}: {pn.describe()}" for i, pn in enumerate(footnotes)])
            diverged = [f"{row.loss_label} seed {r['seed']} (epoch {int(_float(r['final']['diverged_epoch']))})"
                        for row in g.rows for r in row.diverged]
            if diverged:
                doc.p(f"**Diverged** (the training loss stopped being finite; counted in n, left out of every number "
                      f"and curve): {', '.join(diverged)}.")
            single = [row.loss_label for row in g.rows if len(row.runs) - len(row.diverged) == 1]
            if single:
                doc.p(
                    f"Single seed ({', '.join(single)}): no standard deviation, interval or test is possible; "
                    "run more seeds."
                )

            doc.h(3, "Differences from CE")
            if not g.pairs:
                if not any(r.is_ce for r in g.rows):
                    doc.p("No CE run in this group, so there is nothing to compare against.")
                else:
                    doc.p("Only CE runs in this group: nothing to compare.")
            for p in g.pairs:
                items = []
                for column, c in p.comparisons.items():
                    name = COLUMNS[column][1]
                    if c.method == "none":  # format() already says why there is no interval
                        items.append(f"{name}: {p.title}: {c.format(g.metric.scale, DIGITS)}.")
                        continue
                    method = {"paired": "paired t-test", "welch": "Welch t-test"}[c.method]
                    if c.note:
                        method += f"; {c.note}"
                    verdict = (
                        c.verdict()
                        .replace("B > A", f"{p.row.loss_label} higher")
                        .replace("B < A", f"{p.row.loss_label} lower")
                    )
                    items.append(f"{name}: {p.title}: {c.format(g.metric.scale, DIGITS)} ({method}): {verdict}.")
                direction = _paper_direction(p)
                if direction:
                    items.append(direction)
                doc.p(f"**{p.title}**")
                doc.ul(items)
            for note in g.notes:
                if not note.startswith("no CE run"):  # said above already
                    doc.p(f"Note: {note}.")

            base = _slug(f"{g.recipe}-{g.dataset}-{g.model}")
            slug, i = base, 2
            while slug in used:
                slug, i = f"{base}-{i}", i + 1
            used.add(slug)
            doc.h(3, "Curves")
            for metric, ylabel, what, scale, zoom in (
                (f"test_{g.metric.primary}", f"test {g.metric.label}", f"Test {g.metric.label} per epoch",
                 g.metric.scale, True),
                ("p_target", "mean target probability p_y", "Mean target probability per epoch", 1.0, False),
                ("frac_past_log_end", "share of targets with p_y > log_end", "Share of targets past log_end per epoch",
                 1.0, False),
            ):
                name = f"{slug}_{metric}.png"
                caption = _plot(g, metric, ylabel, what, out / name, scale, zoom)
                if caption is None:
                    doc.p(f"{what}: no run logged `{metric}`.")
                else:
                    doc.img(name, f"{what}, {g.title}")
                    if metric == "p_target":
                        caption += (" `p_target`: mean probability of the true class on the training batches of"
                                    " each epoch (the model as it trained).")
                    if metric == "frac_past_log_end":
                        caption += (" `frac_past_log_end`: share of the training targets (tokens, in translation) whose"
                                    " p_y exceeded the run's log_end, where the conservative bonus turns linear; CE"
                                    " rows use the recipe's loss.log_end, as a reference.")
                    doc.p(caption)
            for render in _SECTIONS.values():
                render(store, g, doc, out, slug)
            doc.h(3, "Signatures")
            doc.code("\n".join(f"{row.loss_label}: {row.signature()}" for row in g.rows))
        if g.unfinished:
            items = []
            for r in g.unfinished:
                err = (r.get("error") or "").strip().splitlines()
                err_text = f": {err[-1][:200]}" if err else ""
                items.append(f"`{r['run_id']}` ({r['loss_label']}, seed {r['seed']}): {r['status']}{err_text}")
            doc.p(f"Left out of every number above, not finished ({len(g.unfinished)}):")
            doc.ul(items)

    md_path = out / "report.md"
    _atomic_write(md_path, doc.markdown())
    if html:
        _atomic_write(out / "report.html", doc.html(title))
    return md_path


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
