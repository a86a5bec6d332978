"""Batch sources for the training loop.

``TensorBatches`` keeps a whole dataset on the device as uint8 (as airbench does) and augments each batch there;
``LoaderBatches`` wraps a ``DataLoader`` for datasets that do not fit (image folders, graphs); ``TokenBatches``
packs sentence pairs into batches of at most so many tokens (translation). Each produces the same order for the
same (seed, epoch) whatever happened before, so a resumed run sees exactly the batches an uninterrupted one would,
and each shards the batches across the ranks of a data-parallel run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..data.augment import normalize, random_crop, random_flip
from .distributed import SINGLE, World

AUGMENTS = ("none", "flip", "crop", "flip_crop")


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible 63-bit seed per (run seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + 17) % (2**63 - 1)


def class_balanced_weights(y: Tensor) -> Tensor:
    """Per-example draw weights ``1 / n_{y_i}`` (float64, CPU): with them every class is equally likely and the
    examples of a class uniform (class-balanced sampling, as cRT's second stage uses)."""
    y = y.cpu()
    return 1.0 / torch.bincount(y)[y].double()


def class_balanced_draw(weights: Tensor, n: int, seed: int, epoch: int) -> Tensor:
    """``n`` example indices drawn with replacement by ``weights``, the same for the same (seed, epoch)."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.multinomial(weights, n, replacement=True, generator=generator)


class ClassBalancedSampler(Sampler[int]):
    """Class-balanced sampling for a ``DataLoader``: each epoch ``len(labels)`` draws (:func:`class_balanced_draw`,
    identical on every rank), each rank taking every ``world.size``-th. torch's ``WeightedRandomSampler`` draws the
    same way but neither re-seeds per epoch (so a resumed run would differ) nor shards across processes."""

    def __init__(self, labels: Tensor, *, seed: int = 0, world: World = SINGLE) -> None:
        self.weights, self.seed, self.world, self.epoch = class_balanced_weights(labels), seed, world, 0
        self.per_rank = len(labels) // world.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        order = class_balanced_draw(self.weights, self.per_rank * self.world.size, self.seed, self.epoch)
        return iter(order[self.world.rank::self.world.size].tolist())


class TensorBatches:
    """Batches of a dataset held on the device.

    Args:
        device, out_device: where the data is stored and augmented (the training device when it fits), and
            where batches go (default: the same).
        x: images ``(N, C, H, W)`` uint8 (normalized per batch with ``mean``/``std``) or float features ``(N, D)``.
        y: labels ``(N,)``.
        batch_size: per-rank batch; one step consumes ``batch_size * world.size`` examples.
        mean, std: per-channel statistics in [0, 1] pixel units (None: only scale pixels to [0, 1]).
        train: shuffle (if ``shuffle``), augment, and drop the last incomplete global batch; otherwise iterate
            over every example once in order, each rank taking a contiguous shard.
        class_balanced: (training) draw each epoch's ``N`` examples with replacement, every class equally likely
            and uniformly within a class (class-balanced sampling, as cRT's second stage uses), instead of a
            permutation.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, *, train: bool, seed: int = 0, world: World = SINGLE,
                 shuffle: bool = True, augment: str = "none", crop_padding: int = 4, mean=None, std=None,
                 image_size: int = 0, device: torch.device | str = "cpu",
                 out_device: torch.device | str | None = None, class_balanced: bool = False) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"data.augment must be one of {AUGMENTS}, got {augment!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.device = torch.device(device)  # where the data is stored (and augmented)
        self.out_device = torch.device(out_device) if out_device is not None else self.device
        self.x = x.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.train, self.seed, self.world, self.shuffle = train, seed, world, shuffle
        self.class_balanced = class_balanced
        self.sample_weights = class_balanced_weights(y) if class_balanced else None
        self.augment, self.crop_padding, self.image_size = augment, crop_padding, image_size
        self.images = x.dtype == torch.uint8
        # no mean/std: pixels are only scaled to [0, 1]
        scale = self.images and mean is not None
        self.mean = torch.tensor(mean if scale else 0.0, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std if scale else 1.0, dtype=torch.float32, device=self.device)
        if train and len(self) == 0:
            raise ValueError(f"{len(x)} training examples are fewer than one global batch of "
                             f"{batch_size * world.size}; lower data.batch_size")

    def _shard(self) -> tuple[int, int]:
        """This rank's contiguous [start, stop) slice of the evaluation data."""
        size = -(-len(self.x) // self.world.size)
        start = min(self.world.rank * size, len(self.x))
        return start, min(start + size, len(self.x))

    def __len__(self) -> int:
        if self.train:
            return len(self.x) // (self.batch_size * self.world.size)
        start, stop = self._shard()
        return -(-(stop - start) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        if not self.train:
            start, stop = self._shard()
            for i in range(start, stop, self.batch_size):
                j = min(i + self.batch_size, stop)
                yield self._out(self._prepare(self.x[i:j], None), self.y[i:j])
            return
        n, step = len(self.x), self.batch_size * self.world.size
        if self.sample_weights is not None:
            order = class_balanced_draw(self.sample_weights, n, self.seed, epoch).to(self.device)
        elif self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
            order = order.to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.seed, epoch, self.world.rank + 1))
        for s in range(len(self)):
            lo = s * step + self.world.rank * self.batch_size
            idx = order[lo:lo + self.batch_size]
            yield self._out(self._prepare(self.x[idx], gen), self.y[idx])

    def _out(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.out_device == self.device:
            return x, y
        return x.to(self.out_device, non_blocking=True), y.to(self.out_device, non_blocking=True)

    def _prepare(self, x: Tensor, gen: torch.Generator | None) -> Tensor:
        if not self.images:
            return x.float()
        if gen is not None and self.augment in ("crop", "flip_crop"):
            x = random_crop(x, self.crop_padding, gen)
        if gen is not None and self.augment in ("flip", "flip_crop"):
            x = random_flip(x, gen)
        x = normalize(x, self.mean, self.std)
        if self.image_size and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


class LoaderBatches:
    """A ``DataLoader`` over a map-style dataset, sharded with ``DistributedSampler`` and moved to the device;
    with ``balance_by`` (the training labels) sampled class-balanced instead (:class:`ClassBalancedSampler`).
    ``collate_fn`` builds a batch (default: stacking); it must return ``(inputs, target)`` whose parts have
    ``.to(device)`` (tensors, a PyG ``Batch``). Training drops the last incomplete batch unless ``drop_last=False``
    (small datasets such as the TU graphs keep every example in every epoch)."""

    def __init__(self, dataset: Dataset, batch_size: int, *, train: bool, seed: int = 0, world: World = SINGLE,
                 num_workers: int = 2, device: torch.device | str = "cpu", balance_by: Tensor | None = None,
                 collate_fn: Any = None, drop_last: bool | None = None) -> None:
        self.device = torch.device(device)
        if balance_by is not None and len(balance_by) != len(dataset):
            raise ValueError(f"balance_by has {len(balance_by)} labels for {len(dataset)} examples")
        drop_last = train if drop_last is None else drop_last
        self.sampler = (ClassBalancedSampler(balance_by, seed=seed, world=world) if balance_by is not None else
                        DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=train,
                                           seed=seed, drop_last=drop_last))
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 drop_last=drop_last, pin_memory=self.device.type == "cuda",
                                 persistent_workers=num_workers > 0, collate_fn=collate_fn)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        self.sampler.set_epoch(epoch)
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass
class Seq2SeqInputs:
    """The model inputs of a batch of sentence pairs: ``source`` ids ``(N, S)`` (each ends with EOS, then padding),
    ``decoder_input`` ``(N, T)`` (BOS, then the target shifted right), and ``index``: the pairs' places in the
    corpus (decoding puts hypotheses back in corpus order with it)."""

    source: Tensor
    decoder_input: Tensor
    index: Tensor
    pad: int = 0

    @property
    def attention_mask(self) -> Tensor:
        return self.source != self.pad

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Seq2SeqInputs:
        return Seq2SeqInputs(self.source.to(device, non_blocking=non_blocking),
                             self.decoder_input.to(device, non_blocking=non_blocking), self.index, self.pad)

    def __len__(self) -> int:
        return len(self.source)


def _padded(rows: list[list[int]], pad: int) -> Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class TokenBatches:
    """Batches of sentence pairs sized by tokens, as fairseq's ``--max-tokens``: pairs sorted by length (source,
    then target; ties in a seeded random order) and packed so that a batch's padded size, pairs x its longest
    source or target (EOS included), stays within ``max_tokens`` (a longer pair goes alone). The batches are fixed;
    training visits them in a new seeded order each epoch (the same for the same (seed, epoch), so a resumed run
    sees the same batches), evaluation in length order. Each rank takes every ``world.size``-th batch.

    Yields ``(Seq2SeqInputs, labels)``; ``labels`` ``(N, T)`` is the target followed by EOS, padded with ``pad``
    (the loss ignores it). ``sources`` and ``targets`` are token ids without special tokens.
    """

    def __init__(self, sources: list[list[int]], targets: list[list[int]], max_tokens: int, *, train: bool,
                 seed: int = 0, world: World = SINGLE, device: torch.device | str = "cpu", pad: int = 0,
                 bos: int = 2, eos: int = 3) -> None:
        if len(sources) != len(targets) or not sources:
            raise ValueError(f"need as many sources as targets, at least one: got {len(sources)} and {len(targets)}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.sources, self.targets = sources, targets
        self.train, self.seed, self.world, self.device = train, seed, world, torch.device(device)
        self.pad, self.bos, self.eos = pad, bos, eos
        ties = torch.randperm(len(sources), generator=torch.Generator().manual_seed(seed)).tolist() if train \
            else range(len(sources))
        order = sorted(ties, key=lambda i: (len(sources[i]), len(targets[i])))
        self.batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            size = max(len(sources[i]), len(targets[i])) + 1  # + EOS
            if current and (len(current) + 1) * max(longest, size) > max_tokens:
                self.batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, size)
        self.batches.append(current)

    def __len__(self) -> int:
        return len(self.batches) // self.world.size if self.train else -(-len(self.batches) // self.world.size)

    def epoch(self, epoch: int) -> Iterator[tuple[Seq2SeqInputs, Tensor]]:
        order = list(range(len(self.batches)))
        if self.train:
            order = torch.randperm(len(order), generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch)))
            order = order[:len(self) * self.world.size].tolist()
        for b in order[self.world.rank::self.world.size]:
            yield self.collate(self.batches[b])

    def collate(self, indices: list[int]) -> tuple[Seq2SeqInputs, Tensor]:
        """The padded batch of the pairs ``indices``."""
        source = _padded([[*self.sources[i], self.eos] for i in indices], self.pad)
        decoder_input = _padded([[self.bos, *self.targets[i]] for i in indices], self.pad)
        labels = _padded([[*self.targets[i], self.eos] for i in indices], self.pad)
        inputs = Seq2SeqInputs(source, decoder_input, torch.tensor(indices), self.pad)
        return inputs.to(self.device), labels.to(self.device)
