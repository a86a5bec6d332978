r"""The compiled CPU kernel of the encouraging loss (``impl='cpp'``; ``'auto'`` takes it on the CPU where it applies).

``csrc/encouraging_cpu.cpp`` computes the loss of ``(N, C)`` logits against class indices and its gradient in one
call (the closed form of :mod:`.fused`), with its backward registered in C++ as ``F.cross_entropy``'s is: at 10
classes the eager fused path spends its time dispatching ~30 small ops, this one two. It covers the log bonus
without ``bonus_start`` (conservative, full, ``bonus_floor``; label smoothing with the conservative bonus), class
and bonus weights, ``ignore_index`` and every reduction, for 2-D logits of any floating dtype but float8 (half
precision is read once and computed in float32).

The kernel is built on first use by ``torch.utils.cpp_extension`` (a C++ compiler and ``ninja``; about 30 s, once
per machine and torch version, cached in torch's extension directory, ``TORCH_EXTENSIONS_DIR``). Where it cannot
be built, ``'auto'`` warns once and uses the eager fused path; ``ENCOURAGING_CPU_KERNEL=0`` (read at the first
call) switches it off.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import warnings
from pathlib import Path

import torch
from torch import Tensor

from .bonus import P_CAP

_SOURCE = Path(__file__).with_name("csrc") / "encouraging_cpu.cpp"
_REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # at::Reduction
_state: dict[str, object] = {"tried": False, "error": None}


def _build() -> None:
    """Build the kernel, or load its cached build; raises whatever the build raises."""
    # torch.utils.cpp_extension warns at import that it found no CUDA runtime: irrelevant to a CPU build
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load
    finally:
        quiet.setLevel(level)
    logging.getLogger(__name__).info("building the encouraging loss's CPU kernel (once per machine, ~30 s)")
    # at::parallel_for splits rows across threads only in code compiled with OpenMP (torch's own runtime serves it:
    # the same libgomp.so.1 soname); elsewhere (clang on macOS) the rows run on one thread
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    # torch finds ninja on PATH; `pip install ninja` into a virtual environment puts it in the environment's bin,
    # which is off PATH unless the environment is activated: look there last, during the build only
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join(filter(None, (path, sysconfig.get_path("scripts"))))
    try:
        load("encouraging_cpu", [str(_SOURCE)], extra_cflags=["-O3", *openmp], extra_ldflags=openmp,
             is_python_module=False, verbose=False)
    finally:
        os.environ["PATH"] = path


def unavailable_reason() -> str | None:
    """Why the kernel cannot run here, or None when it is loaded: the first call reads ``ENCOURAGING_CPU_KERNEL``
    and builds or loads the kernel, later calls return what it found."""
    if _state["tried"]:
        return _state["error"]  # type: ignore[return-value]
    _state["tried"] = True
    if os.environ.get("ENCOURAGING_CPU_KERNEL", "1") == "0":
        _state["error"] = "it is switched off (ENCOURAGING_CPU_KERNEL=0)"
        return _state["error"]  # type: ignore[return-value]
    try:
        _build()
    except Exception as err:  # no compiler, no ninja, a failed build: every cause leaves the eager path
        last = (str(err).strip().splitlines() or [""])[-1]  # a failed build's own summary line
        _state["error"] = f"it could not be built ({type(err).__name__}: {last})"
        warnings.warn(f"encouraging: the compiled CPU kernel is unavailable, {_state['error']}; "
                      "impl='auto' uses the eager fused path", RuntimeWarning, stacklevel=3)
    return _state["error"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the kernel is loaded (built on the first call)."""
    return unavailable_reason() is None


def unsupported(x: Tensor, target: Tensor, label_smoothing: float, bonus: str, log_end: float,
                bonus_start: float, bonus_floor: float) -> str | None:
    """What keeps the kernel from computing this call (checked logits ``(N, C, *)`` and class-index or
    probability ``target``), or None."""
    if x.device.type != "cpu":
        return f"a {x.device.type} tensor"
    if x.dim() != 2 or target.is_floating_point():
        return "input with more than 2 dimensions" if x.dim() != 2 else "probability targets"
    if x.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return f"{x.dtype} input"
    if bonus != "log" or bonus_start != 0.0:
        return "a bonus other than 'log', or bonus_start > 0"
    if log_end < 1.0 and bonus_floor > 1.0 - log_end:
        return "a bonus_floor above 1 - log_end (it clamps the bonus only there)"
    if label_smoothing != 0.0 and log_end > P_CAP:
        return "label smoothing with log_end above 1 - 1e-5 (the non-target bonus is floored there)"
    if torch.compiler.is_compiling():
        return "torch.compile (the fused path is its custom op)"
    return None


def encouraging_loss(x: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                     ignore_index: int, reduction: str, label_smoothing: float, log_end: float, bonus_scale: float,
                     bonus_floor: float) -> Tensor:
    """The loss of ``(N, C)`` logits by the kernel (the caller has checked :func:`unsupported` and
    :func:`available`); the target range is checked in C++ with the eager path's message."""
    return torch.ops.encouraging_cpu.encouraging_loss(x, target, class_weight, bonus_weight, ignore_index,
                                                      _REDUCTIONS[reduction], label_smoothing, log_end,
                                                      bonus_scale, bonus_floor)


def loss_and_grad(logits: Tensor, target: Tensor, class_weight: Tensor | None, bonus_weight: Tensor | None,
                  token_grad: Tensor | None, ignore_index: int, label_smoothing: float, log_end: float,
                  bonus_scale: float, bonus_floor: float) -> tuple[Tensor, Tensor | None]:
    """:func:`encouraging.losses.fused.loss_and_grad` by the kernel, without autograd: per-row losses (float32,
    float64 for float64 logits) and, when ``token_grad`` ``(N,)`` is given, the gradient of ``sum_i token_grad_i
    L_i`` in the logits' dtype (the caller has checked :func:`unsupported` and :func:`available`)."""
    loss, grad = torch.ops.encouraging_cpu.loss_and_grad(logits, target, class_weight, bonus_weight, ignore_index,
                                                         label_smoothing, log_end, bonus_scale, bonus_floor,
                                                         token_grad, token_grad is not None)
    return loss, grad if token_grad is not None else None
