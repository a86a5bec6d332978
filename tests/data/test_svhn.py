"""SVHN's loader on stand-ins: torchvision's .mat files (label 10 is the digit 0) and the array format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encouraging.data import load_image_dataset


def _write_mat(path, n, rng):
    from scipy.io import savemat

    x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # SVHN's (H, W, C, N)
    y = np.array([[10], [1], [9], [10]][:n], dtype=np.uint8)
    savemat(str(path), {"X": x, "y": y})
    return x


def test_svhn_from_torchvisions_mat_files(tmp_path, isolated):
    rng = np.random.default_rng(0)
    folder = tmp_path / "svhn"
    folder.mkdir()
    x_train = _write_mat(folder / "train_32x32.mat", 4, rng)
    x_test = _write_mat(folder / "test_32x32.mat", 3, rng)
    data = load_image_dataset("svhn", root=tmp_path)
    assert data.x_train.shape == (4, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert torch.equal(data.y_train, torch.tensor([0, 1, 9, 0]))
    # pixel (h=5, w=7, channel 2) of test image 1 keeps its place
    assert int(data.x_test[1, 2, 5, 7]) == int(x_test[5, 7, 2, 1])
    assert int(data.x_train[3, 0, 31, 0]) == int(x_train[31, 0, 0, 3])
    assert data.test_note == "SVHN test (3 images, exact)"


def test_svhn_prefers_the_array_format_and_says_where_it_looked(tmp_path, isolated):
    with pytest.raises(FileNotFoundError, match="train,test}_32x32.mat"):
        load_image_dataset("svhn", root=tmp_path)
    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 5), ("test", 2)):
        np.save(folder / f"x_{split}.npy", rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8))
        np.save(folder / f"y_{split}.npy", np.arange(n, dtype=np.int64))
    data = load_image_dataset("svhn", root=tmp_path)
    assert data.x_train.shape == (5, 3, 32, 32) and "arrays" in data.source
