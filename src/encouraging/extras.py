"""The optional extras of ``pip install 'encouraging[...]'`` and the error that names the one to install.

The losses need torch and numpy only. The experiment layers (the engine and everything built on it: tasks,
evaluation, analyses, the ``encouraging`` command) need the ``experiments`` extra; some tasks, integrations and the
experiment trackers need one more (``graph``, ``translation``, ``transformers``, ``trackers``), adversarial attacks
(``eval attack``, ``train.adversarial``) need ``attacks``, and the launchers of
``compare --launcher submitit|ray`` need ``cluster``.

>>> from encouraging.extras import require
>>> require("experiments", "the engine")    # raises MissingExtraError when a module of the extra is missing
"""

from __future__ import annotations

import importlib.util

EXTRAS = {  # extra -> the import names of its packages, as pyproject.toml declares them (tests/test_release.py)
    "experiments": ("yaml", "rich", "torchvision", "matplotlib", "scipy", "pytorch_ood"),
    "attacks": ("torchattacks", "tqdm"),
    "graph": ("torch_geometric", "ogb", "rdkit"),
    "translation": ("sentencepiece", "sacrebleu"),
    "transformers": ("transformers", "accelerate"),
    "triton": ("triton",),
    "trackers": ("tensorboard", "wandb"),
    "cluster": ("submitit", "ray"),
}


class MissingExtraError(ModuleNotFoundError):
    """A feature was used without the optional packages it needs; the message names the extra to install."""


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed (looked up, not imported)."""
    if extra not in EXTRAS:
        raise ValueError(f"extra must be one of {sorted(EXTRAS)}, got {extra!r}")
    return [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` when any of its modules is missing; ``feature`` says
    what needs it."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(f"{feature} needs the '{extra}' extra ({', '.join(absent)} not installed): "
                                f"pip install 'encouraging[{extra}]'", name=absent[0])
