"""Subword vocabularies: sentencepiece round trips and caching; pre-segmented (BPE'd) text encoded and de-BPE'd."""

from __future__ import annotations

import pytest

pytest.importorskip("sentencepiece")

from encouraging.data.subwords import (  # noqa: E402
    EOS,
    PAD,
    UNK,
    PretokenizedVocab,
    remove_bpe,
    sentencepiece_vocab,
)
from encouraging.data.text import CORPORA, read_parallel  # noqa: E402


@pytest.fixture
def multi30k(data_root):
    return read_parallel(*CORPORA["multi30k_de_en"].files("train", data_root))


def test_sentencepiece_round_trips_and_is_trained_once(multi30k, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    src, tgt = multi30k
    texts = src[:3000] + tgt[:3000]
    vocab = sentencepiece_vocab(texts, vocab_size=1000)
    assert len(vocab) == 1000
    for sentence in (src[5], tgt[7], "Ein Mann läuft über die Straße."):
        ids = vocab.encode(sentence)
        assert ids and min(ids) > EOS and vocab.decode([*ids, EOS, PAD]) == sentence
    mtime = vocab.path.stat().st_mtime_ns
    again = sentencepiece_vocab(texts, vocab_size=1000)  # the same text and settings: the cached model
    assert again.path == vocab.path and again.path.stat().st_mtime_ns == mtime
    assert sentencepiece_vocab(texts, vocab_size=900).path != vocab.path
    with pytest.raises(ValueError, match="vocab_size must be > 4"):
        sentencepiece_vocab(texts, vocab_size=4)


def test_pretokenized_text_keeps_its_segmentation_and_loses_the_markers_when_decoded(tmp_path):
    train = ["ich sehe den b@@ aum", "der b@@ aum ist gr@@ ün", "ich sehe"]
    vocab = PretokenizedVocab.build(train)
    assert vocab.tokens[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and vocab.tokens[4:6] == ["ich", "sehe"]
    ids = vocab.encode("ich sehe den b@@ aum")
    assert vocab.decode([*ids, EOS]) == "ich sehe den baum"
    assert vocab.encode("ich kenne") == [vocab.index["ich"], UNK]
    assert vocab.decode(vocab.encode("ich kenne")) == "ich <unk>"
    assert remove_bpe("der b@@ aum ist gr@@ ün") == "der baum ist grün"
    assert remove_bpe("ende@@") == "ende"  # as fairseq's --remove-bpe
    assert len(PretokenizedVocab.build(train, min_count=2)) == 4 + 4  # ich, sehe, b@@, aum
    vocab.save(tmp_path / "v.json")
    assert PretokenizedVocab.load(tmp_path / "v.json").tokens == vocab.tokens
