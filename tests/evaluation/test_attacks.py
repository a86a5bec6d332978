"""Attacks on a tiny model (accuracy drops, the ε-ball and the [0, 1] box hold), masking signs, the evaluation of
trained runs, and adversarial training in the engine."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from encouraging.engine.adversarial import (
    AdversarialPerturbation,
    NormalizedModel,
    build_attack,
    build_perturbation,
    default_spec,
)
from encouraging.engine.batches import TensorBatches
from encouraging.engine.config import Config, apply_overrides, config_hash
from encouraging.engine.task import DataStats, Prepared
from encouraging.engine.trainer import Trainer
from encouraging.evaluation.attacks import (
    evaluate_attacks,
    masking_checks,
    masking_signs,
    paper_cell,
    save_attacks,
)
from encouraging.experiment import load_run
from encouraging.results import ResultsStore, write_report
from encouraging.tasks.image import ImageTask

from ..results.test_report import add_run


class Brightness(nn.Module):
    """Two classes on 4x4 grey images: logit_0 = 8 (mean pixel - 0.5), logit_1 = 0. Bright images are class 0."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        z = self.scale * (x.mean((1, 2, 3)) - 0.5)
        return torch.stack([z, torch.zeros_like(z)], 1)


def _bright_images(n=32):
    g = torch.Generator().manual_seed(0)
    return 0.6 + 0.1 * torch.rand(n, 1, 4, 4, generator=g), torch.zeros(n, dtype=torch.long)


@pytest.mark.parametrize(("name", "eps"), [("fgsm", 0.2), ("pgd", 0.2), ("pgd_l2", 0.9)])
def test_attack_breaks_a_tiny_model_inside_its_eps_ball_and_the_box(name, eps):
    x, y = _bright_images()
    model = Brightness()
    assert bool((model(x).argmax(1) == y).all())
    spec = default_spec(name, eps, steps=20 if name != "fgsm" else 0, alpha=0.05 if name != "fgsm" else 0.0)
    adv = build_attack(spec, model)(x, y)
    delta = (adv - x).flatten(1)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if spec.norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= eps + 1e-5
    # the brightness must drop by more than 0.1-0.2: L-inf 0.2 does it, L2 0.9 over 16 pixels is 0.225 per pixel
    assert float((model(adv).argmax(1) == y).float().mean()) < 0.5


def test_default_spec_holds_the_papers_settings_and_checks_its_arguments():
    assert default_spec("pgd", 0.3) == default_spec("pgd", 0.3, steps=40, alpha=2 / 255)
    assert (default_spec("pgd_l2", 1.0).norm, default_spec("pgd_l2", 1.0).alpha) == ("l2", 0.2)
    assert default_spec("square", 0.1, norm="l2").norm == "l2" and default_spec("fgsm", 0.1, norm="l2").norm == "linf"
    for bad, match in ((dict(name="deepfool"), "attack must be one of"), (dict(eps=-1.0), "eps"),
                       (dict(norm="l1"), "norm"), (dict(steps=-2), "steps")):
        with pytest.raises(ValueError, match=match):
            default_spec(**{"name": "pgd", "eps": 0.1, **bad})


def test_an_attack_leaves_a_model_in_eval_mode_in_eval_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 2)).eval()
    x, y = _bright_images(8)
    build_attack(default_spec("pgd", 0.1, steps=2), NormalizedModel(model, (0.5,), (0.25,)))(x, y)
    assert not model.training and not model[2].training


def test_normalized_model_normalizes_inside():
    inner = nn.Flatten()
    wrapped = NormalizedModel(inner, (0.5,), (0.25,))
    x = torch.rand(2, 1, 3, 3)
    assert torch.allclose(wrapped(x), ((x - 0.5) / 0.25).flatten(1))
    assert torch.allclose(wrapped.unnormalize(wrapped.normalize(x)), x, atol=1e-6)
    with pytest.raises(ValueError, match="std"):
        NormalizedModel(inner, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="together"):
        NormalizedModel(inner, (0.5,), None)


def _row(attack, eps, acc, norm="linf"):
    return {"attack": attack, "norm": norm, "eps": eps, "robust_acc": acc}


def test_masking_signs():
    clean = [_row("fgsm", 0.0, 0.99), _row("fgsm", 0.1, 0.8), _row("pgd", 0.0, 0.99), _row("pgd", 0.1, 0.6),
             _row("square", 0.1, 0.7)]
    assert masking_signs(clean) == []
    masked = [_row("fgsm", 0.1, 0.5), _row("pgd", 0.1, 0.6), _row("pgd", 0.2, 0.7), _row("square", 0.1, 0.4),
              _row("autoattack", 0.1, 0.4), _row("pgd", 0.5, 0.3)]
    signs = " | ".join(masking_signs(masked))
    assert "FGSM beats PGD at eps=0.1" in signs
    assert "black-box Square beats every gradient attack" in signs  # AutoAttack (which runs Square) not counted
    assert "AutoAttack beats PGD at linf eps=0.1" in signs
    assert "pgd accuracy rises with eps" in signs
    assert "eps=0.5" in signs
    assert "black-box Square vs gradient attacks" in masking_checks(masked)
    assert "AutoAttack vs PGD" in masking_checks(masked)
    assert "no black-box check" in masking_checks(clean[:4]) and "FGSM vs PGD" in masking_checks(clean[:4])


def test_paper_cell_looks_up_the_papers_linf_curves():
    assert paper_cell("fgsm", "linf", 0.0) == "98.69 / 99.04"
    assert paper_cell("fgsm", "linf", 0.2) == "44.22 / 63.00"
    assert paper_cell("pgd", "linf", 0.1 + 0.2) == "0.53 / 11.21"  # 0.30000000000000004
    for args in (("pgd", "linf", 0.35), ("square", "linf", 0.1), ("pgd_l2", "l2", 1.0)):
        assert paper_cell(*args) == "–"


def test_evaluate_attacks_on_a_trained_run(trained_runs, data_root):
    run = load_run(trained_runs["CE"], device="cpu")
    rows = evaluate_attacks(run, ["fgsm", "pgd"], [0.0, 0.1, 0.3], limit=100, steps=10, alpha=0.05)
    assert len(rows) == 6 and {r["n"] for r in rows} == {100}
    acc = {(r["attack"], r["eps"]): r["robust_acc"] for r in rows}
    assert acc[("fgsm", 0.0)] == acc[("pgd", 0.0)] == rows[0]["clean_acc"] > 0.5
    assert acc[("pgd", 0.3)] < acc[("pgd", 0.1)] < acc[("pgd", 0.0)]
    for r in rows:
        assert r["max_linf"] <= r["eps"] + 1e-6
    again = evaluate_attacks(run, ["pgd"], [0.1], limit=100, steps=10, alpha=0.05)
    assert again[0]["robust_acc"] == acc[("pgd", 0.1)]  # seeded random start


def test_eval_attack_cli_stores_rows_and_the_report_has_the_section(trained_runs, data_root, tmp_path, capsys):
    from encouraging.cli import main

    args = ["eval", "attack", str(trained_runs["CE"]), str(trained_runs["EL"]), "--limit", "64", "--steps", "5",
            "--out", str(tmp_path / "att"), "--quiet"]
    assert main(args + ["--attack", "fgsm,pgd", "--eps", "0,0.2"]) == 0
    assert main(args + ["--attack", "pgd_l2", "--eps", "1.0"]) == 0  # other attacks' rows are kept
    assert "gradient-masking signs" in capsys.readouterr().out
    store = ResultsStore(trained_runs["db"])
    rows = store.rows("attack")
    assert {(r["loss_label"], r["attack"]) for r in rows} == {(lb, a) for lb in ("CE", "EL (LE=1)")
                                                              for a in ("fgsm", "pgd", "pgd_l2")}
    assert (tmp_path / "att" / "robustness_l2.png").is_file()
    report = write_report(store, tmp_path / "report").read_text()
    assert "### Adversarial robustness" in report and "Gradient-masking signs" in report
    capsys.readouterr()
    assert main(args + ["--eps", "0,big"]) == 2
    assert "--eps" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- adversarial training


def _config(**adversarial) -> Config:
    cfg = Config()
    cfg.optim = dataclasses.replace(cfg.optim, name="adam", lr=1e-2, schedule="constant")
    cfg.train = dataclasses.replace(cfg.train, epochs=1, device="cpu")
    cfg.train.adversarial = dataclasses.replace(cfg.train.adversarial, **adversarial)
    return cfg


def test_adversarial_training_runs_with_the_runs_loss():
    from encouraging.losses import EncouragingLoss

    x = (torch.rand(64, 1, 4, 4) * 255).to(torch.uint8)
    y = (x.float().mean((1, 2, 3)) > 127).long()
    batches = TensorBatches(x, y, 16, train=True, mean=(0.5,), std=(0.25,))
    cfg = _config(attack="pgd", eps=0.1, alpha=0.05, steps=3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    task = ImageTask(cfg)
    task.perturb = build_perturbation(cfg, model, batches)  # what ImageTask.setup() does with its own data
    trainer = Trainer(task, Prepared(model, batches, batches, DataStats(2)), EncouragingLoss(log_end=1.0), quiet=True)
    assert isinstance(task.perturb, AdversarialPerturbation)
    # the perturbation works on pixels: normalized batch -> pixels within eps -> normalized again
    xb, yb = next(batches.epoch(0))
    adv = task.perturb(xb, yb)
    assert float(((adv - xb) * 0.25).abs().max()) <= 0.1 + 1e-5
    metrics = trainer.train_epoch(0)
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and metrics["train_bonus"] < 0
    assert model.training  # the attack gave the model back in train mode


def test_adversarial_config_keeps_old_hashes_and_refuses_bad_settings():
    plain = Config()
    assert config_hash(plain) == "2b9f294fea96"  # the default config's hash before train.adversarial existed
    assert config_hash(plain) == config_hash(apply_overrides(plain, ["--train.adversarial.eps=0.2"]))
    on = apply_overrides(plain, ["--train.adversarial.attack=fgsm"])
    assert config_hash(on) != config_hash(plain)
    assert config_hash(apply_overrides(on, ["--train.adversarial.eps=0.2"])) != config_hash(on)
    assert build_perturbation(plain, nn.Linear(2, 2), None) is None
    with pytest.raises(ValueError, match="train.adversarial.attack"):
        build_perturbation(_config(attack="cw"), nn.Linear(2, 2), None)
    with pytest.raises(ValueError, match="in-memory image dataset"):
        build_perturbation(_config(attack="fgsm"), nn.Linear(2, 2), object())


def test_paper_curves_only_for_the_papers_standard_training():
    from encouraging.evaluation.attacks import has_paper_curves
    from encouraging.results import Group, LossRow
    from encouraging.results.report import Metric

    def group(model, adversarial):
        run = {"config": {"train": {"adversarial": {"attack": adversarial}}}}
        row = LossRow("ce", "CE", {}, [run], {}, {}, {})
        return Group("r", "mnist", model, "image", Metric(), [row])

    assert has_paper_curves(group("torchattacks_cnn", "none"))
    assert not has_paper_curves(group("torchattacks_cnn", "fgsm"))  # adversarial training: not the paper's figure
    assert not has_paper_curves(group("mnistnet", "none"))


def test_saved_rows_carry_the_masking_signs_of_every_attack_the_run_has(tmp_path):
    """AutoAttack evaluated after PGD, in a second call, is still checked against PGD's stored rows."""
    store = ResultsStore(tmp_path / "r.db")
    add_run(store, "quick", "small_cnn", 0, 0)
    run_id = store.runs()[0]["run_id"]

    def row(attack, acc):
        return {"attack": attack, "norm": "linf", "eps": 0.2, "robust_acc": acc, "n": 100}

    save_attacks(store, run_id, [row("pgd", 0.30)])
    assert store.rows("attack")[0]["masking"] == "none"
    fresh = [row("autoattack", 0.10)]
    save_attacks(store, run_id, fresh)
    assert "AutoAttack beats PGD" in fresh[0]["masking"]
    assert all("AutoAttack beats PGD" in r["masking"] for r in store.rows("attack"))
    assert {r["attack"] for r in store.rows("attack")} == {"pgd", "autoattack"}
