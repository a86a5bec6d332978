"""OOD detection of a trained run: detectors, the in-distribution test set against OOD sets, rows and a report section.

Every detector has one interface: ``fit(model, batches)`` (a no-op except for Mahalanobis) and
``score(model, x, logits=None) -> (N,)`` with **higher = more in-distribution**, for normalized batches ``x`` as
the run's batch sources give them; ``logits`` (the model's float64 logits of ``x``, when already computed) spare
the logit-based detectors a forward pass, so an evaluation runs the model once per batch for all of them.
The energy scores come from :mod:`.energy`, the others from pytorch-ood's score functions (which return outlier
scores, higher = more OOD; we negate them):

=============  ===========================================================================================
``msp``        max softmax probability ``max_k softmax(f)_k`` (Hendrycks & Gimpel 2017)
``max_logit``  ``max_k f_k`` = −min_k E(k|x) (:func:`.energy.conditional_energy`), the paper's "negative max
               conditional energy"
``energy``     negative free energy ``−F(x) = T logsumexp(f / T)`` (:func:`.energy.free_energy`; Liu et al. 2020)
``odin``       MSP at temperature T = 1000 of ``x − ε sign(∇x CE(f(x)/T, ŷ))``, ε = 0.0014 in pixel units
               (Liang et al. 2018; pytorch-ood's ``odin_preprocessing``)
``mahalanobis``  −½ min_k (z − μ_k)ᵀ Σ⁻¹ (z − μ_k) on the penultimate features z, class means and a shared
               covariance fitted on the training set (Lee et al. 2018, without input preprocessing or layer
               ensembles; pytorch-ood's ``Mahalanobis``)
=============  ===========================================================================================

OOD sets come from the data registry (or a directory: array folder or ImageFolder tree) and are preprocessed as
the in-distribution run's data: its normalization (mean/std, or none), its channel count (grey <-> RGB) and its
image size. Metrics (:mod:`.ood_metrics`) are stored as rows of kind ``"ood"`` (one per OOD set x detector) and
score histograms as rows of kind ``"ood_hist"``, so ``encouraging report`` redraws everything from the database.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..data import FolderData, find_array, load_image_dataset
from ..engine.batches import LoaderBatches, TensorBatches
from ..models import features
from ..results import Doc, Group, ResultsStore, group_rows, register_section
from ..results.paper import paper_number
from ..results.stats import compare, mean_std_text
from .energy import conditional_energy, free_energy
from .ood_metrics import expected_calibration_error, ood_metrics

if TYPE_CHECKING:
    from ..experiment.loading import LoadedRun

HIST_BINS = 40


# ------------------------------------------------------------------------------------------------------ detectors


class Detector:
    """Scores inputs, higher = more in-distribution. Subclasses set ``name`` and implement :meth:`score`."""

    name = "detector"

    def fit(self, model: nn.Module, batches: Any) -> Detector:
        """Fit on in-distribution training batches ``(x, y)``; detectors without parameters do nothing."""
        return self

    def score(self, model: nn.Module, x: Tensor, logits: Tensor | None = None) -> Tensor:
        """Scores of the batch ``x``; ``logits`` are ``model(x)`` in float64 if the caller has them."""
        raise NotImplementedError

    def params(self) -> str:
        """Its settings as text, e.g. ``T=1000, eps=0.0014`` (stored with every row)."""
        return ""


class LogitDetector(Detector):
    """A score computed from the logits alone: ``fn(model(x))``."""

    def __init__(self, name: str, fn: Callable[[Tensor], Tensor], params: str = "") -> None:
        self.name, self.fn, self._params = name, fn, params

    @torch.no_grad()
    def score(self, model: nn.Module, x: Tensor, logits: Tensor | None = None) -> Tensor:
        # float64: a softmax of large-margin logits rounds to exactly 1.0 in float32 (margins above ~17), which
        # would turn a confident model's MSP into ties; float64 keeps them apart up to margins of ~36
        return self.fn(model(x).double() if logits is None else logits.double())

    def params(self) -> str:
        return self._params


class ODIN(Detector):
    """MSP at temperature ``temperature`` of the input moved by ``eps`` (pixel units) against the predicted class."""

    name = "odin"

    def __init__(self, temperature: float = 1000.0, eps: float = 0.0014, norm_std: list[float] | None = None) -> None:
        if temperature <= 0 or eps < 0:
            raise ValueError(f"odin needs temperature > 0 and eps >= 0, got {temperature} and {eps}")
        self.temperature, self.eps, self.norm_std = temperature, eps, norm_std

    def score(self, model: nn.Module, x: Tensor, logits: Tensor | None = None) -> Tensor:
        from pytorch_ood.detector import MaxSoftmax, odin_preprocessing

        # norm_std divides the step per channel, so eps is in [0, 1] pixel units on normalized inputs
        x_hat = odin_preprocessing(model, x, eps=self.eps, temperature=self.temperature, norm_std=self.norm_std)
        with torch.no_grad():
            return -MaxSoftmax.score(model(x_hat).double(), self.temperature)

    def params(self) -> str:
        return f"T={self.temperature:g}, eps={self.eps:g}"


class Mahalanobis(Detector):
    """Negative (half squared) Mahalanobis distance of the penultimate features to the closest class mean."""

    name = "mahalanobis"

    def __init__(self) -> None:
        from pytorch_ood.detector import Mahalanobis as _Mahalanobis

        self.detector = _Mahalanobis(None)

    @torch.no_grad()
    def fit(self, model: nn.Module, batches: Any) -> Mahalanobis:
        zs, ys = zip(*[(features(model, x).float(), y) for x, y in batches.epoch(0)], strict=True)
        self.detector.fit_features(torch.cat(zs), torch.cat(ys))
        return self

    @torch.no_grad()
    def score(self, model: nn.Module, x: Tensor, logits: Tensor | None = None) -> Tensor:
        return -self.detector.predict_features(features(model, x).float())

    def params(self) -> str:
        return "fit: training set, shared covariance"


def _msp(logits: Tensor) -> Tensor:
    from pytorch_ood.detector import MaxSoftmax

    return -MaxSoftmax.score(logits)


@dataclass(frozen=True)
class DetectorInfo:
    name: str
    description: str
    build: Callable[[dict], Detector]  # notes of the run (``std`` for ODIN) -> detector


DETECTORS = {
    d.name: d
    for d in (
        DetectorInfo("msp", "max softmax probability", lambda notes: LogitDetector("msp", _msp)),
        DetectorInfo("max_logit", "max logit (-min conditional energy)",
                     lambda notes: LogitDetector("max_logit", lambda f: -conditional_energy(f).amin(-1))),
        DetectorInfo("energy", "negative free energy T logsumexp(f/T), T = 1",
                     lambda notes: LogitDetector("energy", lambda f: -free_energy(f, 1.0), "T=1")),
        DetectorInfo("odin", "ODIN: temperature 1000 + input perturbation 0.0014",
                     lambda notes: ODIN(norm_std=list(notes["std"]) if notes.get("std") else None)),
        DetectorInfo("mahalanobis", "Mahalanobis distance on penultimate features (fit on train)",
                     lambda notes: Mahalanobis()),
    )
}


def build_detector(name: str, notes: dict | None = None) -> Detector:
    """A detector by name (:data:`DETECTORS`), set up for a run's ``notes`` (its normalization)."""
    if name not in DETECTORS:
        raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {name!r}")
    return DETECTORS[name].build(notes or {})


# ----------------------------------------------------------------------------------------------------------- data


def _geometry(run: LoadedRun) -> tuple[int, int]:
    """(channels, side) of the batches the run's model sees."""
    test = run.data.test
    if not isinstance(test, TensorBatches):
        raise ValueError(f"ood: in-memory in-distribution data expected, got {type(test).__name__}")
    return test.x.shape[1], test.image_size or test.x.shape[-1]


def _match_channels(x: Tensor, channels: int) -> Tensor:
    """uint8 images to ``channels``: grey -> RGB by repetition, RGB -> grey by ITU-R 601 luma."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if channels == 1 and x.shape[1] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"ood: cannot map {x.shape[1]} channels to {channels}")


def ood_batches(run: LoadedRun, name: str, *, data_root: str | None = None, limit: int = 0) -> Any:
    """The test split of ``name`` as batches preprocessed like ``run``'s test set.

    ``name``: a registry name, an array folder, an ImageFolder tree with ``train/`` and ``val/`` (its ``val``), or a
    plain folder of OOD images ``<dir>/<class>/*``. ``limit`` keeps the first ``limit`` images (0: all). Image
    folders are read through a DataLoader with Resize + CenterCrop to the run's size, its channel count and its
    normalization.
    """
    channels, side = _geometry(run)
    mean, std = run.notes.get("mean"), run.notes.get("std")
    test = run.data.test
    path = Path(name).expanduser()
    plain_folder = (path.is_dir() and not (path / "train").is_dir() and find_array(path / "x_test") is None)
    data = None if plain_folder else load_image_dataset(name, root=data_root, image_size=side)
    if data is None or isinstance(data, FolderData):
        import torchvision.datasets as tvd
        from torchvision import transforms as T

        steps = [T.Resize(side), T.CenterCrop(side)] + ([T.Grayscale(channels)] if channels == 1 else [])
        steps.append(T.ToTensor())
        if mean is not None:
            steps.append(T.Normalize(mean, std))
        dataset = tvd.ImageFolder(str(path)) if data is None else data.test
        dataset.transform = T.Compose(steps)
        if limit:
            dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
        return LoaderBatches(dataset, test.batch_size, train=False, num_workers=0, device=test.out_device)
    x = data.x_test[:limit] if limit else data.x_test
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ValueError(f"ood: {name} is not an image dataset (x_test {x.dtype}, {tuple(x.shape)})")
    x = _match_channels(x, channels)
    return TensorBatches(x, torch.zeros(len(x), dtype=torch.long), test.batch_size, train=False, mean=mean, std=std,
                         image_size=side, device=test.device, out_device=test.out_device)


def eval_batches(run: LoadedRun, limit: int = 0, *, raw: bool = False) -> TensorBatches:
    """The run's test set, its first ``limit`` images (0: all), normalized as in training or, with ``raw``, as
    pixels in ``[0, 1]`` (for attacks); resized to the run's image size either way."""
    _geometry(run)
    test = run.data.test
    keep = slice(None, limit or None)
    mean, std = (None, None) if raw else (run.notes.get("mean"), run.notes.get("std"))
    return TensorBatches(test.x[keep], test.y[keep], test.batch_size, train=False, mean=mean, std=std,
                         image_size=test.image_size, device=test.device, out_device=test.out_device)


def _scores(detectors: list[Detector], model: nn.Module, batches: Any) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Every detector's scores over one pass of ``batches``, with the float64 logits and the labels of that pass.

    The model runs once per batch and its logits go to every detector (the logit-based ones need nothing else).
    """
    out: dict[str, list[Tensor]] = {d.name: [] for d in detectors}
    all_logits, all_labels = [], []
    for x, y in batches.epoch(0):
        with torch.no_grad():
            logits = model(x).double()
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
        for d in detectors:
            out[d.name].append(d.score(model, x, logits).detach().double().cpu())
    return {k: torch.cat(v) for k, v in out.items()}, torch.cat(all_logits), torch.cat(all_labels)


# ----------------------------------------------------------------------------------------------------- evaluation


def histogram_rows(detector: str, ood: str, score_in: Tensor, score_out: Tensor, bins: int = HIST_BINS
                   ) -> list[dict[str, Any]]:
    """Counts of both score sets over ``bins`` equal bins (rows of kind ``"ood_hist"``).

    The bins span the 0.5-99.5% quantiles of the two sets together and the scores outside are counted in the
    edge bins, so a few extreme scores (Mahalanobis distances of a near-singular covariance) do not squash the
    plot; the metrics use the exact scores.
    """
    both = torch.cat([score_in, score_out]).double()
    lo, hi = (float(q) for q in torch.quantile(both, torch.tensor([0.005, 0.995], dtype=torch.float64)))
    hi = hi if hi > lo else lo + 1.0
    cin = torch.histc(score_in.double().clamp(lo, hi), bins, lo, hi)
    cout = torch.histc(score_out.double().clamp(lo, hi), bins, lo, hi)
    width = (hi - lo) / bins
    return [{"detector": detector, "ood_dataset": ood, "bin": i, "lo": lo + i * width, "hi": lo + (i + 1) * width,
             "count_in": int(cin[i]), "count_ood": int(cout[i])} for i in range(bins)]


def evaluate_ood(run: LoadedRun, ood: list[str], *, detectors: list[str] | None = None, positive: str = "in",
                 data_root: str | None = None, limit: int = 0) -> tuple[list[dict], list[dict]]:
    """Score the run's test set and each OOD set with each detector.

    Args:
        run: a loaded run (:func:`encouraging.experiment.load_run`).
        ood: OOD dataset names or directories.
        detectors: names from :data:`DETECTORS` (default: all).
        positive: ``"in"`` (paper) or ``"ood"`` (pytorch-ood / OpenOOD): the FPR@95TPR convention.
        limit: use the first ``limit`` in-distribution and OOD test images (0: all).

    Returns:
        ``(rows, hist_rows)``: one metrics row per (OOD set, detector), fractions in [0, 1], each with the
        in-distribution accuracy and ECE (10 bins) of the same images; and the score histograms.
    """
    if not ood:
        raise ValueError("ood: give at least one OOD dataset")
    names = list(DETECTORS) if detectors is None else detectors
    dets = [build_detector(n, run.notes) for n in names]
    model = run.model.eval()
    for d in dets:
        d.fit(model, run.data.train_eval)
    score_in, logits, target = _scores(dets, model, eval_batches(run, limit))
    probs = logits.softmax(1)
    in_acc = float((probs.argmax(1) == target).double().mean())
    ece = expected_calibration_error(probs, target)
    rows, hists = [], []
    for name in ood:
        score_out = _scores(dets, model, ood_batches(run, name, data_root=data_root, limit=limit))[0]
        for d in dets:
            m = ood_metrics(score_in[d.name], score_out[d.name], positive=positive)
            rows.append({"ood_dataset": name, "detector": d.name, "detector_params": d.params(),
                         "in_dataset": run.cfg.data.dataset, "in_acc": in_acc, "ece": ece, **m})
            hists += histogram_rows(d.name, name, score_in[d.name], score_out[d.name])
    return rows, hists


def save_ood(store: ResultsStore, run_id: str, rows: list[dict], hists: list[dict]) -> None:
    """Store the rows of one run (replacing the run's earlier OOD rows)."""
    store.add_rows(run_id, "ood", rows, replace=True)
    store.add_rows(run_id, "ood_hist", hists, replace=True)


# ------------------------------------------------------------------------------------------------ tables and plots


def plot_histograms(hists: list[dict], ood: str, path: Path) -> str | None:
    """One panel per (loss, detector): in-distribution vs OOD score histograms (density), first seed per loss."""
    from matplotlib.figure import Figure

    rows = [h for h in hists if h["ood_dataset"] == ood]
    first = {}
    for h in rows:
        first[h["loss_label"]] = min(first.get(h["loss_label"], h["seed"]), h["seed"])
    losses = sorted(first, key=lambda lb: (lb != "CE", lb))
    dets = list(dict.fromkeys(h["detector"] for h in rows))
    if not losses or not dets:
        return None
    fig = Figure(figsize=(2.6 * len(dets), 2.1 * len(losses) + 0.4), dpi=120, layout="constrained")
    axes = fig.subplots(len(losses), len(dets), squeeze=False)
    for i, loss in enumerate(losses):
        for j, det in enumerate(dets):
            ax = axes[i][j]
            bins = sorted((h for h in rows if h["loss_label"] == loss and h["seed"] == first[loss]
                           and h["detector"] == det), key=lambda h: h["bin"])
            if not bins:
                ax.set_axis_off()
                continue
            edges = [bins[0]["lo"]] + [b["hi"] for b in bins]
            width = edges[1] - edges[0]
            for key, color, label in (("count_in", "#1f77b4", "in-distribution"), ("count_ood", "#d62728", ood)):
                total = sum(b[key] for b in bins) or 1
                ax.stairs([b[key] / total / width for b in bins], edges, color=color, fill=True, alpha=0.45,
                          label=label)
            ax.set_title(f"{loss}: {det}", fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("density", fontsize=8)
            if i == len(losses) - 1:
                ax.set_xlabel("score (higher = more in-distribution)", fontsize=7)
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.savefig(path)
    seeds = ", ".join(f"{lb}: seed {s}" for lb, s in first.items())
    return (f"Detector scores on the in-distribution test set and on {ood} ({seeds}); each histogram is "
            "normalized to unit area. Less overlap = better detection.")


def render_ood(store: ResultsStore, group: Group, doc: Doc, out: Path, slug: str) -> None:
    """Report section: AUROC / FPR95 / AUPR per loss (mean ± std over seeds), differences from CE, histograms."""
    rows = group_rows(store, group, "ood")
    if not rows:
        return
    doc.h(3, "OOD detection")
    positives = sorted({r["positive"] for r in rows})
    doc.p(f"In-distribution: the run's test set ({group.dataset}); positive class for FPR@95TPR: "
          f"{', '.join(positives)} ({'in-distribution positive, as the paper' if positives == ['in'] else 'see docs'}"
          "). Values in %, mean ± std over seeds; AUROC and AUPR higher is better, FPR95 and ECE lower.")
    by: dict[tuple, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by[(r["ood_dataset"], r["detector"])][r["loss_label"]][int(r["seed"])] = r
    labels = sorted({r["loss_label"] for r in rows}, key=lambda lb: (lb != "CE", lb))
    table = []
    for (ood, det), per_loss in by.items():
        for lb in labels:
            runs = per_loss.get(lb, {})
            if not runs:
                continue
            vals = list(runs.values())
            table.append([ood, det, lb, str(len(vals))] + [mean_std_text([v[k] for v in vals], 100) for k in
                                                            ("auroc", "fpr95", "aupr_in", "aupr_out", "ece")])
    doc.table(["OOD set", "detector", "loss", "n", "AUROC", "FPR95", "AUPR-In", "AUPR-Out", "ECE (ID)"], table,
              ["l", "l", "l", "r", "r", "r", "r", "r", "r"])
    if "CE" in labels and len(labels) > 1:
        diffs = []
        for (ood, det), per_loss in by.items():
            ce = per_loss.get("CE", {})
            for lb in labels[1:]:
                other = per_loss.get(lb, {})
                if ce and other:
                    cells = [compare({s: r[k] for s, r in ce.items()}, {s: r[k] for s, r in other.items()})
                             .format(100.0, 2) for k in ("auroc", "fpr95")]
                    diffs.append([ood, det, f"{lb} − CE", *cells])
        doc.table(["OOD set", "detector", "difference", "AUROC (points)", "FPR95 (points)"], diffs)
        doc.p("Each cell: mean difference over seeds [95% t-interval], paired t-test p, number of pairs.")
    if group.dataset == "mnist" and any(r["ood_dataset"] in ("fashion_mnist", "fmnist") for r in rows):
        doc.p(f"Paper (MNISTNet checkpoints, single runs, detector not stated; paper.md §5.7): {paper_ood_text()}.")
    hists = group_rows(store, group, "ood_hist")
    for ood in dict.fromkeys(r["ood_dataset"] for r in rows):
        name = f"{slug}_ood_{_file_part(ood)}.png"
        caption = plot_histograms(hists, ood, out / name)
        if caption:
            doc.img(name, f"OOD score histograms, {ood}")
            doc.p(caption)


def paper_ood_text() -> str:
    """The paper's MNIST -> Fashion-MNIST AUROC / FPR95 (%) of CE and EL, looked up in
    :data:`encouraging.results.paper.PAPER_NUMBERS`."""

    def value(loss: str, metric: str) -> str:
        return paper_number("mnist_vs_fashion_mnist", "mnistnet", loss, metric=metric).format()

    return "; ".join(f"{lb} AUROC {value(lb, 'auroc')}, FPR95 {value(lb, 'fpr95')}" for lb in ("CE", "EL"))


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in Path(text).name.lower()).strip("-") or "ood"


register_section("ood", render_ood)
