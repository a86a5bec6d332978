"""load_image_dataset on small stand-ins: the array format, torchvision's layout, downloads, test-set choice,
errors, the registry and ImageFolder trees. The real offline data is tested in test_real_data.py."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from encouraging.data import (
    DatasetInfo,
    FolderData,
    ImageData,
    get_dataset_info,
    list_datasets,
    load_image_dataset,
    register_dataset,
)

RNG = np.random.default_rng(0)


def _images(n: int, *shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n: int, classes: int) -> np.ndarray:
    return (np.arange(n) % classes).astype(np.uint8)


def _save_split(folder: Path, x_name: str, x: np.ndarray, y_name: str, y: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{x_name}.npy", x)
    np.save(folder / f"{y_name}.npy", y)


def _array_dataset(folder: Path, x_train: np.ndarray, y_train, x_test: np.ndarray, y_test) -> Path:
    _save_split(folder, "x_train", x_train, "y_train", y_train)
    _save_split(folder, "x_test", x_test, "y_test", y_test)
    return folder


def _write_idx(raw: Path, n_train: int = 12, n_test: int = 6) -> None:
    """MNIST's idx files (what torchvision's MNIST reads), with random pixels."""
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">iiii", 2051, n, 28, 28) + _images(n, 28, 28).tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + _labels(n, 10).tobytes())


# ------------------------------------------------------------------------------------------ array folders


def test_array_folder_hw_uint8(tmp_path, isolated):
    x_train, y_train = _images(20, 9, 9), _labels(20, 4)
    folder = _array_dataset(tmp_path / "digits", x_train, y_train, _images(6, 9, 9), _labels(6, 3))
    data = load_image_dataset(folder)
    assert isinstance(data, ImageData)
    assert data.x_train.shape == (20, 1, 9, 9) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (6, 1, 9, 9)
    assert data.y_train.dtype == torch.int64 and data.y_train.tolist() == y_train.tolist()
    assert data.info.num_classes == 4 and data.info.channels == 1 and data.info.image_size == 9
    assert data.info.mean == pytest.approx((x_train.mean() / 255,)) and data.info.std == pytest.approx(
        (x_train.std() / 255,)
    )
    assert "digits test (6 images" in data.test_note and str(folder) in data.source


def test_array_folder_hwc_to_nchw_and_xz(tmp_path, isolated):
    import lzma

    x_train = _images(10, 6, 5, 3)
    folder = _array_dataset(tmp_path / "rgb", x_train, _labels(10, 10), _images(4, 6, 5, 3), _labels(4, 10))
    raw = (folder / "x_train.npy").read_bytes()  # the compressed form must read the same
    (folder / "x_train.npy").unlink()
    with lzma.open(folder / "x_train.npy.xz", "wb", preset=1) as f:
        f.write(raw)
    data = load_image_dataset(str(folder))
    assert data.x_train.shape == (10, 3, 6, 5) and data.x_train.is_contiguous()
    assert torch.equal(data.x_train, torch.from_numpy(x_train).permute(0, 3, 1, 2))
    assert data.info.image_size == (6, 5) and data.info.input_shape == (3, 6, 5)
    per_channel = (x_train.reshape(-1, 3) / 255.0).mean(0)
    assert data.info.mean == pytest.approx(tuple(per_channel))


def test_array_folder_float_features(tmp_path, isolated):
    x_train = RNG.normal(size=(30, 5))
    folder = _array_dataset(tmp_path / "feat", x_train, _labels(30, 3), RNG.normal(size=(7, 5)), _labels(7, 3))
    data = load_image_dataset(folder)
    assert data.x_train.dtype == torch.float32 and data.x_train.shape == (30, 5)
    assert data.info.kind == "features" and data.info.channels == 5 and data.info.image_size is None
    assert data.info.input_shape == (5,) and data.info.num_classes == 3
    assert data.info.mean == pytest.approx(tuple(x_train.mean(0)), rel=1e-6)
    assert data.info.std == pytest.approx(tuple(x_train.std(0)), rel=1e-6)


def test_array_folder_errors(tmp_path, isolated):
    folder = tmp_path / "half"
    _save_split(folder, "x_train", _images(4, 8, 8), "y_train", _labels(4, 2))
    with pytest.raises(FileNotFoundError, match="x_test"):
        load_image_dataset(folder)
    _save_split(folder, "x_test", _images(3, 8, 8), "y_test", _labels(2, 2))
    with pytest.raises(ValueError, match="3 examples but"):
        load_image_dataset(folder)
    with pytest.raises(ValueError, match="test_set"):
        load_image_dataset(folder, test_set="jpeg")


# ------------------------------------------------------------------------------------------ registered datasets


def test_registered_dataset_from_an_explicit_root(tmp_path, isolated):
    _array_dataset(
        tmp_path / "root" / "mnist", _images(12, 28, 28), _labels(12, 10), _images(5, 28, 28), _labels(5, 10)
    )
    data = load_image_dataset("MNIST", root=tmp_path / "root")
    assert data.x_train.shape == (12, 1, 28, 28) and data.info.name == "mnist"
    assert data.test_note == "MNIST test (5 images, exact)"
    assert str(tmp_path / "root" / "mnist") in data.source


def test_wrong_image_shape_for_a_registered_dataset(tmp_path, isolated):
    _array_dataset(tmp_path / "mnist", _images(3, 32, 32), _labels(3, 10), _images(2, 32, 32), _labels(2, 10))
    with pytest.raises(ValueError, match=r"\(1, 28, 28\)"):
        load_image_dataset("mnist", root=tmp_path)


def _fake_cifar(root: Path, *, first1000: int = 0, jpeg: int = 0, exact: int = 0) -> None:
    _save_split(root / "cifar10", "x_train", _images(8, 32, 32, 3), "y_train", _labels(8, 10))
    if first1000:
        _save_split(
            root / "cifar10",
            "x_test_first1000",
            _images(first1000, 32, 32, 3),
            "y_test_first1000",
            _labels(first1000, 10),
        )
    if jpeg:
        _save_split(root / "cifar10_test_jpeg", "x_test", _images(jpeg, 32, 32, 3), "y_test", _labels(jpeg, 10))
    if exact:
        _save_split(root / "cifar10", "x_test", _images(exact, 32, 32, 3), "y_test", _labels(exact, 10))


def test_cifar10_test_set_choice(tmp_path, isolated):
    _fake_cifar(tmp_path / "offline", first1000=5, jpeg=20)
    data = load_image_dataset("cifar10", root=tmp_path / "offline")
    assert len(data.y_test) == 20
    assert data.test_note == "CIFAR-10 test (JPEG q75, 20 images; not the official test pixels)"
    assert "cifar10_test_jpeg" in data.source
    exact = load_image_dataset("cifar10", root=tmp_path / "offline", test_set="exact1000")
    assert len(exact.y_test) == 5 and "first 5 official images (exact" in exact.test_note
    with pytest.raises(FileNotFoundError, match=r"test_set='exact' is not available.*\['exact1000', 'jpeg'\]"):
        load_image_dataset("cifar10", root=tmp_path / "offline", test_set="exact")


def test_exact_test_set_anywhere_beats_jpeg(tmp_path, isolated, monkeypatch):
    _fake_cifar(tmp_path / "offline", first1000=5, jpeg=20)
    _fake_cifar(tmp_path / "full", exact=30)
    monkeypatch.setenv("ENCOURAGING_DATA", f"{tmp_path / 'offline'}:{tmp_path / 'full'}")
    data = load_image_dataset("cifar10")
    assert len(data.y_test) == 30 and data.test_note == "CIFAR-10 test (30 images, exact)"
    explicit = load_image_dataset("cifar10", root=tmp_path / "offline")  # --data-root replaces the environment
    assert len(explicit.y_test) == 20 and "JPEG" in explicit.test_note
    sliced = load_image_dataset("cifar10", root=tmp_path / "full", test_set="exact1000")
    assert len(sliced.y_test) == 30  # fewer than 1000: the slice keeps all
    assert load_image_dataset("cifar10", root=tmp_path / "offline", test_set="jpeg").y_test.shape == (20,)


def test_not_found_lists_every_path_and_the_remedies(tmp_path, isolated, monkeypatch):
    env_a, env_b = tmp_path / "env-a", tmp_path / "env-b"
    monkeypatch.setenv("ENCOURAGING_DATA", f"{env_a}:{env_b}")
    with pytest.raises(FileNotFoundError) as err:
        load_image_dataset("fashion_mnist")
    message = str(err.value)
    roots = [env_a, env_b, isolated / "encouraging" / "data"]
    for root in roots:
        assert f"{root}/fashion_mnist/" in message
        assert f"{root}/FashionMNIST/raw" in message
    positions = [message.index(str(r) + "/fashion_mnist") for r in roots]
    assert positions == sorted(positions), "paths must be listed in search order"
    for remedy in ("--offline", "data.download=true", "ENCOURAGING_DATA=", "--data-root"):
        assert remedy in message
    with pytest.raises(FileNotFoundError) as err:  # --data-root replaces the environment's roots
        load_image_dataset("fashion_mnist", root=tmp_path / "explicit")
    assert str(tmp_path / "explicit") in str(err.value) and str(env_a) not in str(err.value)


def test_torchvision_layout(tmp_path, isolated):
    pytest.importorskip("torchvision")
    _write_idx(tmp_path / "MNIST" / "raw")
    data = load_image_dataset("mnist", root=tmp_path)
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_test.dtype == torch.int64
    assert "torchvision MNIST" in data.source and data.test_note == "MNIST test (6 images, exact)"


def test_download_goes_to_the_explicit_root_then_the_cache(tmp_path, isolated, monkeypatch):
    tvd = pytest.importorskip("torchvision.datasets")
    calls = []

    def download(self) -> None:  # no network: write what the real download would leave behind
        calls.append(self.root)
        _write_idx(Path(self.raw_folder))

    # Named MNIST, since torchvision derives the folder (root/MNIST/raw) from the class name.
    monkeypatch.setattr(tvd, "MNIST", type("MNIST", (tvd.MNIST,), {"download": download}))
    with pytest.raises(FileNotFoundError):
        load_image_dataset("mnist", root=tmp_path / "mine")
    assert not calls, "nothing is downloaded without download=True"
    data = load_image_dataset("mnist", root=tmp_path / "mine", download=True)
    assert (tmp_path / "mine" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert data.x_train.shape == (12, 1, 28, 28)
    cache_data = isolated / "encouraging" / "data"
    data = load_image_dataset("mnist", download=True)
    assert (cache_data / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    assert str(cache_data) in data.source


def test_failed_download_names_dataset_and_target(tmp_path, isolated, monkeypatch):
    tvd = pytest.importorskip("torchvision.datasets")

    class Offline(tvd.FashionMNIST):
        def download(self) -> None:
            raise OSError("network unreachable")

    monkeypatch.setattr(tvd, "FashionMNIST", Offline)
    with pytest.raises(FileNotFoundError, match=r"downloading Fashion-MNIST .* into .*mine.* network unreachable"):
        load_image_dataset("fashion_mnist", root=tmp_path / "mine", download=True)


# ------------------------------------------------------------------------------------------ registry


def test_registry_lookup_and_errors():
    assert set(list_datasets()) >= {"mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "imagenet"}
    assert list_datasets("cifar*") == ["cifar10", "cifar100"]
    assert list_datasets("*mnist", exclude_filters=["fashion*"]) == ["mnist"]
    assert get_dataset_info("Fashion-MNIST").name == "fashion_mnist"
    assert get_dataset_info("cifar-10") is get_dataset_info("cifar10")
    info = get_dataset_info("cifar100")
    assert info.num_classes == 100 and len(info.classes) == 100 and info.input_shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"dataset must be one of \[.*'mnist'.*\], got 'stl10'"):
        get_dataset_info("stl10")
    with pytest.raises(ValueError, match=r"one of \[.*'cifar10'.*\] or an existing directory, got 'no/such/dir'"):
        load_image_dataset("no/such/dir")
    with pytest.raises(ValueError, match="test_set must be one of"):
        load_image_dataset("mnist", test_set="official")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(get_dataset_info("mnist"))
    with pytest.raises(ValueError, match="mean and std"):
        DatasetInfo("x", 2, 3, 8, (0.5,), (0.5, 0.5), "bad")


# ------------------------------------------------------------------------------------------ ImageFolder


def _image_tree(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    from PIL import Image

    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_images(1, 20, 24, 3)[0]).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_tree(tmp_path, isolated):
    pytest.importorskip("torchvision")
    tree = _image_tree(tmp_path / "pets", {"train": {"cat": 2, "dog": 3, "eel": 1}, "val": {"dog": 2, "eel": 1}})
    data = load_image_dataset(tree, image_size=16)
    assert isinstance(data, FolderData)
    assert data.info.num_classes == 3 and data.info.classes == ("cat", "dog", "eel") and data.info.kind == "folder"
    assert len(data.train) == 6 and len(data.test) == 3
    # val has no "cat": its labels must still use the train split's indices
    assert sorted(label for _, label in data.test.samples) == [1, 1, 2]
    image, label = data.test[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert data.train[0][0].shape == (3, 16, 16)
    assert "val (3 images" in data.test_note

    registered = load_image_dataset("imagefolder", root=tree, image_size=16)
    assert isinstance(registered, FolderData) and registered.info.num_classes == 3


def test_image_folder_extra_val_class_and_missing_tree(tmp_path, isolated):
    pytest.importorskip("torchvision")
    tree = _image_tree(tmp_path / "t", {"train": {"a": 1}, "val": {"a": 1, "b": 1}})
    with pytest.raises(ValueError, match=r"classes that .* lacks: \['b'\]"):
        load_image_dataset(tree)
    with pytest.raises(FileNotFoundError, match=r"imagenet/\{train,val\}"):
        load_image_dataset("imagenet", root=tmp_path)
    with pytest.raises(ValueError, match="does not apply to ImageNet"):
        load_image_dataset("imagenet", root=tmp_path, test_set="jpeg")
