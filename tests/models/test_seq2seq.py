"""The translation transformer: logits over the shared vocabulary, padding masked, beam 1 equal to a hand-written
greedy decoder, special tokens dropped from hypotheses."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from encouraging.engine.batches import TokenBatches  # noqa: E402
from encouraging.models import create_model  # noqa: E402
from encouraging.models.seq2seq import BOS, EOS  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("transformer_small", num_classes=40, dim=32, layers=2, ffn=64).eval()


@pytest.fixture
def batch():
    batches = TokenBatches([[5, 6, 7, 8], [9, 10]], [[11, 12], [13, 14, 15]], 100, train=False)
    return next(iter(batches.epoch(0)))


def test_logits_cover_the_vocabulary_and_padding_does_not_change_them(model, batch):
    inputs, labels = batch
    logits = model(inputs)
    assert logits.shape == (*labels.shape, 40)
    alone = TokenBatches([[9, 10]], [[13, 14, 15]], 100, train=False)
    solo, _ = next(iter(alone.epoch(0)))
    row = inputs.index.tolist().index(1)
    with torch.no_grad():
        torch.testing.assert_close(model(solo)[0], logits[row, :solo.decoder_input.shape[1]], atol=1e-5, rtol=1e-5)


def test_beam_one_is_greedy_decoding(model, batch):
    inputs, _ = batch
    hypotheses = model.generate(inputs, beam=1, max_len_a=0, max_len_b=6)
    for row, hypothesis in enumerate(hypotheses):
        source = inputs.source[row:row + 1][:, :int(inputs.attention_mask[row].sum())]
        prefix = [BOS]
        with torch.no_grad():
            for _ in range(6):
                logits = model.model(input_ids=source, decoder_input_ids=torch.tensor([prefix])).logits[0, -1]
                prefix.append(int(logits.argmax()))
                if prefix[-1] == EOS:
                    break
        assert hypothesis == [t for t in prefix[1:] if t > EOS or t == 1]
    beams = model.generate(inputs, beam=4, max_len_a=0, max_len_b=6)
    assert len(beams) == 2 and all(all(t > EOS or t == 1 for t in h) for h in beams)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="dim divisible by heads"):
        create_model("transformer_small", num_classes=40, dim=30, heads=4)
