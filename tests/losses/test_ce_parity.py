"""With the bonus switched off, every loss is exactly the torch loss it replaces (value and gradient).

``encouraging_loss(bonus_scale=0)`` == ``F.cross_entropy`` over the whole grid of class weights x ignore_index x
label smoothing x probability targets x shapes ((N, C), (N, C, d1, d2), unbatched (C)) x reductions x float32 /
float64; focal and halted focal at ``gamma=0`` and Poly-1 at ``epsilon=0`` are cross-entropy; the binary loss at
``bonus_scale=0`` is ``F.binary_cross_entropy_with_logits``; each module equals its function.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encouraging.losses import (
    BinaryEncouragingLoss,
    EncouragingLoss,
    FocalLoss,
    HaltedFocalLoss,
    PolyLoss,
    binary_encouraging_loss,
    encouraging_loss,
    focal_loss,
    halted_focal_loss,
    poly_loss,
)

from .helpers import PARITY_TOLERANCES, assert_close, random_index_target, random_logits, random_probs

SHAPES = {"2d": (7, 5), "kdim": (3, 4, 2, 3), "unbatched": (5,)}
# (ignore_index argument, whether targets use it). "class" ignores a real class index, as torch allows.
IGNORE = {"absent": (-100, False), "default": (-100, True), "class": (1, True)}


def _case(shape_name, target_kind, ignore, weighted, smoothing, dtype):
    shape = SHAPES[shape_name]
    num_classes = shape[0] if len(shape) == 1 else shape[1]
    x = random_logits(shape, dtype)
    ignore_index, use_ignore = IGNORE[ignore]
    if target_kind == "probs":
        target = random_probs(shape, dtype).requires_grad_()
    elif shape_name == "unbatched" and use_ignore:
        target = torch.tensor(ignore_index)  # the single element is ignored: 'mean' is 0/0 = nan, as in torch
    else:
        target = random_index_target(shape, num_classes, ignore_index if use_ignore else None)
    weight = torch.rand(num_classes, dtype=dtype) + 0.25 if weighted else None
    kwargs = dict(weight=weight, ignore_index=ignore_index, label_smoothing=smoothing)
    return x, target, kwargs


def _value_and_grads(fn, x, target, **kwargs):
    x = x.detach().clone().requires_grad_()
    loss = fn(x, target, **kwargs)
    inputs = [x] + ([target] if target.requires_grad else [])
    grads = torch.autograd.grad(loss.sum(), inputs, allow_unused=True)
    return loss, grads


def _assert_same(ours, theirs, dtype, nan_ok=False, loss_atol=None):
    (loss, grads), (ref_loss, ref_grads) = ours, theirs
    assert loss.dtype == ref_loss.dtype and loss.shape == ref_loss.shape
    assert_close(loss, ref_loss, dtype, table=PARITY_TOLERANCES, equal_nan=nan_ok, atol=loss_atol, msg="loss")
    for name, g, ref_g in zip(("input", "target"), grads, ref_grads, strict=False):
        assert_close(g, ref_g, dtype, table=PARITY_TOLERANCES, equal_nan=nan_ok, msg=f"grad wrt {name}")


GRID = [
    (shape, kind, ignore, weighted, smoothing, reduction, dtype)
    for shape, kind, ignore, weighted, smoothing, reduction, dtype in itertools.product(
        SHAPES, ("index", "probs"), IGNORE, (False, True), (0.0, 0.15), ("none", "mean", "sum"),
        (torch.float32, torch.float64),
    )
    if not (kind == "probs" and ignore != "absent")  # torch rejects ignore_index with probability targets
]


@pytest.mark.parametrize("shape,kind,ignore,weighted,smoothing,reduction,dtype", GRID)
def test_bonus_scale_zero_is_cross_entropy(shape, kind, ignore, weighted, smoothing, reduction, dtype):
    x, target, kwargs = _case(shape, kind, ignore, weighted, smoothing, dtype)
    nan_ok = shape == "unbatched" and IGNORE[ignore][1] and reduction == "mean"
    ours = _value_and_grads(encouraging_loss, x, target, reduction=reduction, bonus_scale=0.0, **kwargs)
    theirs = _value_and_grads(F.cross_entropy, x, target, reduction=reduction, **kwargs)
    _assert_same(ours, theirs, dtype, nan_ok)
    if nan_ok:
        assert torch.isnan(ours[0])


@pytest.mark.parametrize("smoothing", [1.0, 0.999])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_full_label_smoothing_is_cross_entropy(smoothing, kind):
    x, target, kwargs = _case("kdim", kind, "absent", True, smoothing, torch.float64)
    ours = _value_and_grads(encouraging_loss, x, target, bonus_scale=0.0, **kwargs)
    theirs = _value_and_grads(F.cross_entropy, x, target, **kwargs)
    _assert_same(ours, theirs, torch.float64)


BONUS_OPTIONS = [
    dict(bonus="log", log_end=1.0),
    dict(bonus="log", log_end=0.0),
    dict(bonus="power", gamma=0.5),
    dict(bonus="cosine", bonus_start=0.5),
    dict(bonus="poly"),
    dict(bonus="log", bonus_weight="same"),
    dict(bonus="log", bonus_weight=torch.tensor([2.0, 0.5, 1.0, 3.0, 1.5])),
]


@pytest.mark.parametrize("options", BONUS_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())[:40])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_bonus_options_are_inert_at_scale_zero(options, kind):
    x, target, kwargs = _case("2d", kind, "absent" if kind == "probs" else "default", True, 0.1, torch.float64)
    options = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    ours = _value_and_grads(encouraging_loss, x, target, bonus_scale=0.0, **kwargs, **options)
    theirs = _value_and_grads(F.cross_entropy, x, target, **kwargs)
    _assert_same(ours, theirs, torch.float64)


def test_log_probs_input_is_nll():
    x, target, kwargs = _case("kdim", "index", "default", True, 0.0, torch.float64)
    log_p = F.log_softmax(x, dim=1)
    ours = _value_and_grads(encouraging_loss, log_p, target, bonus_scale=0.0, log_probs=True, **kwargs)
    theirs = _value_and_grads(F.nll_loss, log_p, target, weight=kwargs["weight"], ignore_index=-100)
    _assert_same(ours, theirs, torch.float64)


# ------------------------------------------------------------------------------------------ baselines at 0

BASELINES_AT_ZERO = {
    "focal": lambda x, t, **kw: focal_loss(x, t, gamma=0.0, **kw),
    "halted_focal_h0.5": lambda x, t, **kw: halted_focal_loss(x, t, gamma=0.0, halt=0.5, **kw),
    "halted_focal_h1": lambda x, t, **kw: halted_focal_loss(x, t, gamma=0.0, halt=1.0, **kw),
    "poly": lambda x, t, **kw: poly_loss(x, t, epsilon=0.0, **kw),
}


@pytest.mark.parametrize("name", BASELINES_AT_ZERO)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind,ignore", [("index", "absent"), ("index", "default"), ("index", "class"),
                                         ("probs", "absent")])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_baselines_at_neutral_parameter_are_cross_entropy(name, shape, kind, ignore, smoothing, reduction):
    x, target, kwargs = _case(shape, kind, ignore, True, smoothing, torch.float64)
    nan_ok = shape == "unbatched" and IGNORE[ignore][1] and reduction == "mean"
    ours = _value_and_grads(BASELINES_AT_ZERO[name], x, target, reduction=reduction, **kwargs)
    theirs = _value_and_grads(F.cross_entropy, x, target, reduction=reduction, **kwargs)
    _assert_same(ours, theirs, torch.float64, nan_ok)


# ---------------------------------------------------------------------------------------------------- binary

BINARY_WEIGHTS = {
    "none": lambda shape, dtype: None,
    "per_class": lambda shape, dtype: torch.rand(shape[-1], dtype=dtype) + 0.5,
    "full": lambda shape, dtype: torch.rand(shape, dtype=dtype) + 0.5,
    "column": lambda shape, dtype: torch.rand(shape[0], 1, dtype=dtype) + 0.5,
}


@pytest.mark.parametrize("weight", BINARY_WEIGHTS)
@pytest.mark.parametrize("pos_weight", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("soft", [False, True])
def test_binary_at_scale_zero_is_bce_with_logits(weight, pos_weight, reduction, dtype, soft):
    shape = (6, 4)
    x = random_logits(shape, dtype, scale=3.0)
    target = torch.rand(shape, dtype=dtype) if soft else torch.randint(2, shape).to(dtype)
    kwargs = dict(weight=BINARY_WEIGHTS[weight](shape, dtype), reduction=reduction,
                  pos_weight=torch.rand(shape[-1], dtype=dtype) * 3 if pos_weight else None)
    ours = _value_and_grads(binary_encouraging_loss, x, target, bonus_scale=0.0, **kwargs)
    theirs = _value_and_grads(F.binary_cross_entropy_with_logits, x, target, **kwargs)
    # torch's BCE computes (1 - y) x + softplus(-x) style sums that cancel to about one ulp of |x| (float32
    # ulp(8) ~ 1e-6) on confident elements; ours uses softplus directly. Allow that much, per unit of weight.
    scale = (kwargs["weight"].max().item() if kwargs["weight"] is not None else 1.0) * (
        1.0 + (kwargs["pos_weight"].max().item() if pos_weight else 1.0))
    _assert_same(ours, theirs, dtype, loss_atol=2 * torch.finfo(dtype).eps * x.abs().max().item() * scale)


def test_binary_module_at_scale_zero_is_bce_module():
    x, target = random_logits((5, 3), torch.float32), torch.randint(2, (5, 3)).float()
    weight, pos_weight = torch.rand(3) + 0.5, torch.rand(3) * 2
    ours = BinaryEncouragingLoss(weight, "sum", pos_weight, bonus_scale=0.0)
    theirs = nn.BCEWithLogitsLoss(weight, reduction="sum", pos_weight=pos_weight)
    _assert_same(_value_and_grads(ours, x, target), _value_and_grads(theirs, x, target), torch.float32)


# ------------------------------------------------------------------------------------- module == functional

MODULE_OPTIONS = [
    dict(),
    dict(log_end=1.0, label_smoothing=0.1),
    dict(bonus="power", gamma=3.0, bonus_start=0.2, reduction="sum"),
    dict(bonus="cosine", bonus_scale=0.5, reduction="none", ignore_index=2),
    dict(log_end=0.5, bonus_weight="same"),
    dict(log_end=0.3, bonus_weight=torch.tensor([0.5, 1.0, 2.0, 1.0, 0.1])),
]


@pytest.mark.parametrize("options", MODULE_OPTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_module_equals_functional(options, weighted):
    x, target, _ = _case("kdim", "index", "absent", False, 0.0, torch.float32)
    target[0, 0, 0] = 2  # an element that the ignore_index=2 option drops
    weight = torch.rand(4) + 0.5 if weighted else None
    options = {k: v[:4] if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    module = EncouragingLoss(weight, **options)
    ours = _value_and_grads(module, x, target)
    theirs = _value_and_grads(encouraging_loss, x, target, weight=weight, **options)
    _assert_same(ours, theirs, torch.float32)
    parts = module.parts(x, target)
    assert_close(parts.loss, ours[0], table=PARITY_TOLERANCES)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_module_at_scale_zero_is_cross_entropy_module(reduction):
    x, target, kwargs = _case("2d", "index", "default", True, 0.1, torch.float32)
    ours = EncouragingLoss(**kwargs, reduction=reduction, bonus_scale=0.0)
    theirs = nn.CrossEntropyLoss(**kwargs, reduction=reduction)
    _assert_same(_value_and_grads(ours, x, target), _value_and_grads(theirs, x, target), torch.float32)


def test_module_loads_cross_entropy_state_dict():
    """A drop-in keeps nn.CrossEntropyLoss's buffer name, so its state_dict loads and moves with .to()."""
    weight = torch.rand(5) + 0.5
    module = EncouragingLoss(weight=torch.ones(5))
    module.load_state_dict(nn.CrossEntropyLoss(weight=weight).state_dict())
    assert torch.equal(module.weight, weight)
    assert module.double().weight.dtype == torch.float64


BASELINE_MODULES = [
    (PolyLoss, poly_loss, dict(epsilon=-0.5)),
    (FocalLoss, focal_loss, dict(gamma=1.5)),
    (HaltedFocalLoss, halted_focal_loss, dict(gamma=2.0, halt=0.3)),
    (BinaryEncouragingLoss, binary_encouraging_loss, dict(log_end=0.5, bonus="power")),
]


@pytest.mark.parametrize("module_cls,function,options", BASELINE_MODULES, ids=lambda v: getattr(v, "__name__", ""))
def test_baseline_module_equals_functional(module_cls, function, options):
    if module_cls is BinaryEncouragingLoss:
        x, target = random_logits((6, 4), torch.float64), torch.rand(6, 4, dtype=torch.float64)
        weight, common = torch.rand(4, dtype=torch.float64), dict(reduction="sum")
    else:
        x, target, _ = _case("2d", "index", "default", False, 0.0, torch.float64)
        weight, common = torch.rand(5, dtype=torch.float64) + 0.5, dict(label_smoothing=0.1, reduction="sum")
    module = module_cls(weight, **common, **options)
    ours = _value_and_grads(module, x, target)
    theirs = _value_and_grads(function, x, target, weight=weight, **common, **options)
    _assert_same(ours, theirs, torch.float64)
    # and it is not cross-entropy: the option does something
    ce = F.binary_cross_entropy_with_logits if module_cls is BinaryEncouragingLoss else F.cross_entropy
    assert not torch.allclose(ours[0], ce(x, target, weight=weight, reduction="sum"), rtol=1e-6, atol=0)

