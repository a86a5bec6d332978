"""Run every analysis on trained runs, store the rows in the results database, and write the figures and tables.

>>> from encouraging.analysis import analyze
>>> analyze(["runs/quick-mnist/CE/seed0-…", "runs/quick-mnist/EL_LE=1/seed0-…"], "reports/analysis")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..experiment.evaluate import check_evaluation, store_for
from ..experiment.loading import LoadedRun, load_run
from ..results import Doc
from .energy import energy_rows
from .gradients import gradient_rows, param_grad_norms
from .margins import margin_rows
from .outputs import Outputs, collect_outputs
from .per_class import per_class_rows
from .probe import ProbeConfig, knn_accuracy, linear_probe
from .render import KINDS, render_analyses
from .shapes import loss_shape_rows, plot_log_end_panels, plot_loss_shapes


@dataclass(frozen=True)
class AnalysisConfig:
    """What to compute. ``max_examples`` caps each split (the first N, in the split's order; None: all) except for
    ``per_class``, which always reads the whole test set;
    ``grad_examples`` training examples get per-example parameter gradients; ``knn_k`` neighbours vote."""

    kinds: tuple[str, ...] = KINDS
    max_examples: int | None = None
    grad_examples: int = 512
    knn_k: int = 20
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if self.grad_examples < 0:
            raise ValueError(f"grad_examples must be >= 0, got {self.grad_examples}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be >= 1 or None, got {self.max_examples}")


def analyze_run(run: LoadedRun, config: AnalysisConfig = AnalysisConfig()) -> dict[str, list[dict[str, Any]]]:
    """Every analysis of ``config.kinds`` on one trained run; returns ``kind -> rows`` (flat, JSON-ready)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    if "per_class" in config.kinds:
        rows["per_class"] = per_class_rows(run)
    if not set(config.kinds) - {"per_class"}:
        return rows  # the others need a pass over both splits
    sources = {"train": run.data.train_eval, "test": run.data.test}
    if sources["train"] is None:
        raise ValueError(f"task {run.cfg.task!r} gives no in-order training pass; analyses need one")
    want_features = "probe" in config.kinds
    outputs: dict[str, Outputs] = {split: collect_outputs(run.model, src, with_features=want_features,
                                                          max_examples=config.max_examples)
                                   for split, src in sources.items()}
    classes = run.notes.get("classes")
    if "margins" in config.kinds:
        rows["margins"] = [r for s, o in outputs.items() for r in margin_rows(o.logits, o.target, s)]
    if "energy" in config.kinds:
        rows["energy"] = [r for s, o in outputs.items() for r in energy_rows(o.logits, o.target, s, classes)]
    if "gradient" in config.kinds:
        criterion = run.criterion()
        norms = param_grad_norms(run.model, criterion, sources["train"], config.grad_examples) \
            if config.grad_examples else None
        rows["gradient"] = [r for s, o in outputs.items()
                            for r in gradient_rows(criterion, o.logits, o.target, s,
                                                   param_norms=norms if s == "train" else None)]
    if want_features:
        train, test = outputs["train"], outputs["test"]
        num_classes = train.logits.shape[1]
        probe = linear_probe(train.features, train.target, test.features, test.target, num_classes, config.probe)
        k = min(config.knn_k, len(train))
        rows["probe"] = [
            {"method": "model", "test_acc": float((test.logits.argmax(1) == test.target).double().mean()),
             "train_acc": float((train.logits.argmax(1) == train.target).double().mean())},
            {"method": "linear", **probe, **{f"probe_{k_}": v for k_, v in dataclasses.asdict(config.probe).items()}},
            {"method": "knn", "test_acc": knn_accuracy(train.features, train.target, test.features, test.target,
                                                       num_classes, k=k), "k": k},
        ]
        for r in rows["probe"]:
            r.update(n_train=len(train), n_test=len(test), feature_dim=int(train.features.shape[1]))
    return rows


def analyze(runs: Iterable[str | os.PathLike | LoadedRun], out_dir: str | os.PathLike, *,
            db: str | os.PathLike | None = None, device: str = "auto", data_root: str | None = None,
            config: AnalysisConfig = AnalysisConfig(), html: bool = False, quiet: bool = False) -> Path:
    """Analyse each run, store its rows (one kind per analysis of :data:`KINDS`) in the results database,
    and write ``analysis.md`` with the tables and figures (and the loss-shape figures) into ``out_dir``.

    ``db``: the database to store rows in (default: the run's own grid database when there is one; runs it does
    not hold are recorded). Returns the path of ``analysis.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    collected: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    described = []
    runs = list(runs)
    check_evaluation([str(item.run_dir if isinstance(item, LoadedRun) else item) for item in runs], "analyze")
    for item in runs:
        run = item if isinstance(item, LoadedRun) else load_run(item, device=device, data_root=data_root)
        if not quiet:
            print(f"analysing {run.cfg.name} / {run.label} / seed {run.seed} ({run.run_dir})")
        rows = analyze_run(run, config)
        store = store_for(run, db)
        for kind, kind_rows in rows.items():
            if store is not None:
                store.add_rows(run.run_id, kind, kind_rows, replace=True)
            context = {"run_id": run.run_id, "loss_label": run.label, "seed": run.seed, "recipe": run.cfg.name}
            collected[kind] += [{**r, **context} for r in kind_rows]
        described.append(f"`{run.run_dir}`: {run.cfg.name}, {run.label}, seed {run.seed}, {run.epochs_trained} "
                         f"epochs; test set: {run.notes.get('test_note', 'not recorded')}"
                         + ("" if store is not None else " (no results database: rows not stored)"))
        del run
    doc = Doc()
    doc.h(1, "Analyses: margins, energy, gradients, representations")
    doc.ul(described)
    render_analyses(collected, doc, out, "analysis", level=2)
    doc.h(2, "Loss shapes")
    shapes = loss_shape_rows()
    doc.img("loss_shapes.png", "CE, bonus and EL against p")
    doc.p(plot_loss_shapes(shapes, out / "loss_shapes.png"))
    doc.img("log_end.png", "bonus and gradient for each log_end")
    doc.p(plot_log_end_panels(shapes, out / "log_end.png"))
    path = out / "analysis.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(doc.markdown(), encoding="utf-8")
    os.replace(tmp, path)
    if html:
        (out / "analysis.html").write_text(doc.html("encouraging: analyses"), encoding="utf-8")
    return path
