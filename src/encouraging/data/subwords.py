"""Subword vocabularies for translation, both mapping a sentence to ids and back with the same special ids
(``pad`` 0, ``unk`` 1, ``bos`` 2, ``eos`` 3):

* :func:`sentencepiece_vocab`: a joint source+target sentencepiece model (BPE by default) trained on the training
  split's text, cached under the user cache by a hash of that text and the settings, so every run of a recipe
  shares one model and a second run trains nothing;
* :class:`PretokenizedVocab`: for text that is already split into subwords (fairseq's ``prepare-iwslt14.sh``
  output, ``@@ `` continuation markers): the tokens of the training split that occur at least ``min_count`` times,
  most frequent first, as fairseq's dictionaries; decoding joins the tokens and removes the markers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from .roots import cache_root

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
BPE_MARK = "@@ "


def remove_bpe(text: str) -> str:
    """Text with subword-nmt's continuation markers removed (``"b@@ aum"`` -> ``"baum"``; fairseq's
    ``--remove-bpe``)."""
    return (text + " ").replace(BPE_MARK, "").strip()


class SentencePieceVocab:
    """A trained sentencepiece model (``path``) with the module's special ids."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import sentencepiece as spm

        self.path = Path(path)
        self.model = spm.SentencePieceProcessor(model_file=str(self.path))
        if (self.model.pad_id(), self.model.unk_id(), self.model.bos_id(), self.model.eos_id()) != (PAD, UNK, BOS,
                                                                                                   EOS):
            raise ValueError(f"{path}: special ids must be pad 0, unk 1, bos 2, eos 3 (train with sentencepiece_vocab)")

    def __len__(self) -> int:
        return self.model.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.model.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.model.decode([i for i in ids if i > EOS])


class PretokenizedVocab:
    """Whitespace tokens of already-segmented text (``@@ `` marks a subword continued by the next one)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = [*SPECIALS, *[t for t in tokens if t not in SPECIALS]]
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> PretokenizedVocab:
        """The tokens of ``texts`` that occur at least ``min_count`` times, most frequent first (ties: first seen)."""
        counts = Counter(token for text in texts for token in text.split())
        return cls([t for t, n in counts.most_common() if n >= min_count])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(token, UNK) for token in text.split()]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` with the subword markers removed (special ids dropped, ``<unk>`` kept)."""
        return remove_bpe(" ".join(self.tokens[i] for i in ids if i == UNK or i > EOS))

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.tokens, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PretokenizedVocab:
        return cls(json.loads(Path(path).read_text(encoding="utf-8")))


def sentencepiece_vocab(texts: list[str], vocab_size: int = 8000, model_type: str = "bpe",
                        character_coverage: float = 1.0) -> SentencePieceVocab:
    """A joint sentencepiece model of ``texts`` (the training split's source and target sentences), trained once
    per (text, settings) and cached (``$XDG_CACHE_HOME/encouraging/sentencepiece/<hash>/``)."""
    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must be > {len(SPECIALS)}, got {vocab_size}")
    settings = {"vocab_size": vocab_size, "model_type": model_type, "character_coverage": character_coverage}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\n")
    folder = cache_root() / "sentencepiece" / digest.hexdigest()[:16]
    model = folder / "spm.model"
    if not model.is_file():
        import sentencepiece as spm

        folder.mkdir(parents=True, exist_ok=True)
        corpus = folder / f"train{os.getpid()}.txt"  # per process: two runs may train the same model at once
        corpus.write_text("\n".join(texts) + "\n", encoding="utf-8")
        tmp = folder / f"tmp{os.getpid()}"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(tmp), vocab_size=vocab_size, model_type=model_type,
            character_coverage=character_coverage, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2)
        os.replace(f"{tmp}.model", model)  # atomic: a concurrent run sees the whole model or none
        Path(f"{tmp}.vocab").unlink(missing_ok=True)
        corpus.unlink()
    return SentencePieceVocab(model)
