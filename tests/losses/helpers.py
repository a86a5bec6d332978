"""Shared test helpers: the dtype tolerance table, a verbose ``assert_close`` and input builders."""

from __future__ import annotations

import os

import torch
from hypothesis import strategies as st
from torch import Tensor

#: (rtol, atol) for a loss or gradient computed from ``dtype`` inputs, compared with float64 truth on the same
#: (rounded) inputs, for values of order 1 (tests at large logit scales multiply atol by the scale, since the
#: loss terms grow like |f|). Float32/float64 are set by the op's own rounding; the half types are computed in
#: float32 and rounded once on the way out, so their bound is about one unit in the last place of the output
#: (float16: 2^-11 ~ 4.9e-4 relative, bfloat16: 2^-8 ~ 3.9e-3), doubled for the gradient's extra rounding.
#: Tests whose error has a known amplification (a tangent slope 1 / (1 - LE), a float32 log(1 - p) near p = 1)
#: derive their bound in place and say so.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-12),
    torch.float32: (2e-5, 2e-6),
    torch.float16: (2e-3, 1e-4),
    torch.bfloat16: (1.6e-2, 1e-3),
}

#: Same-dtype parity with ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits``: the same math in the same
#: precision, so only summation order may differ.
PARITY_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-13),
    torch.float32: (2e-6, 1e-7),
}

#: Multiplies every hypothesis ``max_examples`` (``HYPOTHESIS_SCALE=10`` for a longer exploration).
EXAMPLES_SCALE = int(os.environ.get("HYPOTHESIS_SCALE", "1"))


def examples(n: int) -> int:
    return n * EXAMPLES_SCALE


def assert_close(actual: Tensor, expected: Tensor, dtype: torch.dtype | None = None, *, table=TOLERANCES,
                 rtol: float | None = None, atol: float | None = None, equal_nan: bool = False,
                 msg: str = "") -> None:
    """``torch.testing.assert_close`` in float64 with tolerances from ``table[dtype]`` (``dtype`` defaults to
    ``actual``'s). The failure report names the number of mismatches, the worst index and both values."""
    dtype = dtype or actual.dtype
    default_rtol, default_atol = table[dtype]
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64)

    def report(default: str) -> str:
        return f"{msg}\n{default}" if msg else default

    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, equal_nan=equal_nan, msg=report)


def num_classes_of(input: Tensor) -> int:
    return input.shape[0] if input.dim() == 1 else input.shape[1]


def index_target_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The class-index target shape for an input shape: ``()`` for ``(C)``, ``(N, d1, ...)`` otherwise."""
    return () if len(shape) == 1 else (shape[0],) + tuple(shape[2:])


def random_logits(shape, dtype=torch.float64, scale: float = 2.0, generator=None) -> Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=generator).mul_(scale).to(dtype)


def random_probs(shape, dtype=torch.float64, generator=None) -> Tensor:
    """Probability targets along the class dimension (dim 0 for ``(C)``, else 1), with some exact zeros."""
    dim = 0 if len(shape) == 1 else 1
    raw = torch.randn(shape, dtype=torch.float64, generator=generator).mul_(2.0).softmax(dim)
    raw = torch.where(raw < 0.05, torch.zeros_like(raw), raw)
    return (raw / raw.sum(dim, keepdim=True)).to(dtype)


def random_index_target(shape, num_classes: int, ignore_index: int | None = None, generator=None) -> Tensor:
    """Class indices of the target shape for input ``shape``; with ``ignore_index``, about a third ignored (and
    at least one element kept and one ignored when there are two or more)."""
    target = torch.randint(num_classes, index_target_shape(shape), generator=generator)
    if ignore_index is not None and target.numel() > 1:
        flat = target.view(-1)
        mask = torch.rand(flat.shape, generator=generator) < 0.33
        mask[0], mask[-1] = True, False
        flat[mask] = ignore_index
    return target


@st.composite
def input_shapes(draw, min_classes: int = 1) -> tuple[int, ...]:
    """An input shape of one of the three layouts: ``(N, C)``, ``(N, C, d1[, d2])`` or unbatched ``(C)``."""
    layout = draw(st.sampled_from(["2d", "kdim", "unbatched"]))
    num_classes = draw(st.integers(min_classes, 6))
    if layout == "2d":
        return (draw(st.integers(1, 6)), num_classes)
    if layout == "kdim":
        return (draw(st.integers(1, 3)), num_classes) + tuple(draw(st.lists(st.integers(1, 3), min_size=1,
                                                                            max_size=2)))
    return (num_classes,)
