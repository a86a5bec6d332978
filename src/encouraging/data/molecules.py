"""ogbg-molhiv built offline from the MoleculeNet HIV SMILES (the same 41,127 molecules and labels): OGB's graph
features (``ogb.utils.smiles2graph``: 9 atom and 3 bond features, RDKit) and OGB's scaffold split.

OGB's own files (the processed graphs and the split) are not available offline here; the HIV CSV is
(``<root>/molhiv_smiles/hiv.csv.gz``). :func:`load_molhiv` converts it once and caches the graphs, the split and a
record of the conversion under the user cache, keyed by the CSV's hash.

* **Parsing.** RDKit's current valence rules reject a few molecules that OGB's older RDKit accepted (7 of HIV's with
  RDKit 2026.9). Those are read with the valence check off (the same features from ogb's feature functions);
  one that RDKit cannot read even so becomes a placeholder graph of one featureless atom, so it is never dropped
  from any split. Both are counted, with their row numbers, in the dataset's ``conversion`` record.
* **Scaffold split** (Hu et al. 2020, the split OGB ships): molecules grouped by Bemis-Murcko scaffold (with
  chirality), groups ordered by size (largest first; ties by first row), then filled into train until 80% of all
  molecules, validation until 90%, test the rest. Our split depends on the CSV's row order, which is MoleculeNet's
  (OGB's is the same order, not verified offline): the sizes match OGB's (32,901 / 4,113 / 4,113).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .roots import DATA_ENV, cache_root, data_roots

MOLHIV_CSV = Path("molhiv_smiles") / "hiv.csv.gz"
MOLHIV_SIZES = (32901, 4113, 4113)  # OGB's scaffold split of ogbg-molhiv


def find_molhiv(roots: list[Path]) -> tuple[Path | None, list[str]]:
    looked = [str(root / MOLHIV_CSV) for root in roots]
    return next((Path(p) for p in looked if Path(p).is_file()), None), looked


def read_smiles_csv(path: str | os.PathLike[str], label: str = "HIV_active") -> tuple[list[str], np.ndarray]:
    """SMILES and labels ``(N, 1)`` float (NaN where empty) of a MoleculeNet-style CSV (``smiles,<label>``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "smiles" not in reader.fieldnames or label not in reader.fieldnames:
            raise ValueError(f"{path}: expected the columns 'smiles' and {label!r}, got {reader.fieldnames}")
        rows = [(r["smiles"], r[label]) for r in reader]
    labels = np.array([[float(y) if y.strip() else math.nan] for _, y in rows], dtype=np.float32)
    return [s for s, _ in rows], labels


def parse_smiles(smiles: str) -> tuple[Any, str]:
    """``(mol, how)``: RDKit's strict parse (``how="strict"``), else the parse with the valence check off
    (``"lenient"``), else ``(None, "failed")``."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # rejected molecules are counted and reported, not printed one by one
    mol = Chem.MolFromSmiles(smiles)
    if mol is not None:
        return mol, "strict"
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return None, "failed"
    try:
        mol.UpdatePropertyCache(strict=False)
        Chem.SanitizeMol(mol, Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_PROPERTIES)
    except Exception:  # noqa: BLE001  (RDKit raises several kinds; any of them means unreadable)
        return None, "failed"
    return mol, "lenient"


def mol_graph(mol: Any) -> dict[str, Any]:
    """``smiles2graph``'s dictionary for an RDKit molecule: ogb's ``smiles2graph`` only takes a SMILES it parses
    strictly itself, so a leniently parsed molecule gets the same features from ogb's feature functions here."""
    from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector

    x = np.array([atom_to_feature_vector(a) for a in mol.GetAtoms()], dtype=np.int64).reshape(-1, 9)
    pairs, feats = [], []
    for bond in mol.GetBonds():
        i, j, f = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_to_feature_vector(bond)
        pairs += [(i, j), (j, i)]
        feats += [f, f]
    edge_index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    return {"edge_index": edge_index, "edge_feat": np.array(feats, dtype=np.int64).reshape(-1, 3), "node_feat": x,
            "num_nodes": len(x)}


def murcko_scaffold(mol: Any) -> str:
    """The Bemis-Murcko scaffold of ``mol`` as isomeric SMILES ("" for none, or no molecule). The same string as
    RDKit's ``MurckoScaffoldSmiles(mol=mol, includeChirality=True)``, without its valence re-check, which rejects
    some of HIV's molecules (organometallics) that OGB's RDKit accepted."""
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MurckoDecompose(mol), isomericSmiles=True) if mol is not None else ""


def scaffold_split(scaffolds: list[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                   ) -> tuple[list[int], list[int], list[int]]:
    """Hu et al. (2020)'s deterministic scaffold split of molecules with these scaffolds (module docstring)."""
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    ordered = sorted(groups.values(), key=lambda members: (len(members), members[0]), reverse=True)
    n = len(scaffolds)
    train_cut, valid_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for members in ordered:
        if len(train) + len(members) <= train_cut:
            train += members
        elif len(train) + len(valid) + len(members) <= valid_cut:
            valid += members
        else:
            test += members
    return sorted(train), sorted(valid), sorted(test)


def _convert(csv_path: Path, target: Path) -> None:
    """Graphs, scaffold split and conversion record of ``csv_path``, written (atomically) under ``target``."""
    from ogb.utils import smiles2graph
    from torch_geometric.data import Data, InMemoryDataset

    smiles, labels = read_smiles_csv(csv_path)
    graphs, scaffolds, lenient, failed = [], [], [], []
    for row, text in enumerate(smiles):
        mol, how = parse_smiles(text)
        if how == "strict":
            graph = smiles2graph(text)
        elif how == "lenient":
            graph, _ = mol_graph(mol), lenient.append(row)
        else:
            failed.append(row)
            graph = {"edge_index": np.zeros((2, 0), np.int64), "edge_feat": np.zeros((0, 3), np.int64),
                     "node_feat": np.zeros((1, 9), np.int64), "num_nodes": 1}
        scaffolds.append(murcko_scaffold(mol))
        graphs.append(Data(x=torch.from_numpy(graph["node_feat"]), edge_index=torch.from_numpy(graph["edge_index"]),
                           edge_attr=torch.from_numpy(graph["edge_feat"]), y=torch.from_numpy(labels[row:row + 1]),
                           num_nodes=graph["num_nodes"]))
    train, valid, test = scaffold_split(scaffolds)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f"graphs.pt.tmp{os.getpid()}"  # per process: two runs may convert at once
    InMemoryDataset.save(graphs, str(tmp))
    record = {"source": str(csv_path), "molecules": len(smiles), "lenient_rows": lenient, "failed_rows": failed,
              "split": {"train": train, "valid": valid, "test": test}}
    (target / f"conversion.json.tmp{os.getpid()}").write_text(json.dumps(record))
    os.replace(tmp, target / "graphs.pt")
    os.replace(target / f"conversion.json.tmp{os.getpid()}", target / "conversion.json")


def load_molhiv(root: str | os.PathLike[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """``(dataset, conversion)``: ogbg-molhiv as a PyG ``InMemoryDataset`` (``x`` int64 ``(n, 9)``, ``edge_attr``
    int64 ``(e, 3)``, ``y`` float ``(1, 1)`` per graph) and the conversion record (``split``: train / valid / test
    row indices; ``lenient_rows``, ``failed_rows``). Converted on first use (about a minute), then cached."""
    csv_path, looked = find_molhiv(data_roots(root))
    if csv_path is None:
        raise FileNotFoundError("ogbg-molhiv: the HIV SMILES are not found (never downloaded here). Looked at:\n"
                                + "\n".join(f"  {p}" for p in looked)
                                + f"\nPut MoleculeNet's HIV.csv (columns smiles, HIV_active; gzipped) at "
                                  f"<root>/{MOLHIV_CSV} and pass --data-root <root> (or set {DATA_ENV})")
    from torch_geometric.data import InMemoryDataset

    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()[:12]
    target = cache_root() / "ogbg-molhiv" / digest
    if not (target / "graphs.pt").is_file() or not (target / "conversion.json").is_file():
        _convert(csv_path, target)

    class Molecules(InMemoryDataset):
        def __init__(self) -> None:
            super().__init__(None)
            self.load(str(target / "graphs.pt"))

    return Molecules(), json.loads((target / "conversion.json").read_text())
