"""SVHN (Street View House Numbers, cropped digits): 32x32 RGB, 10 classes, 73257 train / 26032 test images.

Found in a data root as the array format (``<root>/svhn/x_train.npy(.xz)``, ``y_train``, ``x_test``, ``y_test``)
or as torchvision's files ``<root>/svhn/{train,test}_32x32.mat`` (read with scipy, label 10 -> digit 0 as
torchvision does); ``download=True`` fetches the .mat files through ``torchvision.datasets.SVHN``. Not available
offline here: the loader exists for users who have the data (an OOD set for CIFAR-10 models).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .image import ImageData, load_registered
from .registry import DatasetInfo, register_dataset
from .roots import download_roots, first_writable_root

SPLITS = ("train", "test")


def _mat_files(roots: list[Path]) -> Path | None:
    for root in roots:
        folder = root / "svhn"
        if all((folder / f"{s}_32x32.mat").is_file() for s in SPLITS):
            return folder
    return None


def _read_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    mat = loadmat(str(path))
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1))))  # (H, W, C, N) -> NCHW
    y = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1))
    y[y == 10] = 0  # SVHN stores the digit 0 as label 10
    if x.dtype != torch.uint8 or x.shape[1:] != (3, 32, 32) or len(x) != len(y):
        raise ValueError(f"{path}: not SVHN's format (X {tuple(x.shape)} {x.dtype}, y {tuple(y.shape)})")
    return x, y


def load_svhn(info: DatasetInfo, roots: list[Path], *, download: bool = False, test_set: str = "default",
              download_to: list[Path] | None = None, **_: Any) -> ImageData:
    """The array format if a root has it, else torchvision's .mat files (downloaded when ``download``)."""
    try:
        return load_registered(info, roots, test_set=test_set, download_to=download_to)
    except FileNotFoundError as err:
        missing = err
    if test_set not in ("default", "exact"):
        raise ValueError(f"SVHN has one test set; test_set must be 'default' or 'exact', got {test_set!r}")
    folder = _mat_files(roots)
    if folder is None and download:
        import torchvision.datasets as tvd

        folder = first_writable_root(download_to or download_roots(None)) / "svhn"
        for split in SPLITS:
            tvd.SVHN(str(folder), split=split, download=True)
    if folder is None:
        raise FileNotFoundError(f"{missing}\n  or <root>/svhn/{{train,test}}_32x32.mat (torchvision's SVHN files)")
    (x_train, y_train), (x_test, y_test) = (_read_mat(folder / f"{s}_32x32.mat") for s in SPLITS)
    return ImageData(x_train, y_train, x_test, y_test, info, f"SVHN test ({len(y_test)} images, exact)",
                     f"torchvision SVHN files in {folder}")


register_dataset(
    DatasetInfo(
        "svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        "SVHN cropped digits, 32x32 RGB, 73257/26032 (not available offline; an OOD set for CIFAR-10)",
        title="SVHN", classes=tuple(str(i) for i in range(10)), train_size=73257, test_size=26032,
        array_dir="svhn",
    ),
    load_svhn,
)  # fmt: skip
