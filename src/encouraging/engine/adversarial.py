"""Adversarial examples for training and evaluation: torchattacks attacks on a model that normalizes its input.

Attacks work on pixels in ``[0, 1]`` (the ε-ball and the ``[0, 1]`` box are in those units), so the model they see
is :class:`NormalizedModel`: ``model((x - mean) / std)``. The engine's batch sources hand out normalized batches;
:class:`AdversarialPerturbation` un-normalizes a batch, attacks it and normalizes the result again, so the training
loop itself is unchanged (``train.adversarial`` in the config switches it on, see :class:`AdversarialConfig`).

Attacks (torchattacks; every one maximizes cross-entropy on the logits, whatever the training loss, as the paper's
code does):

==========  ==========================================================================================
``fgsm``    one step ``x + ε sign(∇x CE)``, clipped to ``[0, 1]`` (Goodfellow et al. 2015)
``pgd``     L∞ PGD: random start in the ε-ball, ``steps`` steps of size ``alpha`` (Madry et al. 2018)
``pgd_l2``  L2 PGD: random start, ``steps`` normalized-gradient steps of L2 size ``alpha``
``cw``      Carlini-Wagner L2 with constant ``c`` (``eps`` is ``c`` here: CW is unbounded), ``steps`` Adam steps
``square``  black-box Square Attack (score queries only, ``steps`` = query budget), ``norm`` Linf or L2
``autoattack``  AutoAttack "standard": APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020)
==========  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..extras import require

ATTACKS = ("fgsm", "pgd", "pgd_l2", "cw", "square", "autoattack")
NORMS = ("linf", "l2")
TRAIN_ATTACKS = ("none", "fgsm", "pgd", "pgd_l2")


@dataclass(frozen=True)
class AttackSpec:
    """One attack at one budget. ``steps``/``alpha`` of 0 take the paper's defaults (:func:`default_spec`)."""

    name: str
    eps: float
    norm: str = "linf"  # the threat model: fixed by the attack except for square and autoattack
    steps: int = 0
    alpha: float = 0.0
    random_start: bool = True


def default_spec(name: str, eps: float, *, norm: str = "linf", steps: int = 0, alpha: float = 0.0,
                 random_start: bool = True) -> AttackSpec:
    """Fill in the paper's settings (paper.md §5.8, torchattacks' demo): PGD-L∞ α = 2/255 and PGD-L2 α = 0.2 with
    40 steps, CW 50 steps, Square 5000 queries; FGSM has no steps. The norm is the attack's own for fgsm/pgd/pgd_l2/cw.
    """
    if name not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {name!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0 or alpha < 0:
        raise ValueError(f"steps and alpha must be >= 0, got steps={steps}, alpha={alpha}")
    own_norm = {"fgsm": "linf", "pgd": "linf", "pgd_l2": "l2", "cw": "l2"}.get(name, norm)
    default_steps = {"fgsm": 1, "pgd": 40, "pgd_l2": 40, "cw": 50, "square": 5000, "autoattack": 0}[name]
    default_alpha = {"pgd": 2 / 255, "pgd_l2": 0.2, "cw": 0.01}.get(name, 0.0)
    return AttackSpec(name, float(eps), own_norm, steps or default_steps, alpha or default_alpha, random_start)


class NormalizedModel(nn.Module):
    """``model((x - mean) / std)`` for ``x`` in ``[0, 1]``: what an attack sees. No mean/std: ``model(x)``."""

    def __init__(self, model: nn.Module, mean: Sequence[float] | Tensor | None = None,
                 std: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together")
        self.model = model
        mean_t = torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(1.0 if std is None else std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be > 0, got {std_t.flatten().tolist()}")
        self.register_buffer("mean", mean_t.to(_device_of(model)), persistent=False)
        self.register_buffer("std", std_t.to(_device_of(model)), persistent=False)
        # torchattacks puts the model it is given back in that model's mode after an attack: mirror the inner
        # model's mode, so an evaluated model stays in eval mode (BatchNorm, dropout)
        self.train(model.training)

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def unnormalize(self, x: Tensor) -> Tensor:
        """Back to pixels, clipped to ``[0, 1]`` (float round-off can leave the box by ~1e-7)."""
        return (x * self.std + self.mean).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x))


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def build_attack(spec: AttackSpec, model: nn.Module, *, num_classes: int = 10, seed: int = 0):
    """The torchattacks attack for ``spec`` on ``model`` (which takes ``[0, 1]`` inputs, e.g. a NormalizedModel)."""
    require("attacks", "adversarial attacks (eval attack, train.adversarial)")
    import torchattacks

    norm = "Linf" if spec.norm == "linf" else "L2"
    if spec.name == "fgsm":
        return torchattacks.FGSM(model, eps=spec.eps)
    if spec.name == "pgd":
        return torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps,
                                random_start=spec.random_start)
    if spec.name == "pgd_l2":
        return torchattacks.PGDL2(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps,
                                  random_start=spec.random_start)
    if spec.name == "cw":
        return torchattacks.CW(model, c=spec.eps, kappa=0, steps=spec.steps, lr=spec.alpha)
    if spec.name == "square":
        return torchattacks.Square(model, norm=norm, eps=spec.eps, n_queries=spec.steps, seed=seed)
    if spec.name == "autoattack":
        return torchattacks.AutoAttack(model, norm=norm, eps=spec.eps, version="standard", n_classes=num_classes,
                                       seed=seed)
    raise ValueError(f"attack must be one of {ATTACKS}, got {spec.name!r}")


class AdversarialPerturbation:
    """Replace a normalized training batch by adversarial examples of the current model (adversarial training).

    The attack runs with the model in eval mode (torchattacks' default: BatchNorm statistics and dropout are not
    touched by the attack's forward passes) and gives the model back in the mode it had, so the training step
    that follows runs in train mode on the adversarial batch, with the run's own loss (CE or EL): Madry et al.'s
    recipe with the attack's inner maximization on CE, as in the paper's code.
    """

    def __init__(self, spec: AttackSpec, model: nn.Module, mean: Tensor | None, std: Tensor | None) -> None:
        self.spec = spec
        self.wrapped = NormalizedModel(model, mean, std)
        self.attack = build_attack(spec, self.wrapped)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        wrapped = self.wrapped
        adv = self.attack(wrapped.unnormalize(x.float()), y)
        return wrapped.normalize(adv).to(x.dtype).detach()


def build_perturbation(cfg, model: nn.Module, train_batches) -> AdversarialPerturbation | None:
    """The per-batch perturbation of ``cfg.train.adversarial`` (None when it is ``none``).

    The batch source must expose its normalization (``mean``/``std`` tensors, as :class:`TensorBatches` does):
    image folders normalize inside their DataLoader transforms, where the attack cannot undo it.
    """
    adv = cfg.train.adversarial
    if adv.attack == "none":
        return None
    if adv.attack not in TRAIN_ATTACKS:
        raise ValueError(f"train.adversarial.attack must be one of {TRAIN_ATTACKS}, got {adv.attack!r}")
    if not hasattr(train_batches, "mean") or not getattr(train_batches, "images", False):
        raise ValueError("train.adversarial needs an in-memory image dataset (TensorBatches); "
                         f"got {type(train_batches).__name__}")
    spec = default_spec(adv.attack, adv.eps, steps=adv.steps, alpha=adv.alpha, random_start=adv.random_start)
    return AdversarialPerturbation(spec, model, train_batches.mean.flatten(), train_batches.std.flatten())
