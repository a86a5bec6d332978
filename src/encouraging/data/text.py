"""Parallel corpora for translation: aligned plain-text files, one sentence per line (gzip allowed).

A corpus is a source and a target file per split. :data:`CORPORA` names the ones the project knows, each as files
relative to a data root (searched like every dataset: the explicit root, ``$ENCOURAGING_DATA``, the cache):

* ``multi30k_de_en``: Multi30k task 1, raw text (``multi30k/{train,val,test_2016_flickr}.{de,en}.gz``);
* ``iwslt14_de_en``: IWSLT'14 De-En as fairseq's ``prepare-iwslt14.sh`` leaves it, tokenised, lowercased and
  BPE'd (``iwslt14.tokenized.de-en/{train,valid,test}.{de,en}``; users bring it: the training split is not
  offline here);
* ``iwslt14_de_en_eval``: its validation and test splits only, as in ``../shared/data`` (``bpe_valid``,
  ``bpe_test``), for evaluating a model trained elsewhere.

Any folder of aligned files is a corpus too (:func:`folder_corpus`: ``train``, ``valid`` (or ``val`` / ``dev``)
and ``test``, each ``<split>.<language>[.gz]``), and so is any pair of files (:func:`read_parallel`). Files of one
split must have equally many lines: a mismatch names both files and their counts.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

from .roots import DATA_ENV, data_roots


@dataclass(frozen=True)
class Corpus:
    """A parallel corpus: per split, the source and target file stems relative to a data root (``.gz`` optional).

    ``bpe``: the text is already split into subwords with ``@@`` continuation markers (fairseq's subword-nmt
    output), so it is used as it is and de-BPE'd before scoring."""

    name: str
    source: str
    target: str
    splits: dict[str, str] = field(default_factory=dict)  # split -> file stem, "<stem>.<lang>[.gz]"
    bpe: bool = False
    description: str = ""

    def files(self, split: str, root: Path) -> tuple[Path, Path]:
        if split not in self.splits:
            raise ValueError(f"corpus {self.name} has the splits {sorted(self.splits)}, not {split!r}")
        stem = root / self.splits[split]
        return _existing(Path(f"{stem}.{self.source}")), _existing(Path(f"{stem}.{self.target}"))


def _existing(path: Path) -> Path:
    """``path``, or ``path.gz`` when only that exists (``path`` when neither does)."""
    gz = path.with_name(path.name + ".gz")
    return gz if not path.is_file() and gz.is_file() else path


CORPORA: dict[str, Corpus] = {c.name: c for c in (
    Corpus("multi30k_de_en", "de", "en", {"train": "multi30k/train", "valid": "multi30k/val",
                                          "test": "multi30k/test_2016_flickr"},
           description="Multi30k task 1 (29,000 / 1,014 / 1,000 image captions), raw text"),
    Corpus("iwslt14_de_en", "de", "en", {s: f"iwslt14.tokenized.de-en/{s}" for s in ("train", "valid", "test")},
           bpe=True, description="IWSLT'14 De-En, fairseq's prepare-iwslt14.sh output (160k / 7,283 / 6,750 pairs)"),
    Corpus("iwslt14_de_en_eval", "de", "en", {"valid": "iwslt14_de_en_eval/bpe_valid",
                                              "test": "iwslt14_de_en_eval/bpe_test"},
           bpe=True, description="IWSLT'14 De-En validation and test only (../shared/data)"),
)}


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The lines of a UTF-8 text file (``.gz`` read through gzip), without their line ends."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as f:
        return [line.rstrip("\r\n") for line in f]


def read_parallel(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """The aligned sentence pairs of two files; ValueError naming both files when their line counts differ."""
    for path in (source, target):
        if not Path(path).is_file():
            raise FileNotFoundError(f"corpus file not found: {path}")
    src, tgt = read_lines(source), read_lines(target)
    if len(src) != len(tgt):
        raise ValueError(f"misaligned corpus: {source} has {len(src)} lines, {target} has {len(tgt)}")
    return src, tgt


SPLIT_STEMS = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


def folder_corpus(folder: str | os.PathLike[str], source: str, target: str, *, bpe: bool = False) -> Corpus:
    """A corpus of a folder's ``<split>.<source>`` / ``<split>.<target>`` files (``.gz`` allowed): ``train``,
    ``valid`` (or ``val`` / ``dev``) and ``test``; ``bpe``: the text is already in ``@@`` subwords. A split is
    left out when neither of its files exists; a split with only one of the two is refused, naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {folder}")
    splits = {}
    for split, stems in SPLIT_STEMS.items():
        for stem in stems:
            found = [_existing(folder / f"{stem}.{lang}").is_file() for lang in (source, target)]
            if all(found):
                splits[split] = stem
                break
            if any(found):
                lang = target if found[0] else source
                raise FileNotFoundError(f"corpus folder {folder}: {stem}.{lang}[.gz] is missing beside its pair")
    if "train" not in splits or "valid" not in splits or "test" not in splits:
        raise FileNotFoundError(f"corpus folder {folder} needs train, valid (or val, dev) and test files named "
                                f"<split>.{source} and <split>.{target} (.gz allowed); found splits {sorted(splits)}")
    return Corpus(str(folder), source, target, splits, bpe=bpe, description=f"the files of {folder}")


def find_corpus(name: str, root: str | os.PathLike[str] | None = None) -> tuple[Corpus, Path]:
    """The corpus ``name`` and the first data root holding all of its splits' files."""
    if name not in CORPORA:
        raise ValueError(f"corpus must be one of {sorted(CORPORA)} (or a folder of files), got {name!r}")
    corpus, looked = CORPORA[name], []
    for candidate in data_roots(root):
        files = [p for split in corpus.splits for p in corpus.files(split, candidate)]
        if all(p.is_file() for p in files):
            return corpus, candidate
        looked += [str(p) for p in files if not p.is_file()][:2]
    raise FileNotFoundError(f"corpus {name} not found (never downloaded here); missing, among others:\n"
                            + "\n".join(f"  {p}" for p in looked)
                            + f"\nPut its files under a data root and pass --data-root <root> (or set {DATA_ENV})")
