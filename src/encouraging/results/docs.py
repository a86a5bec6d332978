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
from pathlib import Path
from typing import Any

from .records import records_store
from .report import COLUMNS, DIGITS, MINUS, Group, _fmt_summary, collect
from .stats import compare, summarize
from .store import RUN_FILTERS, ResultsStore

__all__ = ["render_block", "update_docs"]

BLOCK = re.compile(r"(?P<head><!-- results: (?P<spec>[^\n]*?) -->\n)(?P<body>.*?)(?P<tail><!-- /results -->)",
                   re.S)


def _parse(spec: str, where: str) -> tuple[str, dict[str, Any], list[tuple[str, str]] | None]:
    """``SOURCE [key=value ...] [pairs=BASE :: OTHER; ...]``: the records, run filters and, optionally, the
    pairs of loss labels to difference (instead of each loss against CE); ``pairs=`` takes the rest of the line."""
    spec, _, pair_text = spec.partition(" pairs=")
    source, *items = spec.split()
    filters: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in RUN_FILTERS:
            raise ValueError(f"{where}: results block filter {item!r} is not key=value with a key of "
                             f"{', '.join(RUN_FILTERS)}")
        values = [int(v) if key == "seed" else v for v in value.split(",")]
        filters[key] = values if len(values) > 1 else values[0]
    pairs = None
    if pair_text:
        pairs = []
        for pair in pair_text.split(";"):
            base, sep, other = pair.partition("::")
            if not sep or not base.strip() or not other.strip():
                raise ValueError(f"{where}: results block pair {pair.strip()!r} is not 'BASE :: OTHER'")
            pairs.append((base.strip(), other.strip()))
    return source, filters, pairs


def _distinct_notes(notes: list[str]) -> str:
    """The notes, or the first and a count where every seed wrote its own (a split per seed)."""
    return "; ".join(notes) if len(notes) <= 2 else f"{notes[0]}; and {len(notes) - 1} more like it"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ranges(values: list[int]) -> str:
    """``0-2, 5`` for seeds 0, 1, 2, 5."""
    values, out, start = sorted(set(values)), [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(out)


def _group_text(g: Group, source: str, pairs: list[tuple[str, str]] | None) -> str:
    scale = g.metric.scale
    with_paper = any(row.paper is not None for row in g.rows)
    headers = ["loss", "n", *(g.heading(c) for c in g.columns), *g.extra,
               *(["paper (their recipe)"] if with_paper else [])]
    lines = [f"**{g.title}**", "", _row(headers), _row(["---"] * len(headers))]
    for row in g.rows:
        paper = []
        if with_paper:
            paper = ["–" if row.paper is None else
                     row.paper.format() + ("" if row.paper.same_model else " (other model)")]
        lines.append(_row([row.loss_label, row.n_text(),
                           *(_fmt_summary(row.summary(c), scale) for c in g.columns),
                           *(_fmt_summary(summarize(row.extra[x].values()), scale) for x in g.extra), *paper]))
    if pairs is None:
        compared = [(p.title, p.base, p.row) for p in g.pairs]
    else:
        by_label = {row.loss_label: row for row in g.rows}
        missing = [label for pair in pairs for label in pair if label not in by_label]
        if missing:
            raise ValueError(f"results block of {source}: no loss labelled {missing[0]!r} in {g.title} "
                             f"(labels: {', '.join(by_label)})")
        compared = [(f"{b} {MINUS} {a}", by_label[a], by_label[b]) for a, b in pairs]
    if compared:
        lines += ["", _row(["difference (95% CI, paired over seeds)", *(COLUMNS[c][1] for c in g.columns),
                            *g.extra]),
                  _row(["---"] * (1 + len(g.columns) + len(g.extra)))]
        for title, base, row in compared:
            cells = [compare(base.values[c], row.values[c]) for c in g.columns]
            cells += [compare(base.extra[x], row.extra[x]) for x in g.extra]
            lines.append(_row([title, *(c.format(scale, DIGITS) for c in cells)]))
    runs = [r for row in g.rows for r in row.runs]
    epochs = sorted({len(r["epochs"]) for row in g.rows for r in row.runs if r not in row.diverged})
    selection = sorted({str(r["final"].get("selection", "last")) for r in runs})
    facts = [
        f"{len(runs)} runs from `{source}`",
        f"seeds {_ranges([r['seed'] for r in runs])}",
        "epochs " + (f"{epochs[0]}" if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} (varies by run)"),
        "selection: " + ", ".join({"val": "on the validation split"}.get(s, s) for s in selection),
        "test set: " + (_distinct_notes(g.test_notes) or "not recorded"),
        "machine: " + "; ".join(sorted({r["hardware"] for r in runs})),
        "code: " + ", ".join(sorted({(r.get("git_commit") or "unknown")[:7] for r in runs})),
    ]
    diverged = [f"{row.loss_label} seed {r['seed']}" for row in g.rows for r in row.diverged]
    if diverged:
        facts.append("diverged (counted in n, left out of the numbers): " + ", ".join(diverged))
    if g.table_notes:
        facts.append(_distinct_notes(g.table_notes))
    lines += ["", "*" + "; ".join(facts) + ".*"]
    return "\n".join(lines)


def render_block(store: ResultsStore, source: str, filters: dict[str, Any],
                 pairs: list[tuple[str, str]] | None = None) -> str:
    """The generated text of one block: one table (and its differences) per recipe of the matching runs."""
    groups = [g for g in collect(store, **filters) if g.rows]
    if not groups:
        raise ValueError(f"no finished runs in {source} match {filters or 'the block'}")
    return "\n\n".join(_group_text(g, source, pairs) for g in groups) + "\n"


def update_docs(files: list[str | os.PathLike], root: str | os.PathLike = ".", *, check: bool = False) -> list[str]:
    """Regenerate every results block of ``files`` from the records it names (relative to ``root``); return
    ``file: block`` for each block that was stale (``check=True``: only report them, write nothing)."""
    root = Path(root)
    stores: dict[str, ResultsStore] = {}
    stale: list[str] = []

    def fill(match: re.Match, path: Path) -> str:
        source, filters, pairs = _parse(match["spec"], str(path))
        if source not in stores:
            stores[source] = records_store([root / source])
        body = render_block(stores[source], source, filters, pairs)
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
