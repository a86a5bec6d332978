"""Argument checks shared by every loss: clear errors that name the argument, the allowed values and the value.

The target-range check runs only in eager mode outside ``torch.func`` transforms (on accelerators as a device-side
assert, without a host sync)
and can be switched off with :func:`disable_checks` or ``ENCOURAGING_CHECKS=0``; shape and option checks are
free and always run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")

_state = {"enabled": os.environ.get("ENCOURAGING_CHECKS", "1") != "0"}


@contextlib.contextmanager
def disable_checks() -> Iterator[None]:
    """Skip the data-dependent checks (target range) inside the block; they cost a host sync on GPU."""
    previous = _state["enabled"]
    _state["enabled"] = False
    try:
        yield
    finally:
        _state["enabled"] = previous


def data_checks_enabled() -> bool:
    """Off inside :func:`disable_checks`, under ``torch.compile`` and under ``torch.func`` transforms (whose
    batched tensors have no values to read)."""
    return (_state["enabled"] and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active())


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")


def check_nonnegative(name: str, value: float) -> None:
    if not value >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_floating(name: str, tensor: Tensor) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {tensor.dtype}")


def check_class_vector(name: str, vector: Tensor | None, num_classes: int | None = None) -> None:
    """A per-class vector (class weights, bonus weights) must be floating, 1-D and of length C when C is known."""
    if vector is None:
        return
    check_floating(name, vector)
    if vector.dim() != 1 or (num_classes is not None and vector.shape[0] != num_classes):
        length = f" of length C={num_classes} (one entry per class)" if num_classes is not None else ""
        raise ValueError(f"{name} must be a 1-D tensor{length}, got shape {tuple(vector.shape)}")


def all_targets_valid(target: Tensor, num_classes: int, ignore_index: int) -> bool:
    """Whether every class index is in [0, C) and none equals ``ignore_index``, read from one ``aminmax`` where
    that costs no device sync (CPU tensors, data checks on); False where it cannot tell cheaply. A caller that
    gets True has checked the range and may skip the ignore mask."""
    if target.device.type != "cpu" or not data_checks_enabled() or target.numel() == 0:
        return False
    low, high = (int(bound) for bound in torch.aminmax(target))
    return 0 <= low and high < num_classes and not low <= ignore_index <= high


def check_target_range(target: Tensor, index: Tensor, num_classes: int, ignore_index: int) -> None:
    """Every class index is in [0, C) or equals ignore_index (``index``: the targets with ignored ones set to 0).

    One ``aminmax`` pass, then :func:`assert_targets_in_range`. Skipped under ``torch.compile`` and inside
    :func:`disable_checks`.
    """
    if not data_checks_enabled() or index.numel() == 0:
        return
    low, high = torch.aminmax(index)
    assert_targets_in_range((low >= 0) & (high < num_classes), target, num_classes, ignore_index)


def assert_targets_in_range(ok: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> None:
    """Act on ``ok``, a one-element tensor that is nonzero when every class index of ``target`` is in [0, C) or
    ``ignore_index``. On the CPU a bad index raises ``ValueError`` naming it. On an accelerator it is a device-side
    assert (``torch._assert_async``), as ``F.cross_entropy`` does it: a host sync per call would stall the GPU
    pipeline."""
    if ok.device.type != "cpu":
        torch._assert_async(ok, f"target has a class index outside [0, {num_classes}) that is not "
                                f"ignore_index={ignore_index}")
        return
    if not bool(ok):
        outside = (target != ignore_index) & ((target < 0) | (target >= num_classes))
        value = int(target[outside].flatten()[0])
        raise ValueError(
            f"target contains class index {value}, outside [0, {num_classes}) "
            f"and not ignore_index={ignore_index}"
        )
