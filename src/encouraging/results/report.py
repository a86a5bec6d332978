"""Reports from the results store: markdown (and optional HTML) with tables, paired comparisons and PNG curves.

Runs group into comparisons by ``(recipe, dataset, model)``; within a group the rows are losses
``(loss, loss_label)`` and the repetitions are seeds. For each group the report gives:

* a table, one row per loss: seeds, best-epoch and final test accuracy (%, mean ± sample std over seeds), the best
  epoch, and the paper's number where one exists, labelled "paper (their recipe)" with its model and recipe in a
  footnote (our quick recipes are not the paper's);
* each other loss against CE: the mean difference over shared seeds with a 95% t-interval and a paired t-test
  (Welch when the seeds do not match), saying plainly whether the interval excludes 0, and whether the paper's
  direction holds;
* curves: test accuracy and mean target probability per epoch, mean over seeds with a min–max band;
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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .paper import PaperNumber, canonical_loss, paper_number
from .stats import Comparison, Summary, compare, format_signed, summarize
from .store import ResultsStore
from .style import loss_styles, new_figure

__all__ = ["Group", "LossRow", "collect", "comparison_rows", "group_tables", "table_rows", "write_report"]

SCALE = 100.0  # accuracies are stored as fractions; reports show %
DIGITS = 2
DEFAULT_LOG_END = 0.75  # EncouragingLoss's default, assumed when an EL run's config does not record log_end
MINUS = "\u2212"


# ---------------------------------------------------------------------------------------------------------------------
# Collecting runs into groups
# ---------------------------------------------------------------------------------------------------------------------


def _param(params: Mapping[str, Any], *names: str) -> Any:
    for n in names:
        if n in params and params[n] is not None:
            return params[n]
    return None


# The loss arguments that matter per loss family (the run config records every LossConfig field, used or not) and
# the values that mean "off" (hidden in tables, kept in signatures).
_RELEVANT = {
    "ce": ("label_smoothing",),
    "el": ("log_end", "bonus_scale", "bonus", "gamma", "bonus_start", "label_smoothing", "schedule",
           "schedule_length", "defer", "schedule_target", "bonus_weight"),
    "poly1": ("epsilon", "label_smoothing"),
    "focal": ("focal_gamma", "gamma", "alpha"),
    "hfl": ("focal_gamma", "gamma", "halt", "alpha"),
}  # fmt: skip
_FAMILY = {"poly": "poly1", "poly1": "poly1", "focal": "focal", "hfl": "hfl", "haltedfocal": "hfl"}
_NEUTRAL = {"label_smoothing": 0.0, "bonus_start": 0.0, "defer": 0.0, "schedule": "constant", "schedule_length": 0.0,
            "bonus_scale": 1.0, "bonus": "log"}  # fmt: skip


def _relevant_params(loss: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The loss's own arguments (all of them for a loss family we do not know)."""
    family = canonical_loss(loss) or _FAMILY.get(re.sub(r"[^a-z0-9]", "", loss.lower()))
    if family not in _RELEVANT:
        return dict(params)
    keep = {k: v for k, v in params.items() if k in _RELEVANT[family]}
    if family == "el":
        if keep.get("bonus", "log") != "power":
            keep.pop("gamma", None)  # the power bonus's exponent
        if keep.get("schedule", "constant") == "constant" and not keep.get("defer"):
            keep.pop("schedule_target", None)
            keep.pop("schedule_length", None)
    return keep


def _shown_params(loss: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`_relevant_params` without the values that switch a feature off."""
    return {k: v for k, v in _relevant_params(loss, params).items() if not (k in _NEUTRAL and v == _NEUTRAL[k])}


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


@dataclass
class LossRow:
    """One loss in a group: its runs (one per seed) and their summaries."""

    loss: str
    loss_label: str
    loss_params: dict
    runs: list[dict]  # run dicts from the store, each with "final" and "epochs" added
    best: dict[int, float]  # seed -> best-epoch test accuracy (fraction)
    final: dict[int, float]  # seed -> last-epoch test accuracy (fraction)
    best_epoch: dict[int, float]
    best_summary: Summary
    final_summary: Summary
    paper: PaperNumber | None = None

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.runs)

    @property
    def is_ce(self) -> bool:
        return canonical_loss(self.loss) == "ce"

    @property
    def label_smoothing(self) -> float:
        return _float(_param(self.loss_params, "label_smoothing", "smoothing", "ls")) or 0.0

    @property
    def log_end(self) -> float | None:
        le = _float(_param(self.loss_params, "log_end", "le"))
        if le is None and canonical_loss(self.loss) == "el":
            return DEFAULT_LOG_END
        return le

    def params_text(self) -> str:
        """The loss's own arguments that are switched on, e.g. ``log_end=0.75``."""
        keep = {k: v for k, v in _shown_params(self.loss, self.loss_params).items() if not isinstance(v, list)}
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(keep.items()))

    def signature(self) -> str:
        """sacrebleu-style: every setting a number depends on, in one line."""
        parts = [f"loss:{self.loss}"]
        params = _relevant_params(self.loss, self.loss_params)
        parts += [f"{k}:{v:g}" if isinstance(v, float) else f"{k}:{v}" for k, v in sorted(params.items())]
        parts.append("seeds:" + ",".join(str(s) for s in self.seeds))
        n_epochs = sorted({len(r["epochs"]) for r in self.runs})
        parts.append("epochs:" + ",".join(str(n) for n in n_epochs))
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
    """One loss against its CE baseline in a group, on best-epoch and final accuracy."""

    row: LossRow
    base: LossRow
    best: Comparison
    final: Comparison

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


def _best_and_final(run: dict) -> tuple[float | None, float | None, float | None]:
    final, epochs = run["final"], run["epochs"]
    accs = [(e["epoch"], _float(e.get("test_acc"))) for e in epochs]
    accs = [(ep, a) for ep, a in accs if a is not None]
    best = _float(final.get("best_test_acc"))
    best_epoch = _float(final.get("best_epoch"))
    if best is None and accs:
        best_epoch, best = max(accs, key=lambda t: (t[1], -t[0]))
    last = _float(final.get("final_test_acc"))
    if last is None and accs:
        last = accs[-1][1]
    return best, last, best_epoch


def _open(store_or_path: ResultsStore | str | os.PathLike) -> ResultsStore:
    if isinstance(store_or_path, ResultsStore):
        return store_or_path
    path = Path(store_or_path)
    if not path.exists():  # do not create an empty database just to report on it
        raise FileNotFoundError(f"no results database at {path}")
    return ResultsStore(path)


def _make_row(runs: list[dict], label: str) -> LossRow:
    best, final, best_epoch = {}, {}, {}
    for r in runs:
        b, f, be = _best_and_final(r)
        if b is not None:
            best[r["seed"]] = b
        if f is not None:
            final[r["seed"]] = f
        if be is not None:
            best_epoch[r["seed"]] = be
    params = dict(runs[0].get("loss_params") or {})
    return LossRow(
        loss=runs[0]["loss"],
        loss_label=label,
        loss_params=params,
        runs=runs,
        best=best,
        final=final,
        best_epoch=best_epoch,
        best_summary=summarize(best.values()),
        final_summary=summarize(final.values()),
    )


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

    groups = []
    for key in sorted(set(by_group) | set(pending)):
        group_runs = by_group.get(key, [])
        notes = []
        by_loss: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for r in group_runs:
            by_loss[(r["loss"], r["loss_label"])].append(r)
        rows = []
        for (_loss, label), lruns in by_loss.items():
            seeds = Counter(r["seed"] for r in lruns)
            hashes = sorted({r["config_hash"] for r in lruns})
            if len(hashes) > 1 and max(seeds.values()) > 1:
                # the same label and seed under two configs: those are two settings, not two repetitions
                notes.append(
                    f"{label}: runs with the same seed come from {len(hashes)} different configs; "
                    "shown as separate rows, labelled by config hash"
                )
                for h in hashes:
                    rows.append(_make_row([r for r in lruns if r["config_hash"] == h], f"{label} [cfg {h[:7]}]"))
            else:
                rows.append(_make_row(lruns, label))
        rows.sort(key=lambda row: (not row.is_ce, row.label_smoothing, row.loss_label))
        task = group_runs[0]["task"] if group_runs else pending[key][0]["task"]
        g = Group(key[0], key[1], key[2], task, rows, unfinished=pending.get(key, []), notes=notes)
        for row in rows:
            row.paper = paper_number(
                g.dataset, g.model, row.loss, row.log_end if canonical_loss(row.loss) == "el" else None,
                label_smoothing=row.label_smoothing,
            )  # fmt: skip
        if rows and not any(r.is_ce for r in rows):
            notes.append("no CE run in this group: no comparison with CE")
        for row in rows:
            base = _baseline(row, rows)
            if base is None or (row.is_ce and row.label_smoothing == 0.0):
                continue
            g.pairs.append(Pair(row, base, compare(base.best, row.best), compare(base.final, row.final)))
        groups.append(g)
    return groups


# ---------------------------------------------------------------------------------------------------------------------
# Plain rows for the CLI
# ---------------------------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> float | None:
    return None if x is None else x * SCALE


def _fmt_summary(s: Summary) -> str:
    if s.mean is None:
        return "n/a"
    if s.std is None:
        return f"{s.mean * SCALE:.{DIGITS}f} (n = 1, no std)"
    return f"{s.mean * SCALE:.{DIGITS}f} ± {s.std * SCALE:.{DIGITS}f}"


def table_rows(store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any) -> list[dict[str, Any]]:
    """One dict per (group, loss) with raw numbers (in %) and display strings, ready for a rich table.

    Keys: recipe, dataset, model, loss, loss_label, params, n, seeds, best_mean, best_std, final_mean, final_std,
    best_epoch_mean, best (text), final (text), paper (text or None), paper_note, test_note, vs_ce_best,
    vs_ce_final (texts or None), signature.
    """
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    out = []
    for g in groups:
        pairs = {id(p.row): p for p in g.pairs}
        for row in g.rows:
            p = pairs.get(id(row))
            be = summarize(row.best_epoch.values())
            out.append(
                {
                    "recipe": g.recipe,
                    "dataset": g.dataset,
                    "model": g.model,
                    "loss": row.loss,
                    "loss_label": row.loss_label,
                    "params": row.params_text(),
                    "n": len(row.runs),
                    "seeds": row.seeds,
                    "best_mean": _pct(row.best_summary.mean),
                    "best_std": _pct(row.best_summary.std),
                    "final_mean": _pct(row.final_summary.mean),
                    "final_std": _pct(row.final_summary.std),
                    "best_epoch_mean": be.mean,
                    "best": _fmt_summary(row.best_summary),
                    "final": _fmt_summary(row.final_summary),
                    "paper": row.paper.format() if row.paper else None,
                    "paper_note": row.paper.describe() if row.paper else None,
                    "test_note": "; ".join(g.test_notes) or None,
                    "vs_ce_best": p.best.format(SCALE, DIGITS) if p else None,
                    "vs_ce_final": p.final.format(SCALE, DIGITS) if p else None,
                    "signature": row.signature(),
                }
            )
    return out


def group_tables(store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any) -> list[dict[str, Any]]:
    """One table per group, ready for ``rich.table.Table``.

    Each dict has ``recipe``, ``dataset``, ``model``, ``task``, ``title``, ``caption`` (test-set note and how to
    read the numbers), ``columns`` (names) and ``rows`` (dicts keyed by those names, values are strings), plus
    ``comparisons`` (one line per loss vs CE, as in the report) and ``notes`` (why something is missing).
    """
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    columns = ["loss", "n", "best acc (%)", "final acc (%)", "vs CE, best (pts)", "paper (their recipe)"]
    out = []
    for g in groups:
        pairs = {id(p.row): p for p in g.pairs}
        rows = []
        for row in g.rows:
            p = pairs.get(id(row))
            paper = "–"
            if row.paper is not None:
                paper = row.paper.format() + ("" if row.paper.same_model else " (other model)")
            rows.append(
                {
                    "loss": row.loss_label,
                    "n": str(len(row.runs)),
                    "best acc (%)": _fmt_summary(row.best_summary),
                    "final acc (%)": _fmt_summary(row.final_summary),
                    "vs CE, best (pts)": p.best.format(SCALE, DIGITS) if p else "–",
                    "paper (their recipe)": paper,
                }
            )
        caption = "mean ± std over seeds; vs CE: B − A [95% CI], paired t-test p, n seeds"
        if g.test_notes:
            caption = "test set: " + "; ".join(g.test_notes) + "\n" + caption
        comparisons = [
            f"{p.title}, {name}: {c.format(SCALE, DIGITS)}: {c.verdict()}"
            for p in g.pairs
            for name, c in (("best", p.best), ("final", p.final))
        ]
        notes = list(g.notes)
        if g.unfinished:
            notes.append(f"{len(g.unfinished)} unfinished run(s) left out")
        out.append(
            {
                "recipe": g.recipe,
                "dataset": g.dataset,
                "model": g.model,
                "task": g.task,
                "title": g.title,
                "caption": caption,
                "columns": columns,
                "rows": rows,
                "comparisons": comparisons,
                "notes": notes,
            }
        )
    return out


def comparison_rows(
    store_or_path: ResultsStore | str | os.PathLike | list[Group], **filters: Any
) -> list[dict[str, Any]]:
    """One dict per (group, loss vs its CE baseline, metric): difference in points with its CI and test."""
    groups = store_or_path if isinstance(store_or_path, list) else collect(store_or_path, **filters)
    out = []
    for g in groups:
        for p in g.pairs:
            for metric, c in (("best", p.best), ("final", p.final)):
                out.append(
                    {
                        "recipe": g.recipe,
                        "dataset": g.dataset,
                        "model": g.model,
                        "a": p.base.loss_label,
                        "b": p.row.loss_label,
                        "metric": metric,
                        "method": c.method,
                        "n": c.n if c.method != "welch" else c.n_a + c.n_b,
                        "diff": _pct(c.mean_diff),
                        "ci_low": _pct(c.ci_low),
                        "ci_high": _pct(c.ci_high),
                        "p": c.p,
                        "excludes_zero": c.excludes_zero,
                        "text": f"{p.title}: {c.format(SCALE, DIGITS)}",
                        "verdict": c.verdict(),
                        "note": c.note,
                    }
                )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------------------------------


def _curve(row: LossRow, metric: str, scale: float) -> tuple[list, list, list, list] | None:
    """Mean, min and max over seeds of one metric per epoch (epochs some seed logged it)."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for r in row.runs:
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
        n = len(row.runs)
        ax.plot(xs, mean, style, color=color, lw=1.8, marker="o" if len(xs) <= 20 else None, ms=3,
                label=f"{row.loss_label}, n = {n}")  # fmt: skip
        if n > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        tail = len(xs) // 4  # zoom so the last three quarters of training are in view (early epochs squash the rest)
        zoom_lows.append(min(lo[tail:]))
    all_lo = min(min(c[2]) for _, c in curves)
    all_hi = max(max(c[3]) for _, c in curves)
    caption = f"{title}: mean over seeds, shaded band = min–max over seeds; CE dashed."
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
    """Does our best-epoch difference agree with the paper's direction (their recipe)?"""
    if p.row.paper is None or p.base.paper is None or p.row.paper.metric != p.base.paper.metric:
        return None
    paper_diff = p.row.paper.mean - p.base.paper.mean
    c = p.best
    text = f"paper (their recipe): {format_signed(paper_diff, DIGITS)} points"
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
    all_runs = store.runs(**filters)
    counts = Counter(r["status"] for r in all_runs)

    doc = Doc()
    doc.h(1, title)
    doc.ul(
        [
            f"database: `{store.path}`",
            f"written: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
            f"runs: {len(all_runs)} ({counts.get('finished', 0)} finished, {counts.get('running', 0)} running, "
            f"{counts.get('failed', 0)} failed)" + (f"; filters: {filters}" if filters else ""),
            f"hardware: {_distinct([r['hardware'] for r in all_runs])}",
            f"versions: {_versions_text(all_runs)}",
            f"git commits: {_distinct([(r.get('git_commit') or 'none')[:12] for r in all_runs])}",
        ]
    )
    doc.p(
        "How to read: accuracies are top-1 test accuracy in %, mean ± sample std (ddof = 1) over seeds. "
        "*Best* is the best epoch's test accuracy (chosen on the test set, as the paper does, so it is optimistic); "
        "*final* is the last epoch's. Differences are in percentage points, B − A over the seeds both losses ran, "
        "with a 95% t-interval and a two-sided paired t-test (Welch's unpaired test when seeds do not match). "
        '"paper (their recipe)" is the paper\'s number for its own model and schedule, shown for orientation: '
        "our recipes are not the paper's, so only the direction of a difference is comparable."
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
                be = summarize(row.best_epoch.values())
                table.append(
                    [
                        row.loss_label,
                        row.params_text() or "–",
                        str(len(row.runs)),
                        _fmt_summary(row.best_summary),
                        _fmt_summary(row.final_summary),
                        "–" if be.mean is None else f"{be.mean:.1f}",
                        paper,
                    ]
                )
            doc.table(
                ["loss", "params", "n seeds", "best test acc (%)", "final test acc (%)", "best epoch (mean)",
                 "paper (their recipe)"],
                table,
                ["l", "l", "r", "r", "r", "r", "r"],
            )  # fmt: skip
            notes = g.test_notes
            doc.p("Test set: " + ("; ".join(notes) if notes else "not recorded in the run config."))
            if footnotes:
                doc.ul([f"[{i + 1}] {pn.format()}: {pn.describe()}" for i, pn in enumerate(footnotes)])
            single = [row.loss_label for row in g.rows if len(row.runs) == 1]
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
                for name, c in (("best", p.best), ("final", p.final)):
                    if c.method == "none":  # format() already says why there is no interval
                        items.append(f"{name}: {p.title}: {c.format(SCALE, DIGITS)}.")
                        continue
                    method = {"paired": "paired t-test", "welch": "Welch t-test"}[c.method]
                    if c.note:
                        method += f"; {c.note}"
                    verdict = (
                        c.verdict()
                        .replace("B > A", f"{p.row.loss_label} higher")
                        .replace("B < A", f"{p.row.loss_label} lower")
                    )
                    items.append(f"{name}: {p.title}: {c.format(SCALE, DIGITS)} ({method}): {verdict}.")
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
                ("test_acc", "test accuracy (%)", "Test accuracy per epoch", SCALE, True),
                ("p_target", "mean target probability p_y", "Mean target probability per epoch", 1.0, False),
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
