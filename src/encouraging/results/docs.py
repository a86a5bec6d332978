"""Result tables in the docs, generated from committed records, and the check that they are current.

A markdown file holds a block

    <!-- results: results/mt recipe=quick-multi30k -->
    (generated text)
    <!-- /results -->

whose first line names a folder (or file) of records, relative to the repository root, and optional filters on
the runs (any of :data:`~encouraging.results.store.RUN_FILTERS`, ``key=value``, a comma for several values).
:func:`update_docs` rewrites every block from its records (``make results``); with ``check=True`` it writes nothing
and returns the stale blocks, which the test suite requires to be none. A block prints, per recipe, the loss rows
(mean ± std over seeds, "n = 1" where one seed ran), the paired differences from CE with their 95% intervals, and
what the numbers rest on: seeds, epochs, selection rule, test set, machine and code commit.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measures import difference_table, measure_values, registered_measures, summary_table
from .records import records_store
from .report import COLUMNS, DIGITS, MINUS, Group, LossRow, _fmt_summary, collect, group_rows
from .stats import compare, summarize
from .store import RUN_FILTERS, ResultsStore

__all__ = ["Block", "render_block", "update_docs"]

BLOCK = re.compile(r"(?P<head><!-- results: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(?P<tail><!-- /results -->)",
                   re.S)


@dataclass
class Block:
    """What a results block asks for: ``SOURCE [key=value ...] [pairs=BASE :: OTHER; ...]``.

    ``key`` is a run filter (:data:`~encouraging.results.store.RUN_FILTERS`; a comma gives several values) or
    ``rows=KIND value=FIELD by=FIELD,...``: instead of the training table, one row per distinct ``by`` value of the
    runs' stored rows of ``KIND`` (an evaluation such as ``attack``), with ``FIELD``'s mean ± std per loss and the
    paired differences; or ``measures=NAME``: the numbers a registered :class:`~.measures.Measures` derives from
    each run's rows (e.g. ``analyses``), one line each, then their differences. ``pairs=`` (the rest of the line)
    names the loss labels to difference instead of each loss against CE."""

    source: str
    filters: dict[str, Any] = field(default_factory=dict)
    pairs: list[tuple[str, str]] | None = None
    rows: str | None = None
    value: str | None = None
    by: tuple[str, ...] = ()
    measures: str | None = None

    @classmethod
    def parse(cls, spec: str, where: str) -> Block:
        spec, _, pair_text = spec.partition(" pairs=")
        source, *items = spec.split()
        block = cls(source)
        for item in items:
            key, sep, value = item.partition("=")
            if sep and key in ("rows", "value", "measures"):
                setattr(block, key, value)
            elif sep and key == "by":
                block.by = tuple(value.split(","))
            elif sep and key in RUN_FILTERS:
                values = [int(v) if key == "seed" else v for v in value.split(",")]
                block.filters[key] = values if len(values) > 1 else values[0]
            else:
                raise ValueError(f"{where}: results block option {item!r} is not key=value with a key of "
                                 f"{', '.join(RUN_FILTERS)}, rows, value, by, measures or pairs")
        if block.rows is not None and (block.value is None or not block.by):
            raise ValueError(f"{where}: results block rows={block.rows} needs value=FIELD and by=FIELD,...")
        if block.rows is not None and block.measures is not None:
            raise ValueError(f"{where}: a results block takes rows= or measures=, not both")
        if pair_text:
            block.pairs = []
            for pair in pair_text.split(";"):
                base, sep, other = pair.partition("::")
                if not sep or not base.strip() or not other.strip():
                    raise ValueError(f"{where}: results block pair {pair.strip()!r} is not 'BASE :: OTHER'")
                block.pairs.append((base.strip(), other.strip()))
        return block


def _distinct_notes(notes: list[str]) -> str:
    """The notes, or the first and a count where every seed wrote its own (a split per seed)."""
    return "; ".join(notes) if len(notes) <= 2 else f"{notes[0]}; and {len(notes) - 1} more like it"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _ranges(values: list[int]) -> str:
    """``0-2, 5`` for seeds 0, 1, 2, 5."""
    values, out, start = sorted(set(values)), [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _compared(groups: list[Group], block: Block) -> list[tuple[str, LossRow, LossRow]]:
    """(title, base, other) for each difference the block shows: its pairs, else each loss against its CE. A
    pair's label may name its recipe, ``LABEL@RECIPE``, to difference runs of two recipes (same seeds)."""
    if block.pairs is None:
        return [(p.title, p.base, p.row) for g in groups for p in g.pairs]
    rows = {}
    for g in groups:
        for row in g.rows:
            rows[f"{row.loss_label}@{g.recipe}"] = row
            if len(groups) == 1:
                rows[row.loss_label] = row
    missing = [label for pair in block.pairs for label in pair if label not in rows]
    if missing:
        raise ValueError(f"results block of {block.source}: no loss labelled {missing[0]!r} in "
                         f"{', '.join(g.title for g in groups)} (labels: {', '.join(rows)})")
    return [(f"{b} {MINUS} {a}", rows[a], rows[b]) for a, b in block.pairs]


def _differences(compared: list[tuple[str, LossRow, LossRow]], columns: list[str], extra: list[str],
                 scale: float) -> list[str]:
    if not compared:
        return []
    lines = ["", _row(["difference (95% CI, paired over seeds)", *(COLUMNS[c][1] for c in columns), *extra]),
             _row(["---"] * (1 + len(columns) + len(extra)))]
    for title, base, row in compared:
        cells = [compare(base.values[c], row.values[c]) for c in columns]
        cells += [compare(base.extra[x], row.extra[x]) for x in extra]
        lines.append(_row([title, *(c.format(scale, DIGITS) for c in cells)]))
    return lines


def _facts(g: Group, source: str, extra: list[str] = (), rows: list[LossRow] | None = None,
           run_ids: set[str] | None = None) -> str:
    """The line under a table: what the numbers of ``rows`` (default: the group's) rest on; ``run_ids``: only
    these of their runs (those with the evaluation rows a table shows)."""
    rows = g.rows if rows is None else rows
    shown = [(row, r) for row in rows for r in row.runs if run_ids is None or r["run_id"] in run_ids]
    runs = [r for _, r in shown]
    epochs = sorted({len(r["epochs"]) for row, r in shown if r not in row.diverged})
    selection = sorted({str(r["final"].get("selection", "last")) for r in runs})
    facts = [
        f"{len(runs)} runs from `{source}`",
        f"seeds {_ranges([r['seed'] for r in runs])}",
        "epochs " + (f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} (varies by run)"),
        "selection: " + ", ".join({"val": "on the validation split"}.get(s, s) for s in selection),
        "test set: " + (_distinct_notes(g.test_notes) or "not recorded"),
        *extra,
        "machine: " + "; ".join(sorted({r["hardware"] for r in runs})),
        "code: " + ", ".join(sorted({(r.get("git_commit") or "unknown")[:7] for r in runs})),
    ]
    diverged = [f"{row.loss_label} seed {r['seed']}" for row, r in shown if r in row.diverged]
    if diverged:
        facts.append("diverged (counted in n, left out of the numbers): " + ", ".join(diverged))
    if g.table_notes:
        facts.append(_distinct_notes(g.table_notes))
    return "*" + "; ".join(facts) + ".*"


def _group_text(g: Group, block: Block, compared: list[tuple[str, LossRow, LossRow]],
                only: list[LossRow] | None = None) -> str:
    """The table of a group's losses (``only``: these rows) with the differences ``compared``."""
    scale = g.metric.scale
    with_paper = any(row.paper is not None for row in g.rows)
    headers = ["loss", "n", *(g.heading(c) for c in g.columns), *g.extra,
               *(["paper (their recipe)"] if with_paper else [])]
    lines = [f"**{g.title}**", "", _row(headers), _row(["---"] * len(headers))]
    shown = g.rows if only is None else [r for r in g.rows if any(r is o for o in only)]
    for row in shown:
        paper = []
        if with_paper:
            paper = ["–" if row.paper is None else
                     row.paper.format() + ("" if row.paper.same_model else " (other model)")]
        lines.append(_row([row.loss_label, row.n_text(),
                           *(_fmt_summary(row.summary(c), scale) for c in g.columns),
                           *(_fmt_summary(summarize(row.extra[x].values()), scale) for x in g.extra), *paper]))
    lines += _differences(compared, g.columns, g.extra, scale)
    return "\n".join([*lines, "", _facts(g, block.source, rows=shown)])


def _rows_text(store: ResultsStore, g: Group, block: Block) -> str:
    """The pivot of a ``rows=`` block: per distinct ``by`` value, ``value`` per loss over seeds, and differences."""
    rows = group_rows(store, g, block.rows)
    if not rows:
        raise ValueError(f"results block of {block.source}: no rows of kind {block.rows!r} in {g.title}")
    missing = [k for k in (block.value, *block.by) if k not in rows[0]]
    if missing:
        raise ValueError(f"results block of {block.source}: rows of kind {block.rows!r} have no field "
                         f"{missing[0]!r} (fields: {', '.join(sorted(rows[0]))})")
    # key -> loss label -> seed -> value
    table: dict[tuple, dict[str, dict[int, float]]] = {}
    for r in rows:
        table.setdefault(tuple(r[k] for k in block.by), {}).setdefault(r["loss_label"], {})[int(r["seed"])] = \
            r[block.value]
    scale = g.metric.scale
    compared = _compared([g], block)
    headers = [*block.by, *(f"{row.loss_label} (n)" for row in g.rows), *(title for title, _, _ in compared)]
    lines = [f"**{g.title}: {block.rows} rows, {block.value} (scaled by {scale:g})**", "", _row(headers),
             _row(["---"] * len(headers))]
    for key in sorted(table, key=lambda k: tuple((isinstance(v, str), v) for v in k)):
        by_loss = table[key]
        cells = [str(v) if not isinstance(v, float) else f"{v:g}" for v in key]
        for row in g.rows:
            values = by_loss.get(row.loss_label, {})
            cells.append(f"{_fmt_summary(summarize(values.values()), scale)} ({len(values)})" if values else "–")
        for _, base, other in compared:
            a, b = by_loss.get(base.loss_label, {}), by_loss.get(other.loss_label, {})
            cells.append(compare(a, b).format(scale, DIGITS) if a and b else "–")
        lines.append(_row(cells))
    counts = sorted({r["n"] for r in rows if "n" in r})
    extra = [f"{block.rows} rows on {', '.join(map(str, counts))} test examples"] if counts else []
    return "\n".join([*lines, "", _facts(g, block.source, extra, run_ids={r["run_id"] for r in rows})])


def _measures_text(store: ResultsStore, g: Group, block: Block) -> str:
    """The tables of a ``measures=`` block: each measure per loss over seeds, then the differences."""
    spec = registered_measures(block.measures)
    values, run_ids = measure_values(store, g.rows, spec)
    values = {label: seeds for label, seeds in values.items() if seeds}
    if not values:
        raise ValueError(f"results block of {block.source}: no finite run of {g.title} has rows of "
                         f"{', '.join(spec.kinds)}")
    shown = [row for row in g.rows if any(r["run_id"] in run_ids for r in row.runs)]
    pairs = [(base.loss_label, other.loss_label) for _, base, other in _compared([g], block)
             if base.loss_label in values and other.loss_label in values]
    lines = [f"**{g.title}: {block.measures}**", ""]
    for headers, body in (summary_table(values, spec), difference_table(values, spec, pairs)):
        if body:
            lines += [_row(headers), _row(["---"] * len(headers)), *map(_row, body), ""]
    return "\n".join([*lines, _facts(g, block.source, rows=shown, run_ids=run_ids)])


def render_block(store: ResultsStore, block: Block) -> str:
    """The generated text of one block: one table per recipe of the matching runs, each with its differences, or,
    where a pair names recipes (``LABEL@RECIPE``), the tables of the paired losses only and then one table of the
    differences across recipes."""
    groups = [g for g in collect(store, **block.filters) if g.rows]
    if not groups:
        raise ValueError(f"no finished runs in {block.source} match {block.filters or 'the block'}")
    if block.rows:
        texts = [_rows_text(store, g, block) for g in groups]
    elif block.measures:
        texts = [_measures_text(store, g, block) for g in groups]
    elif block.pairs and any("@" in label for pair in block.pairs for label in pair):
        compared = _compared(groups, block)
        shown = [row for _, base, other in compared for row in (base, other)]
        groups = [g for g in groups if any(r is s for r in g.rows for s in shown)]
        texts = [_group_text(g, block, [], only=shown) for g in groups]
        columns = [c for c in COLUMNS if all(c in g.columns for g in groups)]
        extra = [x for x in groups[0].extra if all(x in g.extra for g in groups)]
        texts.append("\n".join(_differences(compared, columns, extra, groups[0].metric.scale)).lstrip("\n"))
    else:
        texts = [_group_text(g, block, _compared([g], block)) for g in groups]
    return "\n\n".join(texts) + "\n"


def update_docs(files: list[str | os.PathLike], root: str | os.PathLike = ".", *, check: bool = False) -> list[str]:
    """Regenerate every results block of ``files`` from the records it names (relative to ``root``); return
    ``file: block`` for each block that was stale (``check=True``: only report them, write nothing)."""
    root = Path(root)
    stores: dict[str, ResultsStore] = {}
    stale: list[str] = []

    def fill(match: re.Match, path: Path) -> str:
        block = Block.parse(match["spec"], str(path))
        if block.source not in stores:
            stores[block.source] = records_store([root / block.source])
        body = render_block(stores[block.source], block)
        if body != match["body"]:
            stale.append(f"{path}: results block '{match['spec']}'")
        return match["head"] + body + match["tail"]

    for name in files:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        new = BLOCK.sub(lambda match, path=path: fill(match, path), text)
        if new != text and not check:
            path.write_text(new, encoding="utf-8")
    return stale
