"""Losses: the encouraging loss, its binary form, the baselines, MSE/MAE with the mirror bonus, long-tail adjustments,
bonus schedules. Depends on torch only."""

from ._checks import disable_checks
from .baselines import FocalLoss, HaltedFocalLoss, PolyLoss, focal_loss, halted_focal_loss, poly_loss
from .binary import BinaryEncouragingLoss, binary_encouraging_loss
from .bonus import Bonus, BonusParams, get_bonus, list_bonuses, register_bonus
from .functional import LossParts, encouraging_loss, encouraging_loss_parts
from .linear import LinearEncouragingLoss, linear_encouraging_loss
from .longtail import (
    AdjustedEncouragingLoss,
    adjusted_logits,
    class_balanced_weights,
    ldam_margins,
    logit_offsets,
)
from .mirror import MirrorLoss, mirror_loss
from .modules import EncouragingLoss, summarize
from .schedule import BonusSchedule

__all__ = [
    "AdjustedEncouragingLoss",
    "adjusted_logits",
    "class_balanced_weights",
    "ldam_margins",
    "logit_offsets",
    "Bonus",
    "BonusParams",
    "BonusSchedule",
    "BinaryEncouragingLoss",
    "EncouragingLoss",
    "FocalLoss",
    "HaltedFocalLoss",
    "LinearEncouragingLoss",
    "LossParts",
    "MirrorLoss",
    "PolyLoss",
    "binary_encouraging_loss",
    "disable_checks",
    "encouraging_loss",
    "encouraging_loss_parts",
    "focal_loss",
    "get_bonus",
    "halted_focal_loss",
    "linear_encouraging_loss",
    "list_bonuses",
    "mirror_loss",
    "poly_loss",
    "register_bonus",
    "summarize",
]
