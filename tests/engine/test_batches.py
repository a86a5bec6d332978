from __future__ import annotations

import pytest
import torch

from encouraging.engine.batches import TensorBatches
from encouraging.engine.distributed import World


def _data(n=103):
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    return x, torch.arange(n)


def test_same_seed_same_batches_and_epochs_differ():
    x, y = _data()
    a = TensorBatches(x, y, 10, train=True, seed=3, augment="flip_crop", crop_padding=2, mean=[0.5], std=[0.2])
    b = TensorBatches(x, y, 10, train=True, seed=3, augment="flip_crop", crop_padding=2, mean=[0.5], std=[0.2])
    first = [(bx.clone(), by.clone()) for bx, by in a.epoch(1)]
    again = list(b.epoch(1))
    assert len(first) == len(a) == 10  # 103 // 10, last incomplete batch dropped
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(first, again, strict=True))
    other = torch.cat([by for _, by in a.epoch(2)])
    assert not torch.equal(torch.cat([by for _, by in first]), other)


def test_ranks_split_each_global_batch_exactly():
    x, y = _data(64)
    single = TensorBatches(x, y, 8, train=True, seed=1)
    ranks = [TensorBatches(x, y, 4, train=True, seed=1, world=World(r, 2)) for r in range(2)]
    steps = zip(single.epoch(0), ranks[0].epoch(0), ranks[1].epoch(0), strict=True)
    for step, ((_, whole), (_, r0), (_, r1)) in enumerate(steps):
        assert torch.equal(whole, torch.cat([r0, r1])), step
    assert len(single) == len(ranks[0]) == 8


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_evaluation_covers_every_example_once(world_size):
    x, y = _data(50)
    seen = torch.cat([by for r in range(world_size)
                      for _, by in TensorBatches(x, y, 7, train=False, world=World(r, world_size)).epoch(0)])
    assert torch.equal(seen.sort().values, y)


def test_normalisation_and_features():
    x, y = _data(20)
    batches = TensorBatches(x, y, 20, train=False, mean=[0.5], std=[0.25])
    bx, _ = next(batches.epoch(0))
    assert torch.allclose(bx, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)
    raw = next(TensorBatches(x, y, 20, train=False).epoch(0))[0]
    assert torch.allclose(raw, x.float() / 255)
    feats = torch.randn(20, 5)
    assert torch.equal(next(TensorBatches(feats, y, 20, train=False).epoch(0))[0], feats)
    with pytest.raises(ValueError, match="augment"):
        TensorBatches(x, y, 4, train=True, augment="rotate")
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(x, y, 64, train=True)
