"""Adversarial robustness of a trained run: robust accuracy vs ε under torchattacks attacks, rows and a report section.

Inputs are the run's test images as pixels in ``[0, 1]``; the model sees them through
:class:`~encouraging.engine.adversarial.NormalizedModel` (its own normalization inside), so ε is in pixel units
for every run, normalized or not. Attack settings and defaults: :mod:`encouraging.engine.adversarial`. Robust
accuracy is the fraction of the evaluated images that the model still classifies correctly after the attack
(an image misclassified before the attack counts as broken); ``ε = 0`` is the clean accuracy. Each row also
records the largest L∞ and L2 distance of an adversarial image from its original, so the ε-ball can be checked.

Signs of gradient masking or a too-weak attack (:func:`masking_signs`): a single-step FGSM beating 40-step PGD, the
black-box Square attack beating the gradient attacks, AutoAttack beating PGD, robust accuracy rising with ε, and
L∞ accuracy above 0 at ε >= 0.5 (where a grey image is reachable). None proves masking; each says the gradient
attacks' numbers overestimate robustness.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..engine.adversarial import NormalizedModel, build_attack, default_spec
from ..results import Doc, Group, ResultsStore, group_rows, register_section
from ..results.paper import paper_number
from ..results.stats import compare, mean_std_text
from ..results.style import loss_styles
from .ood import eval_batches

if TYPE_CHECKING:
    from ..experiment.loading import LoadedRun

GRADIENT_ATTACKS = ("fgsm", "pgd", "pgd_l2", "cw")


def evaluate_attacks(run: LoadedRun, attacks: list[str], eps: list[float], *, norm: str = "linf", steps: int = 0,
                     alpha: float = 0.0, limit: int = 0, seed: int = 0) -> list[dict[str, Any]]:
    """Robust accuracy of ``run`` for every attack x ε (one row each, accuracies as fractions).

    Args:
        attacks: names from :data:`encouraging.engine.adversarial.ATTACKS`.
        eps: budgets in pixel units (CW: its constant c).
        norm: threat model of ``square`` and ``autoattack`` (``linf`` or ``l2``); the others have their own.
        steps, alpha: override the paper's defaults (0: keep them).
        limit: attack the first ``limit`` test images (0: all); the same images for every model.
        seed: seeds the random starts, so a rerun gives the same numbers.
    """
    if not attacks or not eps:
        raise ValueError(f"give at least one attack and one eps, got attacks={attacks}, eps={eps}")
    model = NormalizedModel(run.model.eval(), run.notes.get("mean"), run.notes.get("std"))
    batches = eval_batches(run, limit, raw=True)
    with torch.no_grad():
        clean = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches.epoch(0))
    n = len(batches.x)
    rows = []
    for name in attacks:
        for e in eps:
            spec = default_spec(name, e, norm=norm, steps=steps, alpha=alpha)
            row = {"attack": name, "norm": spec.norm, "eps": float(e), "steps": spec.steps, "alpha": spec.alpha,
                   "n": n, "clean_acc": clean / n, "attack_seed": seed}
            if e == 0:
                rows.append({**row, "robust_acc": clean / n, "max_linf": 0.0, "max_l2": 0.0, "seconds": 0.0})
                continue
            start = time.perf_counter()
            correct, max_linf, max_l2 = 0, 0.0, 0.0
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                attack = build_attack(spec, model, num_classes=int(run.notes.get("num_classes") or 10), seed=seed)
                for x, y in batches.epoch(0):
                    adv = attack(x, y).detach()
                    delta = (adv - x).flatten(1)
                    max_linf = max(max_linf, float(delta.abs().amax()))
                    max_l2 = max(max_l2, float(delta.norm(dim=1).amax()))
                    with torch.no_grad():
                        correct += int((model(adv).argmax(1) == y).sum())
            rows.append({**row, "robust_acc": correct / n, "max_linf": max_linf, "max_l2": max_l2,
                         "seconds": time.perf_counter() - start})
    return rows


def masking_signs(rows: list[dict[str, Any]], tol: float = 0.01) -> list[str]:
    """Signs of gradient masking in one run's attack rows (``tol``: accuracy margin, as a fraction)."""
    acc = {(r["attack"], r["norm"], r["eps"]): r["robust_acc"] for r in rows}
    signs = []
    for (attack, norm, eps), a in sorted(acc.items()):
        if eps == 0:
            continue
        pgd = acc.get(("pgd" if norm == "linf" else "pgd_l2", norm, eps))
        if attack == "fgsm" and pgd is not None and a < pgd - tol:
            signs.append(f"FGSM beats PGD at eps={eps:g}: {a:.2%} < {pgd:.2%}")
        if attack == "square":  # AutoAttack runs Square itself, so only the gradient attacks count as white-box
            white = [v for (k, nm, e), v in acc.items() if nm == norm and e == eps and k in GRADIENT_ATTACKS]
            if white and a < min(white) - tol:
                signs.append(f"black-box Square beats every gradient attack at {norm} eps={eps:g}: "
                             f"{a:.2%} < {min(white):.2%}")
        if attack == "autoattack" and pgd is not None and a < pgd - tol:
            signs.append(f"AutoAttack beats PGD at {norm} eps={eps:g}: {a:.2%} < {pgd:.2%} (PGD overestimates "
                         "robustness)")
        if norm == "linf" and eps >= 0.5 and attack != "cw" and a > tol:
            signs.append(f"{attack} leaves {a:.2%} accuracy at L-inf eps={eps:g} (>= 0.5: a grey image is reachable)")
    for (attack, norm) in {(r["attack"], r["norm"]) for r in rows}:
        curve = sorted((e, v) for (k, nm, e), v in acc.items() if k == attack and nm == norm)
        for (e0, v0), (e1, v1) in zip(curve, curve[1:], strict=False):
            if v1 > v0 + tol:
                signs.append(f"{attack} accuracy rises with eps: {v0:.2%} at {e0:g} -> {v1:.2%} at {e1:g}")
    return signs


def masking_checks(rows: list[dict[str, Any]]) -> str:
    """Which of :func:`masking_signs`' checks the attacks in ``rows`` allow, in words."""
    attacks = {r["attack"] for r in rows}
    done = ["accuracy monotone in eps"]
    if "fgsm" in attacks and attacks & {"pgd", "pgd_l2"}:
        done.append("FGSM vs PGD")
    if "autoattack" in attacks and attacks & {"pgd", "pgd_l2"}:
        done.append("AutoAttack vs PGD")
    if "square" in attacks and attacks & set(GRADIENT_ATTACKS):
        done.append("black-box Square vs gradient attacks")
    else:
        done.append("no black-box check: add --attack square")
    if any(r["norm"] == "linf" and r["eps"] >= 0.5 for r in rows):
        done.append("L-inf eps >= 0.5")
    return "; ".join(done)


def save_attacks(store: ResultsStore, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Store one run's rows; earlier rows of the same (attack, norm) are replaced, other attacks are kept. Every
    row of the run, ``rows`` included (in place), gets under ``masking`` the gradient-masking signs of them all, so
    AutoAttack run after PGD is still checked against it."""
    fresh = {(r["attack"], r["norm"]) for r in rows}
    kept = [{k: v for k, v in r.items() if k not in _RUN_CONTEXT} for r in store.rows("attack", run_id=run_id)
            if (r["attack"], r["norm"]) not in fresh]
    signs = "; ".join(masking_signs(kept + rows)) or "none"
    for r in kept + rows:
        r["masking"] = signs
    store.add_rows(run_id, "attack", kept + rows, replace=True)


_RUN_CONTEXT = ("run_id", "recipe", "task", "dataset", "model", "loss", "loss_label", "seed")  # added by rows()


# ------------------------------------------------------------------------------------------------ tables and plots


def _curves(rows: list[dict]) -> dict[tuple[str, str, str], dict[float, dict[int, float]]]:
    """``(loss_label, attack, norm) -> eps -> run seed -> robust accuracy``."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[(r["loss_label"], r["attack"], r["norm"])][r["eps"]][int(r["seed"])] = r["robust_acc"]
    return out


def plot_robustness(rows: list[dict], norm: str, path: Path) -> str | None:
    """Robust accuracy (%) vs ε for every loss and attack of one norm: mean over seeds, min-max band."""
    from matplotlib.figure import Figure

    curves = {k: v for k, v in _curves(rows).items() if k[2] == norm}
    if not curves:
        return None
    losses = sorted({k[0] for k in curves}, key=lambda lb: (lb != "CE", lb))
    attacks = sorted({k[1] for k in curves})
    colors = {lb: colour for lb, (colour, _) in loss_styles(losses).items()}  # the report's colour per loss
    styles = dict(zip(attacks, ("-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))), strict=False))
    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    ax = fig.subplots()
    for (loss, attack, _), by_eps in sorted(curves.items()):
        xs = sorted(by_eps)
        vals = [list(by_eps[e].values()) for e in xs]
        mean = [100 * sum(v) / len(v) for v in vals]
        ax.plot(xs, mean, color=colors[loss], ls=styles[attack], marker="o", ms=3, lw=1.6,
                label=f"{loss} + {attack.upper().replace('_', '-')}")
        if any(len(v) > 1 for v in vals):
            ax.fill_between(xs, [100 * min(v) for v in vals], [100 * max(v) for v in vals], color=colors[loss],
                            alpha=0.12, lw=0)
    ax.set_xlabel(f"epsilon ({'L-inf' if norm == 'linf' else 'L2'}, pixels in [0, 1])")
    ax.set_ylabel("robust test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path)
    seeds = sorted({int(r["seed"]) for r in rows})
    return (f"Accuracy vs epsilon ({norm}), mean over seeds {seeds} with the min-max band; "
            f"{rows[0]['n']} test images.")


def paper_cell(attack: str, norm: str, eps: float) -> str:
    """``"CE / EL"``: the paper's L∞ robust accuracy (%) of the torchattacks-demo CNN on MNIST for ``attack`` at
    ``eps``, looked up in :data:`encouraging.results.paper.PAPER_NUMBERS` (metric ``<attack>_linf@<eps>``); "–"
    where the paper has none."""
    if norm != "linf":
        return "–"
    ce, el = (paper_number("mnist", "attack_cnn", loss, metric=f"{attack}_linf@{eps:g}") for loss in ("ce", "el"))
    return f"{ce.format()} / {el.format()}" if ce and el else "–"


def has_paper_curves(group: Group) -> bool:
    """Whether the paper's robustness curves apply: the torchattacks-demo CNN on MNIST, trained without attacks
    (the paper's figure is of standard training; adversarially trained runs have no paper number)."""
    trained_on_attacks = any(((r.get("config") or {}).get("train") or {}).get("adversarial", {}).get("attack", "none")
                             != "none" for row in group.rows for r in row.runs)
    return group.dataset == "mnist" and group.model == "torchattacks_cnn" and not trained_on_attacks


def render_attacks(store: ResultsStore, group: Group, doc: Doc, out: Path, slug: str) -> None:
    """Report section: robust accuracy per attack x ε x loss, EL − CE with paired CIs, plots, masking signs."""
    rows = group_rows(store, group, "attack")
    if not rows:
        return
    doc.h(3, "Adversarial robustness")
    curves = _curves(rows)
    labels = sorted({k[0] for k in curves}, key=lambda lb: (lb != "CE", lb))
    paper = has_paper_curves(group)
    keys = sorted({(k[1], k[2]) for k in curves})
    headers = ["attack", "norm", "eps", *labels]
    if "CE" in labels:
        headers += [f"{lb} − CE (points)" for lb in labels[1:]]
    if paper:
        headers += ["paper CE / EL"]
    table = []
    for attack, norm in keys:
        for e in sorted({e for k, v in curves.items() if k[1:] == (attack, norm) for e in v}):
            cells = [mean_std_text(list(curves.get((lb, attack, norm), {}).get(e, {}).values()), 100)
                     for lb in labels]
            if "CE" in labels:
                ce = curves.get(("CE", attack, norm), {}).get(e, {})
                for lb in labels[1:]:
                    other = curves.get((lb, attack, norm), {}).get(e, {})
                    cells.append(compare(ce, other).format(100.0, 2) if ce and other else "–")
            if paper:
                cells.append(paper_cell(attack, norm, e))
            table.append([attack, norm, f"{e:g}", *cells])
    doc.table(headers, table, ["l", "l", "r"] + ["r"] * (len(headers) - 3))
    n = sorted({r["n"] for r in rows})
    doc.p(f"Robust test accuracy in %, mean ± std over seeds, on the first {', '.join(map(str, n))} test images; "
          "differences: mean [95% t-interval], paired t-test p, number of pairs."
          + (" Paper: the torchattacks-demo CNN, single runs (paper.md §5.8)." if paper else ""))
    for norm in sorted({k[2] for k in curves}):
        name = f"{slug}_robustness_{norm}.png"
        caption = plot_robustness(rows, norm, out / name)
        if caption:
            doc.img(name, f"Robust accuracy vs epsilon ({norm})")
            doc.p(caption)
    by_run: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_run[r["run_id"]].append(r)
    signs = [f"{rs[0]['loss_label']} seed {rs[0]['seed']}: {s}"
             for rs in by_run.values() for s in masking_signs(rs)]
    doc.p(f"Gradient-masking signs ({masking_checks(rows)}): " + (f"{len(signs)}:" if signs else "none found."))
    doc.ul(signs)


register_section("attack", render_attacks)
