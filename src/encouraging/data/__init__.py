"""Datasets: a registry of image datasets over the offline arrays and torchvision, and batched augmentation.

Depends on torch and numpy (torchvision only for its own layout, downloads and ImageFolder trees); nothing of
``encouraging`` beyond this package.

>>> from encouraging.data import load_image_dataset            # doctest: +SKIP
>>> data = load_image_dataset("cifar10")                       # doctest: +SKIP
>>> data.x_train.shape, data.test_note                         # doctest: +SKIP
(torch.Size([50000, 3, 32, 32]), 'CIFAR-10 test (JPEG q75, 10000 images; not the official test pixels)')
"""

from . import svhn as _svhn  # noqa: F401  (registers SVHN)
from .arrays import array_cache_dir, cached_path, find_array, load_array
from .augment import augment_batch, normalize, random_crop, random_flip
from .image import (
    TEST_SETS,
    FolderData,
    ImageData,
    channel_stats,
    load_array_folder,
    load_image_dataset,
    load_image_folder,
)
from .registry import (
    DatasetInfo,
    get_dataset_info,
    get_dataset_loader,
    is_registered,
    list_datasets,
    register_dataset,
)
from .roots import DATA_ENV, cache_root, data_roots, default_data_root, first_writable_root

__all__ = [
    "DATA_ENV",
    "TEST_SETS",
    "DatasetInfo",
    "FolderData",
    "ImageData",
    "array_cache_dir",
    "augment_batch",
    "cache_root",
    "cached_path",
    "channel_stats",
    "data_roots",
    "default_data_root",
    "find_array",
    "first_writable_root",
    "get_dataset_info",
    "get_dataset_loader",
    "is_registered",
    "list_datasets",
    "load_array",
    "load_array_folder",
    "load_image_dataset",
    "load_image_folder",
    "normalize",
    "random_crop",
    "random_flip",
    "register_dataset",
]
