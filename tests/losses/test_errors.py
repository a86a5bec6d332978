"""Bad input raises ValueError / TypeError whose message names the argument (and, where it helps, the allowed
values and the value received); data checks can be switched off with ``disable_checks``."""

from __future__ import annotations

import re

import pytest
import torch

from encouraging.losses import (
    BinaryEncouragingLoss,
    BonusSchedule,
    EncouragingLoss,
    FocalLoss,
    HaltedFocalLoss,
    PolyLoss,
    binary_encouraging_loss,
    cpu_kernel,
    disable_checks,
    encouraging_loss,
    focal_loss,
    halted_focal_loss,
    list_bonuses,
    poly_loss,
)

X = torch.randn(4, 3)
Y = torch.tensor([0, 1, 2, 1])

# (id, call, exception type, message regex). Each call differs from a valid one in exactly one argument.
SOFTMAX_CASES = [
    ("target-shape", lambda: encouraging_loss(X, torch.tensor([0, 1, 2])), ValueError,
     r"target must have shape \(4,\).*got \(3,\)"),
    ("target-kdim-shape", lambda: encouraging_loss(torch.randn(2, 3, 4), torch.zeros(2, 5, dtype=torch.long)),
     ValueError, r"target must have shape \(2, 4\)"),
    ("target-unbatched-shape", lambda: encouraging_loss(torch.randn(3), torch.tensor([1])), ValueError,
     r"target must have shape \(\)"),
    ("probs-shape", lambda: encouraging_loss(X, torch.rand(4, 2)), ValueError,
     r"probability targets must have the input's shape \(4, 3\).*\(4, 2\)"),
    ("target-not-tensor", lambda: encouraging_loss(X, [0, 1, 2, 1]), TypeError, r"target must be a torch.Tensor"),
    ("target-bool", lambda: encouraging_loss(X, torch.ones(4, dtype=torch.bool)), TypeError, r"target must hold"),
    ("target-too-big", lambda: encouraging_loss(X, torch.tensor([0, 3, 1, 1])), ValueError,
     r"target contains class index 3, outside \[0, 3\)"),
    ("target-negative", lambda: encouraging_loss(X, torch.tensor([0, -1, 1, 1])), ValueError,
     r"target contains class index -1.*ignore_index=-100"),
    ("target-range-kdim", lambda: encouraging_loss(torch.randn(2, 3, 4), torch.full((2, 4), 7)), ValueError,
     r"target contains class index 7"),
    ("input-int", lambda: encouraging_loss(torch.ones(4, 3, dtype=torch.long), Y), TypeError,
     r"input must be a floating point tensor, got dtype torch.int64"),
    ("input-not-tensor", lambda: encouraging_loss([[0.0, 1.0]], torch.tensor([0])), TypeError,
     r"input must be a torch.Tensor"),
    ("input-0d", lambda: encouraging_loss(torch.tensor(1.0), torch.tensor(0)), ValueError, r"input must have"),
    ("log_end-high", lambda: encouraging_loss(X, Y, log_end=1.5), ValueError,
     r"log_end must be in \[0.0, 1.0\], got 1.5"),
    ("log_end-negative", lambda: encouraging_loss(X, Y, log_end=-0.1), ValueError, r"log_end must be in"),
    ("log_end-nan", lambda: encouraging_loss(X, Y, log_end=float("nan")), ValueError, r"log_end must be in"),
    ("bonus_scale-negative", lambda: encouraging_loss(X, Y, bonus_scale=-1.0), ValueError,
     r"bonus_scale must be >= 0, got -1.0"),
    ("bonus_scale-nan", lambda: encouraging_loss(X, Y, bonus_scale=float("nan")), ValueError, r"bonus_scale"),
    ("gamma-zero", lambda: encouraging_loss(X, Y, bonus="power", gamma=0.0), ValueError, r"gamma must be > 0"),
    ("gamma-negative", lambda: encouraging_loss(X, Y, bonus="power", gamma=-2.0), ValueError,
     r"gamma must be > 0, got -2.0"),
    ("bonus_start-one", lambda: encouraging_loss(X, Y, bonus_start=1.0), ValueError,
     r"bonus_start must be in \[0.0, 1.0\), got 1.0"),
    ("bonus_start-negative", lambda: encouraging_loss(X, Y, bonus_start=-0.2), ValueError, r"bonus_start"),
    ("bonus-unknown", lambda: encouraging_loss(X, Y, bonus="exp"), ValueError,
     re.escape(f"bonus must be one of {list_bonuses()}, got 'exp'")),
    ("reduction", lambda: encouraging_loss(X, Y, reduction="avg"), ValueError,
     r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"),
    ("label_smoothing-high", lambda: encouraging_loss(X, Y, label_smoothing=1.5), ValueError,
     r"label_smoothing must be in \[0.0, 1.0\], got 1.5"),
    ("label_smoothing-negative", lambda: encouraging_loss(X, Y, label_smoothing=-0.1), ValueError,
     r"label_smoothing"),
    ("weight-length", lambda: encouraging_loss(X, Y, weight=torch.ones(4)), ValueError,
     r"^weight must be a 1-D tensor of length C=3.*got shape \(4,\)"),
    ("weight-2d", lambda: encouraging_loss(X, Y, weight=torch.ones(1, 3)), ValueError, r"^weight must be a 1-D"),
    ("weight-int", lambda: encouraging_loss(X, Y, weight=torch.ones(3, dtype=torch.long)), TypeError,
     r"^weight must be a floating point tensor"),
    ("bonus_weight-length", lambda: encouraging_loss(X, Y, bonus_weight=torch.ones(2)), ValueError,
     r"^bonus_weight must be a 1-D tensor of length C=3"),
    ("bonus_weight-string", lambda: encouraging_loss(X, Y, bonus_weight="class"), ValueError,
     r"bonus_weight must be None, 'same' or a \(C,\) tensor, got 'class'"),
    ("poly-epsilon", lambda: poly_loss(X, Y, epsilon=-1.5), ValueError, r"epsilon must be >= -1, got -1.5"),
    ("poly-target", lambda: poly_loss(X, torch.tensor([0, 5, 0, 0])), ValueError, r"target contains class index 5"),
    ("focal-gamma", lambda: focal_loss(X, Y, gamma=-1.0), ValueError, r"gamma must be >= 0, got -1.0"),
    ("focal-weight", lambda: focal_loss(X, Y, weight=torch.ones(5)), ValueError, r"^weight must be"),
    ("hfl-halt-zero", lambda: halted_focal_loss(X, Y, halt=0.0), ValueError, r"halt must be in \(0, 1\], got 0.0"),
    ("hfl-halt-high", lambda: halted_focal_loss(X, Y, halt=1.5), ValueError, r"halt must be in \(0, 1\]"),
    ("hfl-gamma", lambda: halted_focal_loss(X, Y, gamma=-0.5), ValueError, r"gamma must be >= 0"),
    ("hfl-reduction", lambda: halted_focal_loss(X, Y, reduction="batchmean"), ValueError, r"reduction must be"),
]

MODULE_CASES = [
    ("module-log_end", lambda: EncouragingLoss(log_end=2.0), ValueError, r"log_end must be in"),
    ("module-bonus_scale", lambda: EncouragingLoss(bonus_scale=-0.5), ValueError, r"bonus_scale must be >= 0"),
    ("module-bonus", lambda: EncouragingLoss(bonus="square"), ValueError, r"bonus must be one of \["),
    ("module-reduction", lambda: EncouragingLoss(reduction="mean "), ValueError, r"reduction must be one of"),
    ("module-smoothing", lambda: EncouragingLoss(label_smoothing=2.0), ValueError, r"label_smoothing"),
    ("module-bonus_start", lambda: EncouragingLoss(bonus_start=1.0), ValueError, r"bonus_start"),
    ("module-gamma", lambda: EncouragingLoss(gamma=0.0), ValueError, r"gamma must be > 0"),
    ("module-weight-2d", lambda: EncouragingLoss(weight=torch.ones(2, 2)), ValueError, r"^weight must be a 1-D"),
    ("module-bonus_weight", lambda: EncouragingLoss(bonus_weight="all"), ValueError, r"bonus_weight must be"),
    ("module-bonus_weight-2d", lambda: EncouragingLoss(bonus_weight=torch.ones(2, 2)), ValueError,
     r"^bonus_weight must be a 1-D"),
    ("module-weight-length-at-call", lambda: EncouragingLoss(weight=torch.ones(5))(X, Y), ValueError,
     r"^weight must be a 1-D tensor of length C=3"),
    ("poly-module", lambda: PolyLoss(epsilon=-2.0), ValueError, r"epsilon must be >= -1"),
    ("focal-module", lambda: FocalLoss(gamma=-1.0), ValueError, r"gamma must be >= 0"),
    ("hfl-module", lambda: HaltedFocalLoss(halt=0.0), ValueError, r"halt must be in"),
    ("hfl-module-smoothing", lambda: HaltedFocalLoss(label_smoothing=-1.0), ValueError, r"label_smoothing"),
]

BINARY_CASES = [
    ("binary-target-shape", lambda: binary_encouraging_loss(X, torch.rand(4, 2)), ValueError,
     r"target must have the input's shape \(4, 3\), got \(4, 2\)"),
    ("binary-target-type", lambda: binary_encouraging_loss(X, [[0.0] * 3] * 4), ValueError, r"target must have"),
    ("binary-input-int", lambda: binary_encouraging_loss(torch.ones(4, 3, dtype=torch.long), torch.rand(4, 3)),
     TypeError, r"input must be a floating point tensor"),
    ("binary-weight", lambda: binary_encouraging_loss(X, torch.rand(4, 3), weight=torch.ones(2)), ValueError,
     r"^weight of shape \(2,\) does not broadcast to the input's \(4, 3\)"),
    ("binary-weight-bigger", lambda: binary_encouraging_loss(X, torch.rand(4, 3), weight=torch.ones(2, 4, 3)),
     ValueError, r"^weight of shape \(2, 4, 3\) does not broadcast"),
    ("binary-pos_weight", lambda: binary_encouraging_loss(X, torch.rand(4, 3), pos_weight=torch.ones(4)),
     ValueError, r"^pos_weight of shape \(4,\) does not broadcast to the input's \(4, 3\)"),
    ("binary-pos_weight-int", lambda: binary_encouraging_loss(X, torch.rand(4, 3), pos_weight=torch.ones(3).long()),
     TypeError, r"^pos_weight must be a floating point tensor"),
    ("binary-reduction", lambda: binary_encouraging_loss(X, torch.rand(4, 3), reduction="elementwise_mean"),
     ValueError, r"reduction must be one of"),
    ("binary-log_end", lambda: binary_encouraging_loss(X, torch.rand(4, 3), log_end=-1.0), ValueError,
     r"log_end must be in"),
    ("binary-bonus", lambda: binary_encouraging_loss(X, torch.rand(4, 3), bonus="nope"), ValueError,
     r"bonus must be one of"),
    ("binary-module-log_end", lambda: BinaryEncouragingLoss(log_end=3.0), ValueError, r"log_end must be in"),
    ("binary-module-reduction", lambda: BinaryEncouragingLoss(reduction="max"), ValueError, r"reduction must be"),
    ("binary-module-pos_weight", lambda: BinaryEncouragingLoss(pos_weight=torch.ones(3).long()), TypeError,
     r"^pos_weight must be a floating point"),
]

SCHEDULE_CASES = [
    ("schedule-kind", lambda: BonusSchedule("step"), ValueError,
     r"kind must be one of \('constant', 'linear', 'cosine', 'exp'\), got 'step'"),
    ("schedule-target", lambda: BonusSchedule("linear", length=5, target="gamma"), ValueError,
     r"target must be one of \('bonus_scale', 'log_end'\), got 'gamma'"),
    ("schedule-length", lambda: BonusSchedule("linear", length=-1), ValueError, r"length must be >= 0, got -1"),
    ("schedule-defer", lambda: BonusSchedule("linear", length=5, defer=-2), ValueError, r"defer must be >= 0"),
    ("schedule-rate", lambda: BonusSchedule("exp", length=5, rate=0), ValueError, r"rate must be nonzero"),
    ("schedule-base-log_end", lambda: BonusSchedule("linear", length=5, target="log_end", base=1.5), ValueError,
     r"base must be in \[0.0, 1.0\] for target='log_end', got 1.5"),
    ("schedule-base-negative", lambda: BonusSchedule(base=-1.0), ValueError, r"base must be in"),
    ("schedule-apply", lambda: BonusSchedule().apply(torch.nn.CrossEntropyLoss(), 0), TypeError,
     r"CrossEntropyLoss has no attribute 'bonus_scale' to schedule"),
]

ALL_CASES = SOFTMAX_CASES + MODULE_CASES + BINARY_CASES + SCHEDULE_CASES


@pytest.mark.parametrize("call,error,match", [c[1:] for c in ALL_CASES], ids=[c[0] for c in ALL_CASES])
def test_bad_argument_raises_naming_it(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_error_cases_have_unique_ids():
    names = [c[0] for c in ALL_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("ignore_index", [-100, -1, 3, 99, 1])
def test_ignore_index_values_are_allowed(ignore_index):
    """ignore_index may be any value, in or out of [0, C): targets equal to it pass the range check."""
    target = torch.tensor([0, ignore_index, 2, ignore_index])
    loss = encouraging_loss(X, target, ignore_index=ignore_index, reduction="none")
    assert loss[1] == 0 and loss[3] == 0 and loss[0] != 0
    if ignore_index not in (-100, 0, 1, 2):  # the same out-of-range value is an error without ignore_index
        with pytest.raises(ValueError, match=f"target contains class index {ignore_index}"):
            encouraging_loss(X, target)


def test_valid_edges_are_accepted():
    """The ends of each closed range are valid (so the range checks are not off by one)."""
    for kwargs in (dict(log_end=0.0), dict(log_end=1.0), dict(label_smoothing=1.0), dict(bonus_scale=0.0),
                   dict(bonus_start=0.0), dict(bonus_start=0.999), dict(bonus_weight="same")):
        assert torch.isfinite(encouraging_loss(X, Y, **kwargs))
    assert torch.isfinite(poly_loss(X, Y, epsilon=-1.0))
    assert torch.isfinite(halted_focal_loss(X, Y, halt=1.0))
    assert torch.isfinite(focal_loss(X, Y, gamma=0.0))


def test_disable_checks_skips_the_target_range_check():
    bad = torch.tensor([0, 1, 2, -7])
    with pytest.raises(ValueError, match="target contains class index -7"):
        encouraging_loss(X, bad)
    with disable_checks():
        # our check is skipped, so torch's own gather is what objects (on CPU; on GPU it would be a device assert)
        with pytest.raises(RuntimeError, match="out of bounds"):
            encouraging_loss(X, bad, impl="torch")
        if cpu_kernel.available():  # the compiled kernel checks each index as it reads it: free, never skipped
            with pytest.raises(ValueError, match="target contains class index -7"):
                encouraging_loss(X, bad, impl="cpp")
        # shape and option checks are free and stay on
        with pytest.raises(ValueError, match="log_end"):
            encouraging_loss(X, Y, log_end=2.0)
    with pytest.raises(ValueError, match="target contains class index -7"):  # restored on exit
        encouraging_loss(X, bad)


def test_disable_checks_restores_state_after_an_exception():
    with pytest.raises(RuntimeError), disable_checks():
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="target contains"):
        encouraging_loss(X, torch.tensor([0, 1, 2, 9]))


def test_disable_checks_nests():
    with disable_checks():
        with disable_checks():
            pass
        with pytest.raises(RuntimeError, match="out of bounds"):  # still off after the inner block
            encouraging_loss(X, torch.tensor([0, 1, 2, -7]), impl="torch")
    with pytest.raises(ValueError, match="target contains"):
        encouraging_loss(X, torch.tensor([0, 1, 2, -7]))


def test_probability_targets_refuse_a_class_ignore_index():
    x = torch.randn(3, 4)
    soft = torch.softmax(torch.randn(3, 4), 1)
    with pytest.raises(ValueError, match="ignore_index=0 is not supported for probability"):
        encouraging_loss(x, soft, ignore_index=0)
    assert torch.isfinite(encouraging_loss(x, soft, ignore_index=-1))


def test_full_bonus_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        encouraging_loss(torch.randn(4, 1), torch.zeros(4, dtype=torch.long), log_end=1.0)
    assert torch.isfinite(encouraging_loss(torch.randn(4, 1), torch.zeros(4, dtype=torch.long), log_end=0.5))


@pytest.mark.parametrize("floor", [-0.1, 1.0])
def test_bonus_floor_range(floor):
    with pytest.raises(ValueError, match="bonus_floor"):
        encouraging_loss(torch.randn(3, 4), torch.zeros(3, dtype=torch.long), bonus_floor=floor)
