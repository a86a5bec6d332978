"""Batched augmentation: shapes and dtypes kept, reproducible per generator, equal to per-image references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from encouraging.data import augment_batch, normalize, random_crop, random_flip


def _batch(n: int = 16, c: int = 3, h: int = 8, w: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_keeps_shape_dtype_and_is_reproducible(mode):
    x = _batch()
    a = random_crop(x, 3, _gen(1), padding_mode=mode)
    b = random_crop(x, 3, _gen(1), padding_mode=mode)
    c = random_crop(x, 3, _gen(2), padding_mode=mode)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_matches_pad_then_slice_per_image(mode):
    x, p = _batch(n=32, h=7, w=9), 4
    out = random_crop(x, p, _gen(3), padding_mode=mode)
    offsets = torch.randint(0, 2 * p + 1, (2, x.shape[0]), generator=_gen(3))  # the draw random_crop makes
    padded = F.pad(x.float(), (p, p, p, p), mode="reflect" if mode == "reflect" else "constant")
    for i in range(x.shape[0]):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        assert torch.equal(out[i].float(), padded[i, :, dy : dy + 7, dx : dx + 9]), f"sample {i}"
    assert len({tuple(o) for o in offsets.T.tolist()}) > 10, "offsets must vary per sample"


def test_crop_padding_zero_is_identity_and_float_input_works():
    x = _batch()
    assert torch.equal(random_crop(x, 0, _gen()), x)
    xf = torch.rand(4, 1, 6, 6)
    assert random_crop(xf, 2, _gen()).dtype == torch.float32


def test_flip_reproducible_and_an_involution():
    x = _batch(n=64)
    once = random_flip(x, _gen(5))
    assert once.shape == x.shape and once.dtype == x.dtype
    assert torch.equal(once, random_flip(x, _gen(5)))
    flipped = torch.rand(64, generator=_gen(5)) < 0.5
    assert 10 < int(flipped.sum()) < 54
    assert torch.equal(once[flipped], x[flipped].flip(-1)) and torch.equal(once[~flipped], x[~flipped])
    assert torch.equal(random_flip(once, _gen(5)), x), "the same flips twice give back the batch"
    assert torch.equal(random_flip(x, _gen(), p=1.0), x.flip(-1))
    assert torch.equal(random_flip(x, _gen(), p=0.0), x)


def test_normalize_matches_the_formula():
    x = _batch()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    expected = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert normalize(x, mean, std, dtype=torch.bfloat16).dtype == torch.bfloat16
    torch.testing.assert_close(normalize(x[:, :1], (0.5,), (0.25,)), (x[:, :1].float() / 255 - 0.5) / 0.25)
    feats = torch.randn(5, 4)
    torch.testing.assert_close(normalize(feats, [1.0] * 4, [2.0] * 4), (feats - 1) / 2)


def test_augment_batch_composes_flip_then_crop():
    x = _batch()
    g1, g2 = _gen(9), _gen(9)
    assert torch.equal(augment_batch(x, g1, crop_padding=2), random_crop(random_flip(x, g2), 2, g2))


def test_bad_arguments():
    x = _batch(h=4, w=4)
    with pytest.raises(ValueError, match="padding_mode"):
        random_crop(x, 1, padding_mode="edge")
    with pytest.raises(ValueError, match="padding must be < min"):
        random_crop(x, 4)
    with pytest.raises(ValueError, match="padding must be an int"):
        random_crop(x, -1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_flip(x[0])
    with pytest.raises(ValueError, match="p must be"):
        random_flip(x, p=1.5)
    with pytest.raises(ValueError, match="1 or 3 values"):
        normalize(x, (0.5, 0.5), (0.5, 0.5))
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, (0.5,), (0.0,))
