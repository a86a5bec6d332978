"""List-file datasets: one ``relative/path label`` per line, the layout of ImageNet-LT, Places-LT and iNaturalist 2018
in Kang et al. (2020)'s classifier-balancing code (``ImageNet_LT_train.txt``, ``iNaturalist18_val.txt``, ...).

A folder holds one training list (a file ``*.txt`` whose name has the word ``train``) and one test list (the word
``test``, or lacking one ``val``: iNaturalist 2018 reports on its validation set). Image paths are relative to that
folder (link the image directories into it). torchvision reads class-per-directory trees (``ImageFolder``) but no
list files, hence :class:`ListFileDataset`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

TEST_WORDS = ("test", "val")  # the test list's word, in order of preference


def _words(path: Path) -> list[str]:
    return re.split(r"[_\-.\s]+", path.stem.lower())


def find_list_files(folder: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """``(train list, test list)`` of ``folder``, or None when it has no training list; ValueError when a split has
    several candidates or the test list is missing."""
    folder = Path(folder)
    lists = sorted(p for p in folder.glob("*.txt") if p.is_file()) if folder.is_dir() else []

    def named(word: str) -> list[Path]:
        return [p for p in lists if word in _words(p)]

    train = named("train")
    if not train:
        return None
    for word in TEST_WORDS:
        if named(word):
            test = named(word)
            break
    else:
        raise ValueError(f"{folder}: training list {train[0].name} but no test list (*test*.txt or *val*.txt)")
    for split, found in (("training", train), ("test", test)):
        if len(found) > 1:
            raise ValueError(f"{folder}: several {split} lists ({', '.join(p.name for p in found)}); keep one")
    return train[0], test[0]


def read_list(path: str | os.PathLike[str]) -> list[tuple[str, int]]:
    """The ``(relative path, label)`` pairs of a list file; a malformed line raises naming file and line."""
    samples = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{number}: expected 'relative/path label' with a label >= 0, got {line!r}")
        samples.append((parts[0], int(parts[1])))
    if not samples:
        raise ValueError(f"{path} lists no images")
    return samples


class ListFileDataset(Dataset):
    """The images of a list file, read with torchvision's default loader (PIL, RGB): ``(image, label)`` items,
    ``targets`` the labels in list order, ``transform`` applied to each image (as ``ImageFolder``'s)."""

    def __init__(self, list_file: str | os.PathLike[str], transform: Any = None) -> None:
        self.list_file, self.transform = Path(list_file), transform
        self.root = str(self.list_file.parent)
        self.samples = read_list(self.list_file)
        self.targets = [label for _, label in self.samples]
        first = Path(self.root) / self.samples[0][0]
        if not first.is_file():
            raise FileNotFoundError(f"{self.list_file}: its first image {first} does not exist (paths are relative "
                                    f"to {self.root}: link the image directories there)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import default_loader  # torchvision's import takes seconds: only when read

        path, label = self.samples[index]
        image = default_loader(os.path.join(self.root, path))
        return (self.transform(image) if self.transform is not None else image), label
