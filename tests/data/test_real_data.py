"""The project's offline datasets (shared/data), loaded through the registry. Skipped where they are absent.

These tests use the real user cache (``$XDG_CACHE_HOME/encouraging/arrays``), as the command line does: the first
run decompresses CIFAR-10 once (about 10-15 s on 2 cores), later runs read the cached ``.npy`` (under 1 s).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encouraging.data import load_image_dataset

from .conftest import real_data_root

ROOT = real_data_root()
pytestmark = pytest.mark.skipif(ROOT is None, reason="the offline data (shared/data) is not present")


def _counts(y: torch.Tensor, n: int) -> list[int]:
    return torch.bincount(y, minlength=n).tolist()


def test_mnist():
    data = load_image_dataset("mnist", root=ROOT)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert _counts(data.y_train, 10) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert _counts(data.y_test, 10) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert data.test_note == "MNIST test (10000 images, exact)"
    assert data.info.mean[0] == pytest.approx(float(data.x_train.double().mean()) / 255, abs=1e-4)


def test_fashion_mnist():
    data = load_image_dataset("fashion_mnist", root=ROOT)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_test.dtype == torch.uint8 and data.y_test.dtype == torch.int64
    assert _counts(data.y_train, 10) == [6000] * 10 and _counts(data.y_test, 10) == [1000] * 10
    assert data.info.num_classes == 10 and data.test_note == "Fashion-MNIST test (10000 images, exact)"


@pytest.fixture(scope="module")
def cifar10():
    return load_image_dataset("cifar10", root=ROOT)


def test_cifar10_default_is_the_jpeg_test_set(cifar10):
    assert cifar10.x_train.shape == (50000, 3, 32, 32) and cifar10.x_train.dtype == torch.uint8
    assert _counts(cifar10.y_train, 10) == [5000] * 10
    assert cifar10.x_test.shape == (10000, 3, 32, 32) and _counts(cifar10.y_test, 10) == [1000] * 10
    assert cifar10.test_note == "CIFAR-10 test (JPEG q75, 10000 images; not the official test pixels)"
    # README's per-channel statistics: the HWC -> CHW transpose kept the channels apart
    n = cifar10.x_train.shape[0] * 32 * 32
    mean = cifar10.x_train.sum(dim=(0, 2, 3), dtype=torch.int64).double() / n / 255
    assert mean.tolist() == pytest.approx([0.49140, 0.48216, 0.44653], abs=2e-5)
    assert cifar10.info.mean == pytest.approx((0.49140, 0.48216, 0.44653))


def test_cifar10_exact1000(cifar10):
    data = load_image_dataset("cifar10", root=ROOT, test_set="exact1000")
    assert data.x_test.shape == (1000, 3, 32, 32) and data.x_test.dtype == torch.uint8
    assert _counts(data.y_test, 10) == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert "exact" in data.test_note and "1000" in data.test_note and "JPEG" not in data.test_note
    # the JPEG copy of a test image is close to, but not equal to, the exact one (PSNR ~ 30 dB)
    official = torch.from_numpy(np.load(ROOT / "cifar10_test_jpeg" / "official_index_if_known.npy").astype(np.int64))
    rows = torch.nonzero(official >= 0).flatten()
    jpeg, exact = cifar10.x_test[rows].double(), data.x_test[official[rows]].double()
    mae = (jpeg - exact).abs().mean().item()
    assert 2.0 < mae < 12.0, f"mean abs error {mae:.2f}/255: the JPEG and exact images do not line up"
