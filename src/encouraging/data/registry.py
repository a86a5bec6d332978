"""A registry of datasets in the style of timm's: a frozen ``DatasetInfo`` per name, a loader per name.

``register_dataset(info, loader)`` adds an entry, ``list_datasets(filter)`` lists names (fnmatch patterns),
``get_dataset_info(name)`` returns the metadata and raises ``ValueError`` listing the valid names for an unknown
one. Names are case-insensitive and ``-`` equals ``_`` (``Fashion-MNIST`` finds ``fashion_mnist``); each entry may
also carry aliases.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: What a registered loader is called with: ``loader(info, roots, download=..., test_set=..., **options)``.
Loader = Callable[..., Any]

KINDS = ("image", "folder", "features")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset, without loading it.

    Attributes:
        name: registry name (``"cifar10"``).
        num_classes: number of classes; 0 when only loading can tell (a generic ImageFolder tree).
        channels: image channels (1 or 3). For feature data (``kind="features"``), the feature dimension.
        image_size: side of a square image, or ``(H, W)``; ``None`` for feature data.
        mean, std: per channel (per feature for feature data), in the ``[0, 1]`` pixel scale, for
            :func:`encouraging.data.augment.normalize`.
        description: one line for listings.
        title: display name used in notes and reports (``"CIFAR-10"``); defaults to ``name``.
        kind: ``"image"`` (in-memory uint8 NCHW tensors), ``"folder"`` (a torchvision ``ImageFolder`` pair read
            through a DataLoader) or ``"features"`` (float ``(N, D)`` tensors).
        classes: class names in label order, where known.
        train_size, test_size: number of examples of the official splits, where known.
        array_dir: folder name of the array format (``<root>/<array_dir>/x_train.npy.xz`` ...).
        torchvision: name of the ``torchvision.datasets`` class that reads and downloads it.
        aliases: other names that find this entry.
    """

    name: str
    num_classes: int
    channels: int
    image_size: int | tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    title: str = ""
    kind: str = "image"
    classes: tuple[str, ...] | None = None
    train_size: int | None = None
    test_size: int | None = None
    array_dir: str | None = None
    torchvision: str | None = None
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0: counted at load time), got {self.num_classes}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got {len(self.mean)} and {len(self.std)}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"classes has {len(self.classes)} names for num_classes={self.num_classes}")
        if not self.title:
            object.__setattr__(self, "title", self.name)

    @property
    def height_width(self) -> tuple[int, int] | None:
        """``(H, W)`` of the images, or ``None`` for feature data."""
        if self.image_size is None:
            return None
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return (int(self.image_size[0]), int(self.image_size[1]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(C, H, W)`` for images, ``(D,)`` for features."""
        hw = self.height_width
        return (self.channels,) if hw is None else (self.channels, *hw)


_INFOS: dict[str, DatasetInfo] = {}
_LOADERS: dict[str, Loader | None] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_dataset(info: DatasetInfo, loader: Loader | None = None, *, overwrite: bool = False) -> DatasetInfo:
    """Add a dataset (and optionally its loader) to the registry; a name or alias can be registered once.

    Args:
        info: the metadata; ``info.name`` and ``info.aliases`` become lookup keys.
        loader: called as ``loader(info, roots, download=..., test_set=..., **options)`` by
            :func:`encouraging.data.load_image_dataset`; ``None`` registers metadata only.
        overwrite: replace an existing entry of the same name instead of raising.
    """
    key = _key(info.name)
    if key != info.name:
        raise ValueError(f"dataset names must be lower case without '-', got {info.name!r} (use {key!r})")
    if key in _INFOS and not overwrite:
        raise ValueError(f"dataset {info.name!r} is already registered")
    for alias in info.aliases:
        owner = _ALIASES.get(_key(alias))
        if (owner is not None and owner != key) or (_key(alias) in _INFOS and _key(alias) != key):
            raise ValueError(f"alias {alias!r} of {info.name!r} is already taken")
    _INFOS[key] = info
    _LOADERS[key] = loader
    for alias in info.aliases:
        _ALIASES[_key(alias)] = key
    return info


def _resolve(name: str) -> str | None:
    key = _key(name)
    if key in _INFOS:
        return key
    return _ALIASES.get(key)


def is_registered(name: str) -> bool:
    """Whether ``name`` (or an alias of it) is a registered dataset."""
    return _resolve(name) is not None


def list_datasets(
    filter: str = "*", exclude_filters: Iterable[str] = (), *, with_description: bool = False
) -> list[str] | list[tuple[str, str]]:
    """Registered dataset names matching the fnmatch pattern ``filter`` and none of ``exclude_filters``, sorted.

    With ``with_description=True``, ``(name, description)`` pairs instead.
    """
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    names = sorted(n for n in _INFOS if fnmatch.fnmatch(n, filter) and not any(fnmatch.fnmatch(n, e) for e in excludes))
    if with_description:
        return [(n, _INFOS[n].description) for n in names]
    return names


def get_dataset_info(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` registered as ``name`` (or an alias); an unknown name raises ``ValueError`` listing all."""
    key = _resolve(name)
    if key is None:
        raise ValueError(f"dataset must be one of {list_datasets()}, got {name!r}")
    return _INFOS[key]


def get_dataset_loader(name: str) -> Loader:
    """The loader registered for ``name``; ``ValueError`` for an unknown name or a metadata-only entry."""
    info = get_dataset_info(name)
    loader = _LOADERS[info.name]
    if loader is None:
        raise ValueError(f"dataset {info.name!r} is registered without a loader")
    return loader
