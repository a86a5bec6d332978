"""ogbg-molhiv offline: SMILES to OGB graphs (lenient parses and placeholders counted), the scaffold split, the
binary loss with NaN labels masked against a float64 reference, ROC-AUC from ogb's evaluator, and the task."""

from __future__ import annotations

import csv
import gzip
import math

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")
pytest.importorskip("ogb")
pytest.importorskip("rdkit")

from encouraging.data.molecules import (  # noqa: E402
    MOLHIV_SIZES,
    load_molhiv,
    mol_graph,
    parse_smiles,
    read_smiles_csv,
    scaffold_split,
)
from encouraging.engine.config import Config, apply_overrides  # noqa: E402

ALUMINIUM = "O=C1O[Al]23(OC1=O)(OC(=O)C(=O)O2)OC(=O)C(=O)O3"  # HIV row 137: today's RDKit rejects its valence


@pytest.fixture
def hiv_rows(data_root):
    with gzip.open(data_root / "molhiv_smiles" / "hiv.csv.gz", "rt") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture
def tiny_root(tmp_path, hiv_rows, monkeypatch):
    """A data root with a 70-molecule HIV CSV (25 actives), one lenient and one unreadable SMILES among them."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    positives = [r for r in hiv_rows if r[1] == "1"][:25]
    negatives = [r for r in hiv_rows[:60] if r[1] == "0"][:43]
    # the scaffold split sends the single-molecule groups with the earliest rows to test: actives first, so that
    # validation and test hold both labels
    rows = [*positives[:5], *negatives[:20], *positives[5:], [ALUMINIUM, "0"], ["C1CC(", "1"], *negatives[20:]]
    folder = tmp_path / "data" / "molhiv_smiles"
    folder.mkdir(parents=True)
    with gzip.open(folder / "hiv.csv.gz", "wt", newline="") as f:
        csv.writer(f).writerows([["smiles", "HIV_active"], *rows])
    return tmp_path / "data"


def test_smiles_parse_strictly_then_leniently_and_give_ogbs_graphs(hiv_rows):
    from ogb.utils import smiles2graph

    for smiles, _ in hiv_rows[:40]:
        mol, how = parse_smiles(smiles)
        assert how == "strict"
        ours, theirs = mol_graph(mol), smiles2graph(smiles)
        for key in ("node_feat", "edge_index", "edge_feat"):
            assert np.array_equal(ours[key], theirs[key]), key
    mol, how = parse_smiles(ALUMINIUM)
    assert how == "lenient" and mol_graph(mol)["node_feat"].shape == (mol.GetNumAtoms(), 9)
    assert parse_smiles("C1CC(") == (None, "failed")


def test_the_scaffold_split_fills_train_then_validation_with_the_largest_groups_first():
    scaffolds = ["a"] * 5 + ["b"] * 2 + ["c"] * 2 + [""] + ["d"]
    # groups: a (5, rows 0-4), b (2, rows 5-6), c (2, rows 7-8), "" (row 9), d (row 10); 11 molecules. In the order
    # a, c, b, d, "" (largest first; equal sizes: the later first row first), each group goes to train while train
    # stays <= 8.8 molecules, else to validation while train + validation stays <= 9.9, else to test
    train, valid, test = scaffold_split(scaffolds)
    assert (train, valid, test) == ([0, 1, 2, 3, 4, 7, 8, 10], [5, 6], [9])
    assert sorted(train + valid + test) == list(range(11))


def test_the_csv_reader_keeps_missing_labels_as_nan(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("smiles,HIV_active\nCCO,1\nCCN,\n")
    smiles, labels = read_smiles_csv(path)
    assert smiles == ["CCO", "CCN"] and labels[0, 0] == 1.0 and math.isnan(labels[1, 0])
    path.write_text("smile,y\nCCO,1\n")
    with pytest.raises(ValueError, match="expected the columns 'smiles' and 'HIV_active'"):
        read_smiles_csv(path)


def test_molhiv_conversion_counts_lenient_and_unreadable_molecules_and_keeps_them(tiny_root):
    dataset, conversion = load_molhiv(tiny_root)
    assert len(dataset) == 70 and conversion["molecules"] == 70
    assert conversion["lenient_rows"] == [45] and conversion["failed_rows"] == [46]
    split = conversion["split"]
    assert sorted(split["train"] + split["valid"] + split["test"]) == list(range(70))  # nobody dropped
    assert dataset[46].num_nodes == 1 and dataset[46].y.item() == 1.0  # the placeholder keeps its label
    again, _ = load_molhiv(tiny_root)  # cached
    assert torch.equal(again[3].x, dataset[3].x)


def test_a_missing_csv_names_the_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ENCOURAGING_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)HIV SMILES are not found.*nowhere/molhiv_smiles/hiv.csv.gz"):
        load_molhiv(tmp_path / "nowhere")


def test_the_binary_step_masks_missing_labels_and_matches_a_float64_reference():
    from encouraging.engine.classification import binary_step
    from encouraging.losses import BinaryEncouragingLoss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 3, generator=gen) * 3
    target = (torch.rand(16, 3, generator=gen) > 0.7).float()
    target[torch.rand(16, 3, generator=gen) < 0.3] = float("nan")  # OGB's missing labels
    step = binary_step(logits, target, BinaryEncouragingLoss(log_end=0.5), log_end=0.5)
    z, y = logits.double()[~torch.isnan(target)], target.double()[~torch.isnan(target)]
    p = torch.where(y > 0.5, torch.sigmoid(z), torch.sigmoid(-z))  # probability of the true label
    bonus = torch.where(p <= 0.5, torch.log1p(-p), math.log(0.5) - (p - 0.5) / 0.5)  # conservative, LE 0.5
    reference = (-torch.log(p) + bonus).mean()
    assert step.count == len(y) and float(step.loss) == pytest.approx(float(reference), rel=1e-6)
    assert float(step.sums["train_ce"]) == pytest.approx(float(-torch.log(p).sum()), rel=1e-6)
    assert float(step.sums["p_target"]) == pytest.approx(float(p.sum()), rel=1e-6)


def _molecule_cfg(root, *extra):
    return apply_overrides(Config(task="ogbg"), [
        "--name=m", f"--data.root={root}", "--data.batch_size=16", "--data.eval_batch_size=4",
        "--model.kwargs={hidden: 16, layers: 2}", "--optim.name=adam", "--optim.lr=0.003", "--train.epochs=2",
        "--train.threads=1", *extra])


def test_the_task_trains_and_reports_the_ogb_evaluators_roc_auc(tiny_root, tmp_path):
    from ogb.graphproppred import Evaluator

    from encouraging.engine.task import build_task
    from encouraging.experiment import run

    final = run(_molecule_cfg(tiny_root, "--loss.name=el"), out_dir=tmp_path / "runs", db=tmp_path / "r.db",
                quiet=True)
    assert final["selection"] == "val" and 0.0 <= final["selected_test_rocauc"] <= 1.0
    task = build_task(_molecule_cfg(tiny_root))
    prepared = task.setup()
    model = prepared.model.eval()
    metrics = task.evaluate(model, prepared.test)  # several batches of 4 molecules
    z = torch.cat([model(x) for x, _ in prepared.test.epoch(0)]).detach()
    y = torch.cat([y for _, y in prepared.test.epoch(0)])
    expected = Evaluator("ogbg-molhiv").eval({"y_true": y.numpy(), "y_pred": z.numpy()})["rocauc"]
    assert metrics["rocauc"] == pytest.approx(expected)
    assert "RDKit read 1 with its valence check off (rows [45]); 1 unreadable" in prepared.notes["conversion"]


def test_molecule_runs_refuse_multiclass_losses_and_the_analyses(tiny_root, tmp_path):
    from encouraging.analysis import analyze
    from encouraging.experiment import run, run_dir_for
    from encouraging.experiment.runner import ConfigError

    with pytest.raises(ConfigError, match="loss.name must be one of .* for task ogbg"):
        run(_molecule_cfg(tiny_root, "--loss.name=focal"), out_dir=tmp_path, db=None)
    cfg = _molecule_cfg(tiny_root, "--train.epochs=1")
    run(cfg, out_dir=tmp_path / "runs", db=None, quiet=True)
    with pytest.raises(ValueError, match="is a 'ogbg' run; analyze reads the runs of tasks graph, image, longtail"):
        analyze([run_dir_for(cfg, tmp_path / "runs")], tmp_path / "a", quiet=True)


@pytest.mark.slow
def test_the_full_molhiv_scaffold_split_has_ogbs_sizes(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # converts all 41,127 molecules (about a minute)
    dataset, conversion = load_molhiv(data_root)
    assert len(dataset) == 41127
    assert tuple(len(conversion["split"][k]) for k in ("train", "valid", "test")) == MOLHIV_SIZES
    assert conversion["failed_rows"] == []
