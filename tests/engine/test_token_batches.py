"""Token-sized batches of sentence pairs: the max-tokens bound, padding and special tokens, coverage, the
per-epoch order, and sharding across ranks."""

from __future__ import annotations

import random

import pytest
import torch

from encouraging.engine.batches import TokenBatches
from encouraging.engine.distributed import World

PAD, BOS, EOS = 0, 2, 3


def _pairs(n: int = 300, seed: int = 0):
    rng = random.Random(seed)
    src = [[rng.randrange(4, 50) for _ in range(rng.randrange(1, 30))] for _ in range(n)]
    tgt = [[rng.randrange(4, 50) for _ in range(rng.randrange(1, 30))] for _ in range(n)]
    return src, tgt


def test_batches_respect_max_tokens_and_cover_every_pair_once():
    src, tgt = _pairs()
    batches = TokenBatches(src, tgt, 200, train=True, seed=1)
    seen = []
    for inputs, labels in batches.epoch(0):
        assert inputs.source.numel() <= 200 and labels.numel() <= 200 and inputs.decoder_input.shape == labels.shape
        seen += inputs.index.tolist()
    assert sorted(seen) == list(range(len(src)))
    alone = TokenBatches([[5] * 40], [[6] * 10], 20, train=True)  # longer than max_tokens: a batch of its own
    ((inputs, labels),) = list(alone.epoch(0))
    assert inputs.source.shape == (1, 41)


def test_padding_and_special_tokens_frame_each_pair():
    batches = TokenBatches([[7, 8, 9], [10]], [[11], [12, 13]], 100, train=False, pad=PAD, bos=BOS, eos=EOS)
    ((inputs, labels),) = list(batches.epoch(0))
    order = inputs.index.tolist()  # length order: the one-token source first
    assert order == [1, 0]
    assert inputs.source.tolist() == [[10, EOS, PAD, PAD], [7, 8, 9, EOS]]
    assert inputs.decoder_input.tolist() == [[BOS, 12, 13], [BOS, 11, PAD]]
    assert labels.tolist() == [[12, 13, EOS], [11, EOS, PAD]]
    assert inputs.attention_mask.tolist() == [[True, True, False, False], [True, True, True, True]]


def test_the_order_is_new_each_epoch_and_the_same_when_resumed():
    src, tgt = _pairs()
    batches = TokenBatches(src, tgt, 150, train=True, seed=4)

    def order(epoch):
        return [tuple(inputs.index.tolist()) for inputs, _ in batches.epoch(epoch)]

    assert order(3) == order(3) and order(3) != order(4)
    assert sorted(order(3)) == sorted(order(4))  # the same batches, visited in another order
    fixed = TokenBatches(src, tgt, 150, train=False)
    assert [tuple(i.index.tolist()) for i, _ in fixed.epoch(0)] == [tuple(i.index.tolist()) for i, _ in fixed.epoch(5)]


def test_ranks_split_the_batches_and_evaluation_keeps_every_pair():
    src, tgt = _pairs()
    one = TokenBatches(src, tgt, 150, train=True, seed=2)
    ranks = [TokenBatches(src, tgt, 150, train=True, seed=2, world=World(rank=r, size=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2
    first = [[tuple(i.index.tolist()) for i, _ in r.epoch(0)] for r in ranks]
    whole = [tuple(i.index.tolist()) for i, _ in one.epoch(0)]
    assert [b for pair in zip(*first, strict=True) for b in pair] == whole[:2 * len(ranks[0])]
    evaluation = [TokenBatches(src, tgt, 150, train=False, world=World(rank=r, size=2)) for r in (0, 1)]
    covered = sorted(i for r in evaluation for inputs, _ in r.epoch(0) for i in inputs.index.tolist())
    assert covered == list(range(len(src)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="need as many sources as targets"):
        TokenBatches([[1]], [], 10, train=True)
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        TokenBatches([[1]], [[1]], 0, train=True)
    assert torch.equal(TokenBatches([[4]], [[5]], 10, train=False).collate([0])[1], torch.tensor([[5, EOS]]))
