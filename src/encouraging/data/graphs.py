"""Graph classification datasets through PyTorch Geometric: the TU benchmarks (PROTEINS, NCI1, MUTAG, ...) from
local raw files, and seeded random splits.

PyG's ``TUDataset(root, name)`` reads ``<root>/<name>/raw/<name>_*.txt`` and downloads whenever a raw file is
missing. :func:`load_tu` looks for the raw files itself in every data root (``<root>/tu/<NAME>/``, the layout of
``../shared/data``, or PyG's ``<root>/<NAME>/raw/``), links them into a writable cache folder and builds the dataset
there, so PyG never downloads; when no root has them the error names every path looked at and how to get the data.
PyG is imported only when a dataset is loaded (its import takes seconds).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .roots import DATA_ENV, cache_root, data_roots

TU_REQUIRED = ("A", "graph_indicator", "graph_labels")  # what TUDataset cannot do without
TU_URL = "https://chrsmrrs.github.io/datasets/docs/datasets/"


def _tu_candidates(name: str, root: Path) -> list[Path]:
    return [root / "tu" / name, root / name / "raw", root / name]


def find_tu_raw(name: str, roots: list[Path]) -> tuple[Path | None, list[str]]:
    """The first folder holding ``<name>_{A,graph_indicator,graph_labels}.txt``, and every folder looked at.

    A folder holding some but not all of them raises ``FileNotFoundError`` naming the missing files."""
    looked = []
    for root in roots:
        for folder in _tu_candidates(name, root):
            looked.append(str(folder))
            present = [part for part in TU_REQUIRED if (folder / f"{name}_{part}.txt").is_file()]
            if len(present) == len(TU_REQUIRED):
                return folder, looked
            if present:
                missing = [f"{name}_{part}.txt" for part in TU_REQUIRED if part not in present]
                raise FileNotFoundError(f"TU dataset {name}: {folder} lacks {', '.join(missing)}")
    return None, looked


def load_tu(name: str, root: str | os.PathLike[str] | None = None) -> Any:
    """PyG's ``TUDataset`` of ``name`` (node labels one-hot, no continuous node attributes: the setting of the
    paper's SAGPool code), built from the first data root holding its raw files, never downloaded."""
    folder, looked = find_tu_raw(name, data_roots(root))
    if folder is None:
        raise FileNotFoundError(
            f"TU dataset {name} not found (it is never downloaded here). Looked for {name}_A.txt, "
            f"{name}_graph_indicator.txt and {name}_graph_labels.txt in:\n" + "\n".join(f"  {p}" for p in looked)
            + f"\nGet {name}.zip from {TU_URL}, unzip it into <root>/tu/{name}/ and pass --data-root <root> (or "
              f"set {DATA_ENV})")
    from torch_geometric.datasets import TUDataset

    # a writable folder per source: PyG writes processed/ beside raw/, and the source may be read-only
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    base = cache_root() / "tu" / key
    raw = base / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for source in folder.glob(f"{name}_*.txt"):
        try:
            (raw / source.name).symlink_to(source.resolve())
        except FileExistsError:  # linked before (or by a run starting beside this one)
            pass
    return TUDataset(str(base), name)


def random_split(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Indices ``(train, val, test)`` of a random split of ``n`` examples, the same for the same ``(n, seed)``:
    ``round(fraction * n)`` examples for validation and test each, the rest for training (80/10/10 by default)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_val, n_test = round(fractions[1] * n), round(fractions[2] * n)
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} examples leave none for training with fractions {fractions}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val + n_test:], order[:n_val], order[n_val:n_val + n_test]
