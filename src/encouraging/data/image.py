"""Image classification datasets: MNIST, Fashion-MNIST, CIFAR-10/100 as in-memory tensors; ImageFolder trees.

``load_image_dataset(name_or_path, root=None, download=False, test_set="default")`` looks in every data root
(:func:`encouraging.data.roots.data_roots`) in order for

(a) the array format of the project's offline data (``<root>/mnist/x_train.npy.xz``, ``y_train.npy``, ``x_test``,
    ``y_test``; ``.npy`` or ``.npy.xz``);
(b) torchvision's own layout (``<root>/MNIST/raw``, ``<root>/FashionMNIST/raw``, ``<root>/cifar-10-batches-py``,
    ``<root>/cifar-100-python``), read through ``torchvision.datasets`` with ``download=False``;
(c) only with ``download=True``: a torchvision download into the explicit root if writable, else the cache root.

Nothing found raises ``FileNotFoundError`` listing every path looked at and how to get the data.

**Test sets.** Every test number must say which test set it is (``ImageData.test_note``). The offline CIFAR-10 has
the exact train set but only the first 1000 exact test images (``cifar10/x_test_first1000``); the full test set
exists only JPEG re-encoded (``cifar10_test_jpeg/``, PSNR 30 dB, biased accuracy). ``test_set`` picks:

* ``"default"``: the exact full test set if any root has it, else the JPEG set, else the exact first 1000;
* ``"exact"``: the exact full test set only;
* ``"exact1000"``: the first 1000 official test images, exact (``x_test_first1000`` or a slice of the full set);
* ``"jpeg"``: the JPEG re-encoded full test set.

Tensors: images are ``uint8`` NCHW (normalise per batch with :func:`encouraging.data.augment.normalize`), feature
arrays ``float32`` ``(N, D)``, labels ``int64``. ``name_or_path`` may also be a directory in the array format
(num_classes and mean/std are then inferred from the data) or an ImageFolder tree (``train/<class>/*`` and
``val/<class>/*``), which gives a :class:`FolderData` of two torchvision ``ImageFolder`` datasets instead, or a
folder of list files (``relative/path label`` per line: ImageNet-LT, iNaturalist 2018; :mod:`.lists`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .arrays import find_array, load_array
from .lists import ListFileDataset, find_list_files
from .registry import DatasetInfo, get_dataset_info, get_dataset_loader, is_registered, list_datasets, register_dataset
from .roots import DATA_ENV, data_roots, download_roots, first_writable_root

#: Accepted values of ``test_set``.
TEST_SETS = ("default", "exact", "exact1000", "jpeg")

#: ImageNet statistics, the usual choice for ImageFolder trees of natural images.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------ result types


@dataclass
class ImageData:
    """A dataset held in memory: ``x_* (N, C, H, W) uint8`` (or ``(N, D)`` float features), ``y_* (N,) int64``.

    Attributes:
        info: the dataset's metadata (shapes, classes, mean/std for normalisation).
        test_note: what the test split is; print it next to every test number.
        source: where the data was read from.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    info: DatasetInfo
    test_note: str
    source: str
    extras: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def to(self, device: torch.device | str) -> ImageData:
        """A copy with the four tensors on ``device`` (uint8 stays uint8: 1 byte a pixel on the GPU)."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"ImageData({self.info.name}: train {tuple(self.x_train.shape)} {self.x_train.dtype}, "
            f"test {tuple(self.x_test.shape)}; {self.test_note}; from {self.source})"
        )


@dataclass
class FolderData:
    """An ImageFolder tree: two ``torchvision.datasets.ImageFolder`` datasets sharing one class-to-index map.

    ``train`` applies RandomResizedCrop + horizontal flip + normalisation, ``test`` Resize(size / 0.875) +
    CenterCrop; replace ``.transform`` on either to change that. Read them with a ``DataLoader``.
    """

    train: Any
    test: Any
    info: DatasetInfo
    test_note: str
    source: str


# ------------------------------------------------------------------------------------------------ conversions


def _images_to_tensor(x: np.ndarray, where: str) -> Tensor:
    """uint8 HW / HWC / CHW images to NCHW uint8; float (N, D) features to float32; float images to float32 NCHW."""
    if x.ndim == 2:
        if x.dtype == np.uint8:
            raise ValueError(f"{where}: a 2-D uint8 array is ambiguous (one image or N flat ones); got {x.shape}")
        return torch.from_numpy(np.asarray(x, dtype=np.float32))
    if x.ndim not in (3, 4):
        raise ValueError(f"{where}: expected images (N, H, W) or (N, H, W, C), or features (N, D); got {x.shape}")
    if x.dtype == np.uint8:
        t = torch.from_numpy(np.asarray(x))
    elif np.issubdtype(x.dtype, np.floating):
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
    else:
        raise ValueError(f"{where}: images must be uint8 (0-255) or float, got dtype {x.dtype}")
    if t.ndim == 3:
        return t.unsqueeze(1)
    if t.shape[-1] in (1, 3, 4):  # HWC, the layout of the offline data and of PIL/numpy
        return t.permute(0, 3, 1, 2).contiguous()
    if t.shape[1] in (1, 3, 4):  # already NCHW
        return t.contiguous()
    raise ValueError(f"{where}: cannot tell the channel axis of shape {tuple(x.shape)} (expected 1, 3 or 4 channels)")


def _labels_to_tensor(y: np.ndarray | Any, where: str) -> Tensor:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where}: labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    t = torch.from_numpy(y.astype(np.int64))
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{where}: labels must be >= 0, found {int(t.min())}")
    return t


def channel_stats(x: Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (per-feature for 2-D input) mean and population std; uint8 images in the [0, 1] scale.

    Sums in float64 over chunks of ``chunk`` examples, so a uint8 dataset is never converted whole.
    """
    if x.ndim == 2:
        xd = x.double()
        return tuple(xd.mean(0).tolist()), tuple(xd.std(0, correction=0).tolist())
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].double() / scale
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (total_sq / n - mean.square()).clamp(min=0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _check_against_info(info: DatasetInfo, x: Tensor, y: Tensor, where: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
    if tuple(x.shape[1:]) != info.input_shape:
        raise ValueError(f"{where}: {info.title} images must have shape {info.input_shape}, got {tuple(x.shape[1:])}")
    if y.numel() and int(y.max()) >= info.num_classes:
        raise ValueError(f"{where}: label {int(y.max())} out of range for {info.num_classes} classes")


# ------------------------------------------------------------------------------------------------ finding data

# Files that make up torchvision's layout, relative to the root (the dataset classes check the same ones).
_MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "MNIST": tuple(f"MNIST/raw/{f}" for f in _MNIST_RAW),
    "FashionMNIST": tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_RAW),
    "CIFAR10": tuple(f"cifar-10-batches-py/{f}" for f in ("data_batch_1", "data_batch_5", "test_batch")),
    "CIFAR100": ("cifar-100-python/train", "cifar-100-python/test"),
}


@dataclass
class _Source:
    """One place a dataset was found: the array format in ``root``, or torchvision's layout in ``root``."""

    kind: str  # "arrays" | "torchvision"
    root: Path
    train: tuple[Path, Path] | None = None  # arrays: (x, y)
    tests: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # arrays: test_set -> (x, y)

    def has(self, test_set: str) -> bool:
        if self.kind == "torchvision":
            return test_set in ("exact", "exact1000")
        return test_set in self.tests or (test_set == "exact1000" and "exact" in self.tests)


def _array_pair(folder: Path, x_stem: str, y_stem: str) -> tuple[Path, Path] | None:
    x, y = find_array(folder / x_stem), find_array(folder / y_stem)
    return (x, y) if x is not None and y is not None else None


def _find_sources(info: DatasetInfo, roots: list[Path]) -> tuple[list[_Source], list[str]]:
    """Every root's copy of the dataset, in root order, and the list of paths looked at (for the error)."""
    sources: list[_Source] = []
    looked: list[str] = []
    for root in roots:
        if info.array_dir:
            folder = root / info.array_dir
            jpeg_folder = root / f"{info.array_dir}_test_jpeg"
            looked.append(f"{folder}/{{x,y}}_{{train,test}}.npy(.xz)  [array format]")
            train = _array_pair(folder, "x_train", "y_train")
            if train is not None:
                tests = {}
                for key, sub, xs, ys in (
                    ("exact", folder, "x_test", "y_test"),
                    ("exact1000", folder, "x_test_first1000", "y_test_first1000"),
                    ("jpeg", jpeg_folder, "x_test", "y_test"),
                ):
                    pair = _array_pair(sub, xs, ys)
                    if pair is not None:
                        tests[key] = pair
                sources.append(_Source("arrays", root, train=train, tests=tests))
        if info.torchvision in _TORCHVISION_FILES:
            files = _TORCHVISION_FILES[info.torchvision]
            looked.append(f"{root / Path(files[0]).parent}  [torchvision layout]")
            if all((root / f).is_file() for f in files):
                sources.append(_Source("torchvision", root))
    return sources, looked


def _pick(sources: list[_Source], test_set: str) -> tuple[_Source, str] | None:
    """The source to use and the concrete test set (``default`` resolves to exact, then jpeg, then exact1000)."""
    order = ("exact", "jpeg", "exact1000") if test_set == "default" else (test_set,)
    for wanted in order:
        for source in sources:
            if source.has(wanted):
                return source, wanted
    return None


def _not_found(info: DatasetInfo, looked: list[str], targets: list[Path], test_set: str, found: list[_Source]) -> str:
    lines = []
    if found:
        have = sorted({k for s in found for k in (("exact",) if s.kind == "torchvision" else s.tests)})
        lines.append(
            f"{info.title}: test_set={test_set!r} is not available; found {info.title} at "
            + ", ".join(str(s.root) for s in found)
            + f" with test sets {have}. Looked at:"
        )
    else:
        lines.append(f"{info.title} not found. Looked at (in this order):")
    lines += [f"  {p}" for p in looked]
    try:
        target = str(first_writable_root(targets))
    except PermissionError:
        target = "the first writable data root"
    how = [
        "To get it:",
        f"  * let torchvision fetch it into {target}: run without --offline (configs: data.download=true), or",
        f"  * pass --data-root /path (or set {DATA_ENV}=/path, several separated by {os.pathsep!r}) for a folder "
        f"holding {info.array_dir or info.name}/x_train.npy(.xz), y_train, x_test and y_test (uint8 images "
        "(N, H, W[, C]) and integer labels), or torchvision's own layout of the dataset.",
    ]
    if not info.torchvision:
        how[1] = "  * (no torchvision download exists for this dataset)"
    return "\n".join(lines + how)


def _download(info: DatasetInfo, targets: list[Path]) -> Path:
    """Download both splits through torchvision into the first writable of ``targets``; returns that root."""
    if not info.torchvision:
        raise ValueError(f"{info.title} has no torchvision downloader; get the files by hand")
    import torchvision.datasets as tvd

    root = first_writable_root(targets)
    cls = getattr(tvd, info.torchvision)
    print(f"{info.title} is not on this machine: downloading it with torchvision ({cls.__name__}'s mirrors) into "
          f"{root}", file=sys.stderr, flush=True)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # network, checksum, disk: name the dataset and the target
        raise _DownloadFailed(f"downloading {info.title} through torchvision into {root} failed: "
                              f"{' '.join(str(err).split())}") from err
    return root


class _DownloadFailed(OSError):
    """A torchvision download that did not complete (no network, a bad checksum, a full disk)."""


# ------------------------------------------------------------------------------------------------ loading


def _load_pair(pair: tuple[Path, Path]) -> tuple[Tensor, Tensor]:
    x_path, y_path = pair
    x = _images_to_tensor(load_array(x_path), str(x_path))
    y = _labels_to_tensor(load_array(y_path), str(y_path))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x_path}: {x.shape[0]} examples but {y_path} has {y.shape[0]} labels")
    return x, y


def _load_torchvision_split(info: DatasetInfo, root: Path, train: bool) -> tuple[Tensor, Tensor]:
    try:
        import torchvision.datasets as tvd
    except ImportError as err:  # pragma: no cover - torchvision is in the experiments extra
        raise ImportError(f"reading {info.title} from torchvision's layout needs torchvision: {err}") from err
    ds = getattr(tvd, info.torchvision)(str(root), train=train, download=False)
    data = ds.data.numpy() if isinstance(ds.data, Tensor) else np.asarray(ds.data)
    targets = ds.targets.numpy() if isinstance(ds.targets, Tensor) else np.asarray(ds.targets)
    where = f"{root} ({info.torchvision}, {'train' if train else 'test'})"
    return _images_to_tensor(data, where), _labels_to_tensor(targets, where)


def _test_note(info: DatasetInfo, which: str, n: int) -> str:
    if which == "exact":
        return f"{info.title} test ({n} images, exact)"
    if which == "jpeg":
        return f"{info.title} test (JPEG q75, {n} images; not the official test pixels)"
    total = f"{info.test_size}-image " if info.test_size else ""
    return f"{info.title} test, first {n} official images (exact; not the full {total}test set)"


def load_registered(
    info: DatasetInfo,
    roots: list[Path],
    *,
    download: bool = False,
    test_set: str = "default",
    download_to: list[Path] | None = None,
    **_: Any,
) -> ImageData:
    """The loader of the registered in-memory datasets; see the module docstring for the search order.

    ``download_to`` lists where a download may go (first writable wins); by default the cache root.
    """
    targets = download_to if download_to is not None else download_roots(None)
    sources, looked = _find_sources(info, roots)
    chosen = _pick(sources, test_set)
    if chosen is None and download and test_set != "jpeg" and info.torchvision:
        try:
            root = _download(info, targets)
        except _DownloadFailed as err:
            raise FileNotFoundError(f"{err}\n{_not_found(info, looked, targets, test_set, sources)}") from err
        if root not in roots:
            roots = [*roots, root]
        sources, looked = _find_sources(info, roots)
        chosen = _pick(sources, test_set)
    if chosen is None:
        raise FileNotFoundError(_not_found(info, looked, targets, test_set, sources))
    source, which = chosen

    if source.kind == "torchvision":
        x_train, y_train = _load_torchvision_split(info, source.root, True)
        x_test, y_test = _load_torchvision_split(info, source.root, False)
        if which == "exact1000":
            x_test, y_test = x_test[:1000].clone(), y_test[:1000].clone()
        where = f"torchvision {info.torchvision} layout under {source.root}"
    else:
        x_train, y_train = _load_pair(source.train)
        if which == "exact1000" and "exact1000" not in source.tests:
            x_test, y_test = _load_pair(source.tests["exact"])
            x_test, y_test = x_test[:1000].clone(), y_test[:1000].clone()
            test_dir = source.tests["exact"][0].parent
        else:
            x_test, y_test = _load_pair(source.tests[which])
            test_dir = source.tests[which][0].parent
        train_dir = source.train[0].parent
        where = f"arrays in {train_dir}" + ("" if test_dir == train_dir else f" (test: {test_dir})")
    _check_against_info(info, x_train, y_train, f"{where}, train")
    _check_against_info(info, x_test, y_test, f"{where}, test")
    return ImageData(x_train, y_train, x_test, y_test, info, _test_note(info, which, len(y_test)), where)


def _check_labels(folder: Path, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor) -> int:
    """The class count of an array folder, after refusing labels that cannot be class indices."""
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise ValueError(f"{folder}: x_{split} has {len(x)} examples but y_{split} has {len(y)} labels")
        if len(y) and int(y.min()) < 0:
            raise ValueError(f"{folder}: y_{split} has the negative label {int(y.min())}; labels are 0 .. C-1")
    if not len(y_train):
        raise ValueError(f"{folder}: the training split is empty")
    present = torch.unique(y_train)
    num_classes = int(present.max()) + 1
    if len(present) != num_classes:  # a gap: a stray label (1000000) would otherwise make a million classes
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(f"{folder}: y_train has labels up to {num_classes - 1} but no examples of {len(missing)} "
                         f"class(es) below it ({shown}); labels must be 0 .. C-1 with every class in training")
    unseen = sorted(set(torch.unique(y_test).tolist()) - set(present.tolist()))
    if unseen:
        raise ValueError(f"{folder}: y_test has labels the training split never has: {unseen[:5]}")
    return num_classes


def load_array_folder(path: str | os.PathLike[str], name: str | None = None) -> ImageData:
    """A directory holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` (``.npy`` or ``.npy.xz``).

    Images (uint8 ``(N, H, W)`` or ``(N, H, W, C)``) become NCHW uint8; float features ``(N, D)`` stay float32.
    ``num_classes`` is ``max(label) + 1`` over the training split, which must hold every class ``0 .. C-1``; test
    labels must be among them. Mean/std come from the train split.
    """
    folder = Path(path).expanduser()
    missing = [
        f"{folder / s}.npy(.xz)" for s in ("x_train", "y_train", "x_test", "y_test") if not find_array(folder / s)
    ]
    if missing:
        raise FileNotFoundError(f"{folder} is not in the array format; missing: {', '.join(missing)}")
    x_train, y_train = _load_pair((find_array(folder / "x_train"), find_array(folder / "y_train")))  # type: ignore[arg-type]
    x_test, y_test = _load_pair((find_array(folder / "x_test"), find_array(folder / "y_test")))  # type: ignore[arg-type]
    if x_train.shape[1:] != x_test.shape[1:] or x_train.dtype != x_test.dtype:
        raise ValueError(
            f"{folder}: train and test differ: {tuple(x_train.shape[1:])} {x_train.dtype} vs "
            f"{tuple(x_test.shape[1:])} {x_test.dtype}"
        )
    num_classes = _check_labels(folder, x_train, y_train, x_test, y_test)
    mean, std = channel_stats(x_train)
    label = name or folder.name
    if x_train.ndim == 2:
        info = DatasetInfo(
            label, num_classes, int(x_train.shape[1]), None, mean, std,
            f"float features from {folder}", kind="features",
            train_size=len(y_train), test_size=len(y_test),
        )  # fmt: skip
    else:
        h, w = int(x_train.shape[2]), int(x_train.shape[3])
        info = DatasetInfo(
            label, num_classes, int(x_train.shape[1]), h if h == w else (h, w), mean, std,
            f"images from {folder}", train_size=len(y_train), test_size=len(y_test),
        )  # fmt: skip
    kind = "examples" if x_train.ndim == 2 else "images"
    note = f"{label} test ({len(y_test)} {kind}, from {folder})"
    return ImageData(x_train, y_train, x_test, y_test, info, note, f"arrays in {folder}")


# ------------------------------------------------------------------------------------------------ ImageFolder

_VAL_DIRS = ("val", "validation", "test")


def _folder_split_dirs(path: Path) -> tuple[Path, Path] | None:
    train = path / "train"
    if not train.is_dir():
        return None
    for name in _VAL_DIRS:
        if (path / name).is_dir():
            return train, path / name
    return None


def _folder_transforms(info: DatasetInfo | None, image_size: int | None) -> tuple[int, Any, Any]:
    """``(size, train transform, test transform)`` of the paper's 224-px recipe: train RandomResizedCrop(size) +
    flip, test Resize(size / 0.875) + CenterCrop(size), both normalised with ``info.mean/std`` (ImageNet's)."""
    from torchvision import transforms as T

    size = int(image_size or (info.image_size if info and isinstance(info.image_size, int) else 224))
    mean, std = (info.mean, info.std) if info else (IMAGENET_MEAN, IMAGENET_STD)
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    test_tf = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    return size, train_tf, test_tf


def _folder_info(info: DatasetInfo | None, folder: Path, description: str, size: int, classes: Any,
                 train_size: int, test_size: int) -> DatasetInfo:
    """``info`` (a registered folder dataset's, or a new entry named after ``folder``) with what loading found."""
    base = info or DatasetInfo(folder.name, 0, 3, size, IMAGENET_MEAN, IMAGENET_STD, description, kind="folder")
    return replace(base, num_classes=len(classes), classes=tuple(classes), image_size=size, train_size=train_size,
                   test_size=test_size)


def load_list_folder(
    path: str | os.PathLike[str], *, image_size: int | None = None, info: DatasetInfo | None = None
) -> FolderData:
    """A folder of list files (:mod:`encouraging.data.lists`: ``relative/path label`` per line, the ImageNet-LT /
    iNaturalist 2018 layout) as a train / test pair with the transforms of :func:`load_image_folder`.

    Labels are ``0 .. C-1`` with ``C`` = the largest training label + 1; every class needs training images and
    every test label must be one of them.
    """
    folder = Path(path).expanduser()
    found = find_list_files(folder)
    if found is None:
        raise FileNotFoundError(f"{folder} has no list files (*train*.txt and *test*.txt or *val*.txt)")
    train_list, test_list = found
    size, train_tf, test_tf = _folder_transforms(info, image_size)
    train, test = ListFileDataset(train_list, train_tf), ListFileDataset(test_list, test_tf)
    num_classes = max(train.targets) + 1
    counts = np.bincount(train.targets, minlength=num_classes)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0)[:10].tolist()
        raise ValueError(f"{train_list}: classes {empty} have no training images (labels must be 0 .. C-1)")
    if max(test.targets) >= num_classes:
        raise ValueError(f"{test_list}: label {max(test.targets)} is not a training class (0 .. {num_classes - 1})")
    named = info is not None and info.classes is not None and len(info.classes) == num_classes
    classes = info.classes if named else tuple(str(c) for c in range(num_classes))
    new_info = _folder_info(info, folder, f"list files in {folder}", size, classes, len(train), len(test))
    note = f"{new_info.title} {test_list.name} ({len(test)} images, {folder})"
    return FolderData(train, test, new_info, note, f"list files {train_list.name} / {test_list.name} in {folder}")


def load_image_folder(
    path: str | os.PathLike[str], *, image_size: int | None = None, info: DatasetInfo | None = None
) -> FolderData:
    """``<path>/train/<class>/*`` and ``<path>/val/<class>/*`` (or ``validation``/``test``) as an ImageFolder pair.

    The test split uses the train split's class-to-index map, so a class missing from ``val`` does not shift the
    labels. Transforms follow the paper's 224-px recipe: train RandomResizedCrop(size) + flip, test
    Resize(size / 0.875) + CenterCrop(size), both normalised with ``info.mean/std`` (ImageNet's by default).
    """
    import torchvision.datasets as tvd

    folder = Path(path).expanduser()
    dirs = _folder_split_dirs(folder)
    if dirs is None:
        raise FileNotFoundError(f"{folder} is not an ImageFolder tree: need {folder}/train/ and {folder}/val/")
    train_dir, test_dir = dirs
    size, train_tf, test_tf = _folder_transforms(info, image_size)
    train = tvd.ImageFolder(str(train_dir), transform=train_tf)

    class _SameClasses(tvd.ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            return list(train.classes), dict(train.class_to_idx)

    test = _SameClasses(str(test_dir), transform=test_tf, allow_empty=True)
    extra = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name not in train.class_to_idx)
    if extra:
        raise ValueError(f"{test_dir} has classes that {train_dir} lacks: {extra[:10]}")
    new_info = _folder_info(info, folder, f"ImageFolder tree {folder}", size, train.classes, len(train), len(test))
    note = f"{new_info.title} {test_dir.name} ({len(test)} images, {test_dir})"
    return FolderData(train, test, new_info, note, f"ImageFolder {folder}")


def _load_folder_registered(
    info: DatasetInfo,
    roots: list[Path],
    *,
    download: bool = False,
    test_set: str = "default",
    image_size: int | None = None,
    **_: Any,
) -> FolderData:
    if test_set not in ("default", "exact"):
        raise ValueError(f"test_set={test_set!r} does not apply to {info.title}: its val/ folder is the test set")
    looked = []
    for root in roots:
        candidate = root / info.array_dir if info.array_dir else root
        looked.append(f"{candidate}/{{train,val}}/<class>/*  [ImageFolder tree]")
        looked.append(f"{candidate}/*train*.txt, *test*.txt or *val*.txt  [list files]")
        # lists first: ImageNet-LT's lists sit beside ImageNet's own train/ and val/ trees, which they subsample
        if find_list_files(candidate) is not None:
            return load_list_folder(candidate, image_size=image_size, info=info)
        if _folder_split_dirs(candidate) is not None:
            return load_image_folder(candidate, image_size=image_size, info=info)
    raise FileNotFoundError(
        f"{info.title} not found (no download exists). Looked at:\n"
        + "\n".join(f"  {p}" for p in looked)
        + f"\nPoint --data-root /path (or {DATA_ENV}=/path) at the folder holding train/ and val/ or the lists"
        + (f" inside {info.array_dir}/." if info.array_dir else ".")
    )


# ------------------------------------------------------------------------------------------------ entry point


def load_image_dataset(
    name_or_path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    test_set: str = "default",
    *,
    image_size: int | None = None,
) -> ImageData | FolderData:
    """Load a registered dataset by name, or a directory (array format or ImageFolder tree) by path.

    Args:
        name_or_path: a name from :func:`list_datasets` (``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``,
            ``"cifar100"``, ``"imagenet"``, ``"imagefolder"``) or a directory.
        root: an explicit data root, searched before ``$ENCOURAGING_DATA`` and the cache root.
        download: when no root has the data, fetch it through torchvision into ``root`` (if given and writable)
            or the cache root.
        test_set: ``"default"``, ``"exact"``, ``"exact1000"`` or ``"jpeg"`` (module docstring).
        image_size: output side of ImageFolder transforms (default 224); ignored by in-memory datasets.

    Returns:
        :class:`ImageData` (tensors) or, for ImageFolder trees, :class:`FolderData`.

    Raises:
        ValueError: unknown name (the message lists the registered ones) or unknown ``test_set``.
        FileNotFoundError: the data is nowhere; the message lists every path looked at.
    """
    if test_set not in TEST_SETS:
        raise ValueError(f"test_set must be one of {list(TEST_SETS)}, got {test_set!r}")
    text = os.fspath(name_or_path)
    if is_registered(text):
        info = get_dataset_info(text)
        loader = get_dataset_loader(info.name)
        return loader(
            info,
            data_roots(root),
            download=download,
            test_set=test_set,
            image_size=image_size,
            download_to=download_roots(root),
        )
    path = Path(text).expanduser()
    if path.is_dir():
        if test_set not in ("default", "exact"):
            raise ValueError(f"test_set={test_set!r} applies to registered datasets only, not to the folder {path}")
        if find_array(path / "x_train") is not None:
            return load_array_folder(path)
        if find_list_files(path) is not None:  # before the tree: the lists choose among its images
            return load_list_folder(path, image_size=image_size)
        if _folder_split_dirs(path) is not None:
            return load_image_folder(path, image_size=image_size)
        raise FileNotFoundError(
            f"{path} is neither in the array format (x_train.npy(.xz), y_train, x_test, y_test), nor an ImageFolder "
            "tree (train/<class>/*, val/<class>/*), nor a folder of list files (*train*.txt, *test*.txt)"
        )
    raise ValueError(f"dataset must be one of {list_datasets()} or an existing directory, got {text!r}")


# ------------------------------------------------------------------------------------------------ registrations

_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# CIFAR-100 fine labels in label order (the order of the dataset's meta file, which is alphabetical).
_CIFAR100_CLASSES = tuple(
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm".split()
)

register_dataset(
    DatasetInfo(
        "mnist", 10, 1, 28, (0.1307,), (0.3081,), "MNIST handwritten digits, 28x28 grey, 60000/10000",
        title="MNIST", classes=tuple(str(i) for i in range(10)), train_size=60000, test_size=10000,
        array_dir="mnist", torchvision="MNIST",
    ),
    load_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), "Fashion-MNIST (Zalando), 28x28 grey, 60000/10000",
        title="Fashion-MNIST", classes=_FASHION_CLASSES, train_size=60000, test_size=10000,
        array_dir="fashion_mnist", torchvision="FashionMNIST", aliases=("fashionmnist", "fmnist"),
    ),
    load_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "cifar10", 10, 3, 32, (0.49140, 0.48216, 0.44653), (0.24703, 0.24349, 0.26159),
        "CIFAR-10, 32x32 RGB, 50000/10000 (offline: exact train, test as JPEG or the exact first 1000)",
        title="CIFAR-10", classes=_CIFAR10_CLASSES, train_size=50000, test_size=10000,
        array_dir="cifar10", torchvision="CIFAR10", aliases=("cifar_10",),
    ),
    load_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        "CIFAR-100 (fine labels), 32x32 RGB, 50000/10000 (not available offline)",
        title="CIFAR-100", classes=_CIFAR100_CLASSES, train_size=50000, test_size=10000,
        array_dir="cifar100", torchvision="CIFAR100", aliases=("cifar_100",),
    ),
    load_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD,
        "ImageNet-1k as an ImageFolder tree <root>/imagenet/{train,val}/<class>/* (bring your own copy)",
        title="ImageNet", kind="folder", train_size=1281167, test_size=50000, array_dir="imagenet",
    ),
    _load_folder_registered,
)  # fmt: skip
_INAT_MEAN, _INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)  # classifier-balancing's iNaturalist 2018
register_dataset(
    DatasetInfo(
        "imagenet_lt", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD,
        "ImageNet-LT (Liu et al. 2019): <root>/imagenet_lt/ImageNet_LT_{train,test}.txt, the ImageNet images "
        "linked beside them (bring your own copy; use task longtail with data.profile=none)",
        title="ImageNet-LT", kind="folder", train_size=115846, test_size=50000, array_dir="imagenet_lt",
    ),
    _load_folder_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "inaturalist2018", 8142, 3, 224, _INAT_MEAN, _INAT_STD,
        "iNaturalist 2018, the paper's long-tailed benchmark: <root>/inaturalist2018/iNaturalist18_{train,val}.txt, "
        "the images linked beside them (bring your own copy; the validation list is the test set)",
        title="iNaturalist 2018", kind="folder", train_size=437513, test_size=24426, array_dir="inaturalist2018",
        aliases=("inat2018", "inaturalist18"),
    ),
    _load_folder_registered,
)  # fmt: skip
register_dataset(
    DatasetInfo(
        "imagefolder", 0, 3, 224, IMAGENET_MEAN, IMAGENET_STD,
        "any ImageFolder tree <root>/{train,val}/<class>/*; classes are counted at load time",
        title="ImageFolder", kind="folder",
    ),
    _load_folder_registered,
)  # fmt: skip
