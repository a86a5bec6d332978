"""encouraging: the encouraging loss (Zhao et al., AAAI 2022) as a drop-in for ``nn.CrossEntropyLoss``.

>>> from encouraging import EncouragingLoss
>>> criterion = EncouragingLoss(log_end=0.75)   # was: nn.CrossEntropyLoss()
"""

from .losses import (
    BinaryEncouragingLoss,
    BonusSchedule,
    EncouragingLoss,
    FocalLoss,
    HaltedFocalLoss,
    LinearEncouragingLoss,
    MirrorLoss,
    PolyLoss,
    binary_encouraging_loss,
    encouraging_loss,
    encouraging_loss_parts,
    focal_loss,
    halted_focal_loss,
    linear_encouraging_loss,
    mirror_loss,
    poly_loss,
)
from .plugins import load_plugins

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = [
    "BinaryEncouragingLoss",
    "BonusSchedule",
    "EncouragingLoss",
    "FocalLoss",
    "HaltedFocalLoss",
    "LinearEncouragingLoss",
    "MirrorLoss",
    "PolyLoss",
    "__version__",
    "binary_encouraging_loss",
    "encouraging_loss",
    "encouraging_loss_parts",
    "focal_loss",
    "halted_focal_loss",
    "linear_encouraging_loss",
    "load_plugins",
    "mirror_loss",
    "poly_loss",
]
