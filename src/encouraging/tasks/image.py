"""Image classification: torchvision datasets or array folders, the paper's models, CE vs EL.

Small datasets (MNIST, Fashion-MNIST, CIFAR, array folders) live on the device as uint8 tensors and are
augmented per batch there; image folders (ImageNet-style) stream through a DataLoader with the torchvision
transforms of the paper's 224-px recipe (see :func:`encouraging.data.load_image_folder`).
"""

from __future__ import annotations

import copy

import torch

from ..data import load_image_dataset
from ..engine.batches import LoaderBatches, TensorBatches
from ..engine.config import Config
from ..engine.distributed import World
from ..models import create_model
from .registry import Prepared, Task, register_task

SUBSET_SEED = 0  # the same subset for every loss and seed: only the loss differs between runs


def _subset(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n <= 0 or n >= len(x):
        return x, y
    keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].sort().values
    return x[keep], y[keep]


def prepare(cfg: Config, device: torch.device, world: World) -> Prepared:
    d = cfg.data
    data = load_image_dataset(d.dataset, root=d.root, download=d.download, test_set=d.test_set,
                              image_size=d.image_size or None)
    info = data.info
    size = d.image_size or (info.height_width[0] if info.height_width else 0)
    model = create_model(cfg.model.name, num_classes=info.num_classes, in_channels=info.channels,
                         image_size=size or None, **cfg.model.kwargs)
    notes = {"test_note": data.test_note, "source": str(data.source), "num_classes": info.num_classes,
             "dataset_title": info.title, "classes": list(info.classes) if info.classes else None}
    if info.kind == "folder":
        train = LoaderBatches(data.train, d.batch_size, train=True, seed=cfg.train.seed, world=world,
                              num_workers=d.num_workers, device=device)
        loader = dict(train=False, world=world, num_workers=d.num_workers, device=device)
        test = LoaderBatches(data.test, d.eval_batch_size, **loader)
        plain_train = copy.copy(data.train)
        plain_train.transform = data.test.transform  # the training images through the test-time transform
        notes.update(train_size=len(data.train), test_size=len(data.test))
        return Prepared(model, train, test, notes, LoaderBatches(plain_train, d.eval_batch_size, **loader))

    x_train, y_train = _subset(data.x_train, data.y_train, d.train_subset)
    x_test, y_test = _subset(data.x_test, data.y_test, d.test_subset)
    storage = device if d.in_memory else torch.device("cpu")
    mean, std = (info.mean, info.std) if d.normalize else (None, None)
    common = dict(world=world, mean=mean, std=std, image_size=d.image_size, device=storage,
                  out_device=device)
    train = TensorBatches(x_train, y_train, d.batch_size, train=True, seed=cfg.train.seed, shuffle=d.shuffle,
                          augment=d.augment, crop_padding=d.crop_padding, **common)
    test = TensorBatches(x_test, y_test, d.eval_batch_size, train=False, **common)
    notes.update(train_size=len(x_train), test_size=len(x_test), mean=mean, std=std)
    if d.test_subset:
        notes["test_note"] = f"{data.test_note}; fixed random subset of {len(x_test)}"
    train_eval = TensorBatches(x_train, y_train, d.eval_batch_size, train=False, **common)
    return Prepared(model, train, test, notes, train_eval)


register_task(Task("image", "image classification (torchvision datasets, array folders, image folders)", prepare))
