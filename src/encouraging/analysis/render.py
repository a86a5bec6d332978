"""Tables and figures of the analyses, drawn from the flat rows alone (so a report can redraw them from the
results database): a summary per loss over seeds, differences from CE with paired intervals, and one figure per idea.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..results import Doc, ResultsStore, group_rows, register_section
from ..results.measures import Measure, Measures, difference_table, register_measures, summary_table
from ..results.style import is_plain_ce, loss_styles, new_figure
from .shapes import loss_shape_rows

KINDS = ("margins", "energy", "gradient", "probe", "per_class")
PER_CLASS_BINS = 12  # beyond this many classes the per-class figure averages classes of similar frequency
P_SHOWN = 1e-7  # the gradient figure's logit axis shows p_y in [P_SHOWN, 1 - P_SHOWN]

# what the tables show, each a number per run (:func:`run_metrics`)
METRICS = (
    Measure("margin_median_test", "test margin f_y - max f_k, median"),
    Measure("frac_negative_test", "test margins < 0 (%)", 100.0),
    Measure("margin_median_train", "train margin, median"),
    Measure("true_energy_test", "true-class energy E(y|x), test mean"),
    Measure("other_energy_test", "other-class energy E(k|x), k != y, test mean"),
    Measure("target_grad_well_train", "|dL/df_y| for p_y > 0.9 (train)", digits=3),
    Measure("param_grad_norm_well_train", "per-example grad norm for p_y > 0.9 (train)", digits=3),
    Measure("param_grad_norm_all_train", "per-example grad norm, all (train)", digits=3),
    Measure("share_well_train", "share of the target-logit push from p_y > 0.9 (train, %)", 100.0, 1),
    Measure("probe_linear", "linear probe test acc (%)", 100.0),
    Measure("probe_knn", "k-NN test acc (%)", 100.0),
    Measure("model_acc", "the model's own test acc (%)", 100.0),
    Measure("worst_class_acc", "worst class's test acc (%)", 100.0),
)


def run_metrics(rows: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The numbers of :data:`METRICS` for one run, from its rows by kind (missing analyses give no entry)."""
    out: dict[str, float] = {}
    for r in rows.get("margins", []):
        if r["type"] == "summary":
            out[f"margin_median_{r['split']}"] = r["median"]
            out[f"margin_mode_{r['split']}"] = r["mode"]
            out[f"frac_negative_{r['split']}"] = r["frac_negative"]
    for split in ("train", "test"):
        energy = [r for r in rows.get("energy", []) if r["split"] == split]
        if energy:
            true = [r["energy"] for r in energy if r["true"]]
            other = [r["energy"] for r in energy if not r["true"]]
            out[f"true_energy_{split}"] = math.fsum(true) / len(true)
            out[f"other_energy_{split}"] = math.fsum(other) / len(other)
    for r in rows.get("gradient", []):
        if r["type"] == "summary":
            for key in ("target_grad_well", "share_well", "param_grad_norm_well", "param_grad_norm_all"):
                if r.get(key) is not None:
                    out[f"{key}_{r['split']}"] = r[key]
    for r in rows.get("probe", []):
        out[{"linear": "probe_linear", "knn": "probe_knn", "model": "model_acc"}[r["method"]]] = r["test_acc"]
    accs = [r["test_acc"] for r in rows.get("per_class", []) if not math.isnan(r["test_acc"])]
    if accs:
        out["worst_class_acc"] = min(accs)
    return {k: v for k, v in out.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


ANALYSES = register_measures("analyses", Measures(KINDS, run_metrics, METRICS, ratios=("true_energy_test",)))


def _group(collected: dict[str, list[dict]]) -> dict[str, dict[int, dict[str, list[dict]]]]:
    """``loss_label -> seed -> kind -> rows``, losses in first-seen order with CE first."""
    by: dict[str, dict[int, dict[str, list[dict]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for kind, rows in collected.items():
        for r in rows:
            by[r["loss_label"]][int(r["seed"])][kind].append(r)
    return dict(sorted(by.items(), key=lambda kv: not is_plain_ce(kv[0])))


def render_analyses(collected: dict[str, list[dict[str, Any]]], doc: Doc, out: Path, slug: str, level: int = 3
                    ) -> None:
    """Append the analyses of ``collected`` (``kind -> rows`` with ``loss_label``, ``seed``) to ``doc``; figures go
    to ``out`` as ``<slug>_*.png``."""
    groups = _group(collected)
    if not groups:
        return
    metrics = {label: {seed: run_metrics(rows) for seed, rows in seeds.items()} for label, seeds in groups.items()}
    labels = list(groups)
    doc.h(level, "Summary per loss")
    doc.p("Mean ± sample std over seeds (n = " + ", ".join(f"{lb}: {len(metrics[lb])}" for lb in labels) + "). "
          "Margins and energies are in logit units; gradients are per example, for each run's own training loss; "
          "the probes retrain a linear classifier / vote with k-NN on the frozen penultimate features.")
    doc.table(*summary_table(metrics, ANALYSES), ["l"] + ["r"] * len(labels))

    base = next((lb for lb in labels if is_plain_ce(lb)), None)
    if base is not None and len(labels) > 1:
        doc.h(level, "Differences from CE")
        pairs = [(base, lb) for lb in labels if lb != base]
        doc.table(*difference_table(metrics, ANALYSES, pairs, with_p=True), ["l"] + ["r"] * len(pairs))
        doc.p("Each cell: mean difference over seeds [95% t-interval], two-sided paired t-test p, number of pairs.")

    styles = loss_styles(labels)
    first_seed = {lb: min(seeds) for lb, seeds in groups.items()}
    figures = [
        (f"{slug}_margins_test.png", _plot_margins, "test"),
        (f"{slug}_margins_train.png", _plot_margins, "train"),
        (f"{slug}_energy_class.png", _plot_energy_class, "test"),
        (f"{slug}_energy_true.png", _plot_energy_true, "test"),
        (f"{slug}_gradients.png", _plot_gradients, "train"),
        (f"{slug}_per_class.png", _plot_per_class, "test"),
    ]
    doc.h(level, "Figures")
    for name, plot, split in figures:
        caption = plot(groups, styles, first_seed, split, out / name)
        if caption:
            doc.img(name, caption.split(":")[0])
            doc.p(caption)


# ---------------------------------------------------------------------------------------------------------- figures


def _plot_margins(groups, styles, first_seed, split, path: Path) -> str | None:
    fig, (ax,) = new_figure()
    spans = {}  # label -> (q05, q95) of the plotted seed
    for label, seeds in groups.items():
        rows = [r for r in seeds[first_seed[label]].get("margins", []) if r["split"] == split]
        hist = [r for r in rows if r["type"] == "hist"]
        if not hist:
            continue
        summary = next(r for r in rows if r["type"] == "summary")
        edges = [hist[0]["lo"]] + [r["hi"] for r in hist]
        density = [r["count"] / (summary["n"] * (r["hi"] - r["lo"])) if r["hi"] > r["lo"] else 0.0 for r in hist]
        color, style = styles[label]
        ax.stairs(density, edges, color=color, ls=style, lw=1.8, label=f"{label} (seed {first_seed[label]})")
        ax.stairs(density, edges, color=color, alpha=0.12, fill=True)
        spans[label] = (summary["q05"], summary["q95"])
    if not spans:
        return None
    # The x-axis covers the central 90% of every run except those spread 5x wider than the typical run (logits
    # that diverged): those would flatten the rest; the caption names them.
    widths = sorted(hi - lo for lo, hi in spans.values())
    typical = widths[(len(widths) - 1) // 2]
    shown = {lb: sp for lb, sp in spans.items() if sp[1] - sp[0] <= 5 * typical} or spans
    lo, hi = min(sp[0] for sp in shown.values()), max(sp[1] for sp in shown.values())
    pad = 0.35 * (hi - lo)
    ax.set_xlim(min(lo - pad, -0.05 * (hi - lo)), hi + pad)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel("margin $f_y - \\max_{k \\neq y} f_k$ (logits)")
    ax.set_ylabel("density")
    ax.set_title(f"Margins on the {split} set")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    wide = sorted(set(spans) - set(shown))
    note = f" Wider than the axis (see the tables): {', '.join(wide)}." if wide else ""
    return (f"Margins on the {split} set: histogram density of f_y - max_(k != y) f_k, one seed per loss (left of 0: "
            "misclassified). The paper (CIFAR-10) sees CE's mass at 0 and EL's bell centred near 40-50." + note)


def _mean_energy(seeds: dict, split: str) -> dict[tuple[int, int], float]:
    acc: dict[tuple[int, int], list[float]] = defaultdict(list)
    for rows in seeds.values():
        for r in rows.get("energy", []):
            if r["split"] == split:
                acc[(r["cls"], r["k"])].append(r["energy"])
    return {key: math.fsum(v) / len(v) for key, v in acc.items()}


def _names(groups, split) -> dict[int, str]:
    for seeds in groups.values():
        for rows in seeds.values():
            return {r["k"]: r["k_name"] for r in rows.get("energy", []) if r["split"] == split}
    return {}


def _featured_class(names: dict[int, str]) -> int:
    """The paper's class for CIFAR-10 ("cat") when present, else the first class."""
    return next((k for k, n in names.items() if n == "cat"), min(names))


def _energy_bars(groups, styles, split, path: Path, cells: list[tuple[int, int]], ticks: list[str], ylabel: str,
                 title: str) -> None:
    """Grouped bars, one group per ``(class, candidate)`` cell of the mean energy matrix, one bar per loss."""
    energies = {lb: _mean_energy(seeds, split) for lb, seeds in groups.items()}
    energies = {lb: e for lb, e in energies.items() if e}
    fig, (ax,) = new_figure(7.5, 4.3)
    width = 0.8 / len(energies)
    for i, (label, e) in enumerate(energies.items()):
        xs = [j + (i - (len(energies) - 1) / 2) * width for j in range(len(cells))]
        ax.bar(xs, [e.get(cell, math.nan) for cell in cells], width, color=styles[label][0], label=label,
               hatch="//" if styles[label][1] == "--" else None, edgecolor="white")
    ax.set_xticks(range(len(cells)), ticks, rotation=30)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)


def _plot_energy_class(groups, styles, first_seed, split, path: Path) -> str | None:
    names = _names(groups, split)
    if not names or len(names) > 20:
        return None
    c = _featured_class(names)
    ref = next(e for e in (_mean_energy(seeds, split) for seeds in groups.values()) if e)
    order = sorted(names, key=lambda k: ref.get((c, k), math.inf))
    _energy_bars(groups, styles, split, path, [(c, k) for k in order], [names[k] for k in order],
                 "mean conditional energy $E(k|x) = -f_k(x)$",
                 f"Energies over the {split} examples of class '{names[c]}'")
    return (f"Mean conditional energy E(k|x) = -f_k(x) over the {split} examples of class '{names[c]}', for every "
            "candidate k (mean over seeds). The true class is the lowest bar; the paper sees EL's about 4x lower "
            "than CE's on CIFAR-10 and the other classes' higher.")


def _plot_energy_true(groups, styles, first_seed, split, path: Path) -> str | None:
    names = _names(groups, split)
    if not names or len(names) > 20:
        return None
    classes = sorted(names)
    _energy_bars(groups, styles, split, path, [(c, c) for c in classes], [names[c] for c in classes],
                 "true-class energy $E(y|x) = -f_y(x)$", f"True-class energy per class ({split} set)")
    return f"True-class energy E(y|x) = -f_y(x), mean over the {split} examples of each class and over seeds."


def _bins(seeds: dict, split: str) -> list[tuple[float, float, float, float, int]]:
    """Per p bin, pooled over seeds: (p_mean, measured |dL/df_y|, analytic, param grad norm, count)."""
    acc: dict[float, list[dict]] = defaultdict(list)
    for rows in seeds.values():
        for r in rows.get("gradient", []):
            if r["split"] == split and r["type"] == "bin" and r["count"]:
                acc[r["lo"]].append(r)
    out = []
    for lo in sorted(acc):
        rs = acc[lo]
        n = sum(r["count"] for r in rs)
        pn = [(r["param_grad_norm"], r["param_count"]) for r in rs if r["param_count"]
              and not math.isnan(r["param_grad_norm"])]
        out.append((sum(r["p_mean"] * r["count"] for r in rs) / n, sum(r["target_grad"] * r["count"] for r in rs) / n,
                    sum(r["analytic"] * r["count"] for r in rs) / n,
                    sum(v * c for v, c in pn) / sum(c for _, c in pn) if pn else math.nan, n))
    return out


def _plot_gradients(groups, styles, first_seed, split, path: Path) -> str | None:
    bins = {lb: _bins(seeds, split) for lb, seeds in groups.items()}
    bins = {lb: b for lb, b in bins.items() if b}
    if not bins:
        return None
    fig, (left, right) = new_figure(11.0, 4.3, ncols=2)
    shapes = [r for r in loss_shape_rows(log_ends=(0.75, 1.0), points=300) if 0.001 < r["p"] < 0.9999]
    for log_end, ls in ((None, "--"), (0.75, ":"), (1.0, "-.")):
        sel = [r for r in shapes if r["log_end"] == log_end]
        name = "CE" if log_end is None else f"EL, LE = {log_end:g}"
        left.plot([r["p"] for r in sel], [abs(r["grad"]) for r in sel], ls, color="grey", lw=1,
                  label=f"analytic {name}")
    for label, b in bins.items():
        color = styles[label][0]
        p = [min(max(x[0], P_SHOWN), 1 - P_SHOWN) for x in b]  # p_y of exactly 0 or 1 has no place on a logit axis
        left.plot(p, [x[1] for x in b], "o", color=color, ms=5, label=f"{label}, measured")
        finite = [(pi, x[3]) for pi, x in zip(p, b, strict=True) if not math.isnan(x[3])]
        if finite:
            right.plot(*zip(*finite, strict=True), "o", color=color, ls=styles[label][1], ms=4, label=label)
    for ax in (left, right):
        ax.set_xscale("logit")
        ax.set_xlabel("target probability $p_y$ (bin mean, logit scale)")
        ax.grid(True, alpha=0.3)
    left.set_ylabel("$|\\partial L / \\partial f_y|$ (mean per bin)")
    left.set_title(f"Target-logit gradient vs $p_y$ ({split} set)")
    left.legend(fontsize=7)
    right.set_yscale("log")
    right.set_ylabel("per-example parameter-gradient norm")
    right.set_title("Parameter-gradient norm vs $p_y$")
    if right.lines:
        right.legend(fontsize=8)
    fig.savefig(path)
    return (f"Left: mean |dL/df_y| per bin of p_y on the {split} set, measured on each trained model with its "
            "own loss (dots, pooled over seeds), over the analytic curves of CE and EL (grey). Right: the mean "
            "per-example norm of the parameter gradient per bin (a fixed subset of training examples); bin means "
            "are clipped to [1e-7, 1 - 1e-7] for the logit axis. CE's "
            "gradients vanish as p_y -> 1; EL's do not.")


def _class_accuracy(seeds: dict) -> list[tuple[float, float, str]]:
    """``(training examples, test accuracy mean over seeds, name)`` per class present in the test set."""
    acc: dict[int, list[float]] = defaultdict(list)
    info: dict[int, tuple[float, str]] = {}
    for rows in seeds.values():
        for r in rows.get("per_class", []):
            if r["train_count"] is not None and not math.isnan(r["test_acc"]):
                acc[r["cls"]].append(r["test_acc"])
                info[r["cls"]] = (r["train_count"], r["name"])
    return sorted((info[c][0], math.fsum(v) / len(v), info[c][1]) for c, v in acc.items())


def _frequency_bins(points: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """Classes grouped into :data:`PER_CLASS_BINS` bins of equal width in log(training examples): per non-empty
    bin, the geometric-mean count and the mean accuracy of its classes."""
    logs = [math.log(max(n, 1)) for n, _, _ in points]
    lo, width = min(logs), (max(logs) - min(logs)) / PER_CLASS_BINS or 1.0
    bins: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for log_n, (_, acc, _) in zip(logs, points, strict=True):
        bins[min(int((log_n - lo) / width), PER_CLASS_BINS - 1)].append((log_n, acc))
    return [(math.exp(math.fsum(x for x, _ in b) / len(b)), math.fsum(a for _, a in b) / len(b))
            for _, b in sorted(bins.items())]


def _plot_per_class(groups, styles, first_seed, split, path: Path) -> str | None:
    curves = {lb: _class_accuracy(seeds) for lb, seeds in groups.items()}
    curves = {lb: c for lb, c in curves.items() if c}
    if not curves:
        return None
    binned = max(len(c) for c in curves.values()) > PER_CLASS_BINS
    fig, (ax,) = new_figure()
    for label, points in curves.items():
        xy = _frequency_bins(points) if binned else [(n, a) for n, a, _ in points]
        color, style = styles[label]
        ax.plot([x for x, _ in xy], [100 * a for _, a in xy], "o", ls=style, color=color, ms=4, lw=1.2, label=label)
    if not binned:  # few classes: name them once, under the first loss's points
        for n, a, name in next(iter(curves.values())):
            ax.annotate(name, (n, 100 * a), textcoords="offset points", xytext=(0, -11), ha="center", fontsize=6,
                        color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("training examples of the class (log scale)")
    ax.set_ylabel(f"{split} accuracy of the class (%)")
    ax.set_title("Per-class accuracy against class frequency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path)
    how = (f"classes grouped into {PER_CLASS_BINS} bins of equal width in log frequency (mean accuracy per bin)"
           if binned else "one point per class")
    return (f"Per-class accuracy against class frequency: {split} accuracy of each class (mean over seeds) against "
            f"its number of training examples, {how}. A long-tailed method lifts the left-hand (rare) end.")


# ---------------------------------------------------------------------------------------------- report section


def report_section(store: ResultsStore, group, doc: Doc, out: Path, slug: str) -> None:
    """The analyses stored for a report group's runs, as a section of ``encouraging report``."""
    collected = {kind: group_rows(store, group, kind) for kind in KINDS}
    if not any(collected.values()):
        return
    doc.h(3, "Analyses (encouraging analyze)")
    render_analyses(collected, doc, out, f"{slug}-analysis", level=4)


register_section("analysis", report_section)
