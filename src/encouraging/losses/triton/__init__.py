"""Triton kernels for the encouraging loss (optional: ``pip install encouraging[triton]``).

Importing :mod:`encouraging` never imports triton; this package does, and :func:`available` says whether its
kernels can run on a device (CUDA, or any device under Triton's interpreter, ``TRITON_INTERPRET=1`` set before
triton is first imported).
"""

from __future__ import annotations

import os

import torch

try:
    import triton  # noqa: F401
except ImportError:  # pragma: no cover - exercised where triton is absent
    HAS_TRITON = False
else:
    HAS_TRITON = True


def interpreting() -> bool:
    """Triton runs kernels in its (numpy) interpreter, on CPU tensors too."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: torch.device | str) -> bool:
    """Whether the kernels can run on ``device``: triton installed and a CUDA device or the interpreter."""
    return HAS_TRITON and (torch.device(device).type == "cuda" or interpreting())


if HAS_TRITON:
    from .el import el_loss_and_grad
else:  # pragma: no cover
    def el_loss_and_grad(*args, **kwargs):
        raise ImportError("encouraging.losses.triton needs triton: pip install 'encouraging[triton]'")

__all__ = ["HAS_TRITON", "available", "el_loss_and_grad", "interpreting"]
