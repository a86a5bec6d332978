"""Parallel corpora: the shared Multi30k and IWSLT'14 files, plain and gzip text, and misaligned files named."""

from __future__ import annotations

import gzip

import pytest

from encouraging.data.text import CORPORA, find_corpus, read_lines, read_parallel


def test_the_shared_corpora_have_their_published_sizes(data_root):
    sizes = {}
    for name in ("multi30k_de_en", "iwslt14_de_en_eval"):
        corpus, root = find_corpus(name, data_root)
        assert root == data_root
        sizes[name] = {split: len(read_parallel(*corpus.files(split, root))[0]) for split in corpus.splits}
    assert sizes == {"multi30k_de_en": {"train": 29000, "valid": 1014, "test": 1000},
                     "iwslt14_de_en_eval": {"valid": 7283, "test": 6750}}
    src, tgt = read_parallel(*CORPORA["multi30k_de_en"].files("test", data_root))
    assert src[0] == "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert tgt[0] == "A man in an orange hat starring at something."


def test_plain_and_gzip_files_read_alike_and_misaligned_ones_are_named(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n", encoding="utf-8")
    with gzip.open(tmp_path / "a.en.gz", "wt", encoding="utf-8") as f:
        f.write("one\ntwo\n")
    assert read_parallel(tmp_path / "a.de", tmp_path / "a.en.gz") == (["eins", "zwei"], ["one", "two"])
    (tmp_path / "b.en").write_text("one\ntwo\nthree\n")
    with pytest.raises(ValueError, match=r"misaligned corpus: .*a.de has 2 lines, .*b.en has 3"):
        read_parallel(tmp_path / "a.de", tmp_path / "b.en")
    with pytest.raises(FileNotFoundError, match="corpus file not found: .*c.en"):
        read_parallel(tmp_path / "a.de", tmp_path / "c.en")
    (tmp_path / "crlf.txt").write_bytes(b"x\r\ny\r\n")
    assert read_lines(tmp_path / "crlf.txt") == ["x", "y"]


def test_an_absent_corpus_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("ENCOURAGING_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match=r"(?s)corpus iwslt14_de_en not found.*iwslt14.tokenized.de-en/train"):
        find_corpus("iwslt14_de_en", tmp_path)
    with pytest.raises(ValueError, match="corpus must be one of"):
        find_corpus("wmt14", tmp_path)
    with pytest.raises(ValueError, match="has the splits"):
        CORPORA["iwslt14_de_en_eval"].files("train", tmp_path)
