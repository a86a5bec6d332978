"""Batched augmentation of in-memory image batches on their own device, as airbench does it.

The data stays ``uint8`` NCHW on the device (1 byte a pixel); each batch is flipped and cropped with per-sample
random choices in a few vectorised tensor ops (no Python loop over samples), then normalised to float. Every
random function takes a ``torch.Generator`` so an epoch's augmentation is reproducible; the generator may live
on another device than the batch (the random draws are made on the generator's device and then moved).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
>>> x = random_crop(random_flip(x, g), padding=4, generator=g)
>>> normalize(x, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)).dtype
torch.float32
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PADDING_MODES = ("reflect", "zeros")


def _check_images(batch: Tensor, name: str = "batch") -> None:
    if not isinstance(batch, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(batch.shape)}")


def _draw_device(batch: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else batch.device


def normalize(
    batch: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(x / 255 - mean) / std`` per channel, as ``dtype``.

    Args:
        batch: ``(N, C, H, W)`` images, ``uint8`` in 0-255 (divided by 255) or float in ``[0, 1]`` (not divided);
            or ``(N, D)`` float features (then ``mean``/``std`` are per feature).
        mean, std: one value per channel (or a single value for all), in the ``[0, 1]`` scale. Pass tensors
            already on the batch's device in a training loop: Python values are copied to the device each call
            (a host sync on CUDA) and only they are checked.
        dtype: floating dtype of the result (``torch.bfloat16`` / ``float16`` to feed AMP directly).

    Returns:
        A new tensor of ``batch``'s shape. Computed as one fused multiply-add: ``x * a + b`` with
        ``a = 1 / (255 std)``, ``b = -mean / std``.
    """
    if batch.ndim not in (2, 4):
        raise ValueError(f"batch must be (N, C, H, W) or (N, D), got shape {tuple(batch.shape)}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    c = batch.shape[1]
    mean_t = torch.as_tensor(mean, dtype=torch.float64).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float64).flatten()
    if mean_t.numel() not in (1, c) or std_t.numel() not in (1, c):
        raise ValueError(f"mean and std need 1 or {c} values, got {mean_t.numel()} and {std_t.numel()}")
    if std_t.device.type == "cpu" and bool((std_t <= 0).any()):  # device tensors: no check (it would sync)
        raise ValueError(f"std must be > 0, got {std_t.tolist()}")
    scale = 255.0 if batch.dtype == torch.uint8 else 1.0
    shape = (1, -1, 1, 1) if batch.ndim == 4 else (1, -1)
    # Work in float32 at least: bfloat16 cannot hold 1/(255 std) accurately enough for a fused multiply-add.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    a = (1.0 / (scale * std_t)).to(device=batch.device, dtype=work).view(shape)
    b = (-mean_t / std_t).to(device=batch.device, dtype=work).view(shape)
    return torch.addcmul(b, batch.to(work), a).to(dtype)


def random_flip(batch: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each image left-right with probability ``p``, independently per sample.

    Args:
        batch: ``(N, C, H, W)``, any dtype.
        generator: source of the per-sample coin flips (``torch.rand(N)``); ``None`` uses the global RNG.
        p: flip probability in ``[0, 1]``.

    Returns:
        A new tensor of the same shape and dtype.
    """
    _check_images(batch)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    n = batch.shape[0]
    flip = torch.rand(n, generator=generator, device=_draw_device(batch, generator)).to(batch.device) < p
    return torch.where(flip.view(n, 1, 1, 1), batch.flip(-1), batch)


def random_crop(
    batch: Tensor, padding: int, generator: torch.Generator | None = None, *, padding_mode: str = "reflect"
) -> Tensor:
    """Pad by ``padding`` on every side and cut back to ``H x W`` at a random offset per sample.

    Equivalent to torchvision's ``RandomCrop(H, padding, padding_mode=...)`` applied per image, but done as two
    ``gather`` calls over the whole batch: the output row ``i`` of sample ``n`` is input row
    ``i + dy[n] - padding``, reflected at the border (``"reflect"``, as ``numpy.pad(mode="reflect")``) or zero
    outside the image (``"zeros"``); columns likewise, with ``dy, dx`` uniform in ``[0, 2 padding]``.

    Args:
        batch: ``(N, C, H, W)``, any dtype (uint8 is the intended one).
        padding: pixels of padding per side, ``>= 0``; ``"reflect"`` needs ``padding < min(H, W)``.
        generator: source of the offsets (``torch.randint``, one ``(2, N)`` draw); ``None`` uses the global RNG.
        padding_mode: ``"reflect"`` or ``"zeros"``.

    Returns:
        A tensor of the same shape and dtype; ``batch`` itself when ``padding == 0`` (no random draw is made).
    """
    _check_images(batch)
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, got {padding_mode!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    if padding == 0:
        return batch
    n, c, h, w = batch.shape
    if padding_mode == "reflect" and padding >= min(h, w):
        raise ValueError(f"padding must be < min(H, W) = {min(h, w)} for reflect padding, got {padding}")
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=_draw_device(batch, generator)).to(
        batch.device
    )
    rows = torch.arange(h, device=batch.device) + offsets[0, :, None] - padding  # (N, H), in [-p, H - 1 + p]
    cols = torch.arange(w, device=batch.device) + offsets[1, :, None] - padding  # (N, W)
    if padding_mode == "reflect":
        rows = _reflect(rows, h)
        cols = _reflect(cols, w)
    else:
        inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
        rows = rows.clamp(0, h - 1)
        cols = cols.clamp(0, w - 1)
    out = batch.gather(2, rows[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if padding_mode == "zeros":
        out = out.masked_fill(~inside, 0)
    return out


def _reflect(index: Tensor, size: int) -> Tensor:
    """Reflect indices in ``[-(size - 1), 2 (size - 1)]`` into ``[0, size - 1]`` without repeating the edge."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def augment_batch(
    batch: Tensor,
    generator: torch.Generator | None = None,
    *,
    flip: bool = True,
    crop_padding: int = 0,
    padding_mode: str = "reflect",
) -> Tensor:
    """The usual CIFAR training augmentation: random flip, then random crop with ``crop_padding``."""
    if flip:
        batch = random_flip(batch, generator)
    return random_crop(batch, crop_padding, generator, padding_mode=padding_mode)
