"""Image classification: torchvision datasets or array folders, the paper's models, CE vs EL.

Small datasets (MNIST, Fashion-MNIST, CIFAR, array folders) live on the device as uint8 tensors and are
augmented per batch there; image folders (ImageNet-style) stream through a DataLoader with the torchvision
transforms of the paper's 224-px recipe (see :func:`encouraging.data.load_image_folder`). ``train.adversarial``
replaces each training batch by attacked examples of the current model (the paper's adversarial training).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Subset

from ..data import TEST_SETS, load_image_dataset
from ..engine.adversarial import TRAIN_ATTACKS, build_perturbation
from ..engine.batches import AUGMENTS, LoaderBatches, TensorBatches
from ..engine.checks import field_problems
from ..engine.classification import ClassificationTask
from ..engine.task import DataStats, Prepared, Step, class_counts, holdout, register_task
from ..models import create_model

SUBSET_SEED = 0  # the same subset for every loss and seed: only the loss differs between runs
_RUNTIME = {"hash": False}  # where or how fast, not what: left out of the recipe hash


@dataclass
class ImageDataConfig:
    dataset: str = "mnist"  # registry name (`encouraging list datasets`) or an array folder
    root: str | None = field(default=None, metadata=_RUNTIME)  # data root; default: $ENCOURAGING_DATA, the cache
    download: bool = field(default=True, metadata=_RUNTIME)  # fetch via torchvision when not found (--offline: no)
    test_set: str = "default"  # dataset-specific choice (CIFAR-10: default = JPEG 10k, exact1000)
    train_subset: int = 0  # keep this many training examples (0 = all), a fixed random subset
    test_subset: int = 0  # keep this many test examples (0 = all)
    val_fraction: float = 0.0  # hold out this fraction of the training set to select the reported epoch on
    val_seed: int = 0  # which examples are held out (the same for every loss and run seed)
    batch_size: int = 128  # per process; the global batch is batch_size x world size
    eval_batch_size: int = field(default=1000, metadata=_RUNTIME)
    shuffle: bool = True  # the paper's adversarial MNIST recipe trains without shuffling
    augment: str = "none"  # none | flip | crop | flip_crop (batched, on device)
    crop_padding: int = 4  # pixels of padding for random crops
    normalize: bool = True  # per-channel mean/std; false keeps pixels in [0, 1] (adversarial recipes)
    image_size: int = 0  # resize batches to this side (0 = native), e.g. 224 for the paper's CIFAR recipe
    in_memory: bool = field(default=True, metadata=_RUNTIME)  # keep tensors on the device (folders: DataLoader)
    num_workers: int = field(default=2, metadata=_RUNTIME)  # DataLoader workers (folder datasets)


def _subset(x: Tensor, y: Tensor, n: int) -> tuple[Tensor, Tensor]:
    if n <= 0 or n >= len(x):
        return x, y
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].sort().values
    return x[keep], y[keep]


@register_task
class ImageTask(ClassificationTask):
    """Task ``image``: image classification on torchvision datasets, array folders, image folders and list files,
    with the registry's models and batched augmentation."""

    name = "image"
    description = "image classification (torchvision datasets, array folders, image folders)"
    data_config = ImageDataConfig
    evaluations = ("ood", "attack", "analyze")
    perturb: Any = None  # train.adversarial's attack, built by setup()

    def check(self) -> list[str]:
        d, adv = self.cfg.data, self.cfg.train.adversarial
        problems = field_problems("data", d, (
            ("batch_size", d.batch_size >= 1, ">= 1"), ("eval_batch_size", d.eval_batch_size >= 1, ">= 1"),
            ("train_subset", d.train_subset >= 0, ">= 0 (0 = all)"), ("test_subset", d.test_subset >= 0, ">= 0"),
            ("val_fraction", 0.0 <= d.val_fraction < 1.0, "in [0, 1)"), ("crop_padding", d.crop_padding >= 0, ">= 0"),
            ("image_size", d.image_size >= 0, ">= 0 (0 = native)"), ("num_workers", d.num_workers >= 0, ">= 0"),
            ("augment", d.augment in AUGMENTS, f"one of {AUGMENTS}"),
            ("test_set", d.test_set in TEST_SETS, f"one of {TEST_SETS}"),
        ))
        if adv.attack not in TRAIN_ATTACKS:
            problems.append(f"train.adversarial.attack must be one of {TRAIN_ATTACKS}, got {adv.attack!r}")
        return problems

    def setup(self) -> Prepared:
        d = self.cfg.data
        data = load_image_dataset(d.dataset, root=d.root, download=d.download, test_set=d.test_set,
                                  image_size=d.image_size or None)
        info = data.info
        self.num_classes = info.num_classes
        size = d.image_size or (info.height_width[0] if info.height_width else 0)
        model = create_model(self.cfg.model.name, num_classes=info.num_classes, in_channels=info.channels,
                             image_size=size or None, **self.cfg.model.kwargs)
        notes = {"test_note": data.test_note, "source": str(data.source), "num_classes": info.num_classes,
                 "dataset_title": info.title, "classes": list(info.classes) if info.classes else None}
        prepared = (self._folders(data, model, notes) if info.kind == "folder" else self._tensors(data, model, notes))
        self.perturb = build_perturbation(self.cfg, model, prepared.train)
        return prepared

    def _folders(self, data: Any, model: nn.Module, notes: dict) -> Prepared:
        d, world, device = self.cfg.data, self.world, self.device
        plain = copy.copy(data.train)
        plain.transform = data.test.transform  # the training images through the test-time transform
        targets = torch.as_tensor(data.train.targets)
        used = self.select_train(targets, data.info.num_classes, notes)
        val_set = None
        if d.val_fraction > 0:
            base = used if used is not None else torch.arange(len(targets))
            keep, held = holdout(len(base), d.val_fraction, d.val_seed)
            used, val_set = base[keep], Subset(plain, base[held].tolist())
        train_set = data.train if used is None else Subset(data.train, used.tolist())
        train_plain = plain if used is None else Subset(plain, used.tolist())
        targets = targets if used is None else targets[used]
        train = LoaderBatches(train_set, d.batch_size, train=True, seed=self.cfg.train.seed, world=world,
                              num_workers=d.num_workers, device=device,
                              balance_by=targets if self.class_balanced_sampling() else None)
        loader = dict(train=False, world=world, num_workers=d.num_workers, device=device)
        notes.update(train_size=len(train_set), test_size=len(data.test))
        return Prepared(model, train, LoaderBatches(data.test, d.eval_batch_size, **loader),
                        DataStats(data.info.num_classes, class_counts(targets, data.info.num_classes)),
                        val=LoaderBatches(val_set, d.eval_batch_size, **loader) if val_set is not None else None,
                        train_eval=LoaderBatches(train_plain, d.eval_batch_size, **loader), notes=notes)

    def _tensors(self, data: Any, model: nn.Module, notes: dict) -> Prepared:
        d, info = self.cfg.data, data.info
        x_train, y_train = _subset(data.x_train, data.y_train, d.train_subset)
        used = self.select_train(y_train, info.num_classes, notes)
        if used is not None:
            x_train, y_train = x_train[used], y_train[used]
        x_test, y_test = _subset(data.x_test, data.y_test, d.test_subset)
        storage = self.device if d.in_memory else torch.device("cpu")
        mean, std = (info.mean, info.std) if d.normalize else (None, None)
        common = dict(world=self.world, mean=mean, std=std, image_size=d.image_size, device=storage,
                      out_device=self.device)
        val = None
        if d.val_fraction > 0:
            keep, held = holdout(len(x_train), d.val_fraction, d.val_seed)
            val = TensorBatches(x_train[held], y_train[held], d.eval_batch_size, train=False, **common)
            notes["val_note"] = (f"{len(held)} training examples held out (fraction {d.val_fraction:g}, "
                                 f"seed {d.val_seed})")
            x_train, y_train = x_train[keep], y_train[keep]
        train = TensorBatches(x_train, y_train, d.batch_size, train=True, seed=self.cfg.train.seed,
                              shuffle=d.shuffle, augment=d.augment, crop_padding=d.crop_padding,
                              class_balanced=self.class_balanced_sampling(), **common)
        test = TensorBatches(x_test, y_test, d.eval_batch_size, train=False, **common)
        notes.update(train_size=len(x_train), test_size=len(x_test), mean=mean, std=std)
        if d.test_subset:
            notes["test_note"] = f"{data.test_note}; fixed random subset of {len(x_test)}"
        train_eval = TensorBatches(x_train, y_train, d.eval_batch_size, train=False, **common)
        stats = DataStats(info.num_classes, class_counts(y_train, info.num_classes))
        return Prepared(model, train, test, stats, val=val, train_eval=train_eval, notes=notes)

    def select_train(self, labels: Tensor, num_classes: int, notes: dict) -> Tensor | None:
        """Indices of the training examples the run uses, for tensors and folders alike (None: all of them; the
        long-tailed task subsamples here)."""
        return None

    def class_balanced_sampling(self) -> bool:
        """Whether training batches sample classes equally (the long-tailed task's ``data.sampling``)."""
        return False

    def training_step(self, model: nn.Module, batch: Any, criterion: nn.Module) -> Step:
        if self.perturb is not None:  # train.adversarial: the step sees the attacked batch
            x, y = batch
            batch = (self.perturb(x, y), y)
        return super().training_step(model, batch, criterion)
