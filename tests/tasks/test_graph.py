"""The graph task on PyTorch Geometric: TU data from the shared raw files (never downloaded), seeded splits, the
SAGPool and GIN networks, a short run with selection on the validation loss, analyses and clear errors."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch

pytest.importorskip("torch_geometric")

from encouraging.data.graphs import find_tu_raw, load_tu, random_split  # noqa: E402
from encouraging.engine.config import Config, apply_overrides  # noqa: E402


@pytest.fixture
def tu_root(tmp_path, data_root, monkeypatch):
    """A private data root with copies of the shared TU folders (and a private cache for PyG's processed files)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for name in ("MUTAG", "PROTEINS"):
        shutil.copytree(data_root / "tu" / name, root / "tu" / name)
    return root


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tu_datasets_load_from_the_raw_files_without_the_network(tu_root, no_network):
    proteins = load_tu("PROTEINS", tu_root)
    assert (len(proteins), proteins.num_features, proteins.num_classes) == (1113, 3, 2)  # one-hot node labels
    assert int(proteins.x.shape[0]) == 43471  # every node of the README's count
    mutag = load_tu("MUTAG", tu_root)
    assert (len(mutag), mutag.num_features, mutag.num_classes) == (188, 7, 2)
    assert len(load_tu("MUTAG", tu_root)) == 188  # the processed cache is reused


def test_a_missing_tu_file_or_dataset_is_named(tu_root):
    (tu_root / "tu" / "MUTAG" / "MUTAG_graph_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match="lacks MUTAG_graph_labels.txt"):
        load_tu("MUTAG", tu_root)
    with pytest.raises(FileNotFoundError, match=r"(?s)TU dataset NCI109 not found.*tu/NCI109.*NCI109.zip"):
        load_tu("NCI109", tu_root)
    folder, looked = find_tu_raw("PROTEINS", [tu_root])
    assert folder == tu_root / "tu" / "PROTEINS" and looked == [str(folder)]


def test_random_splits_have_the_sizes_and_are_fixed_per_seed():
    train, val, test = random_split(1113, seed=3)
    assert (len(train), len(val), len(test)) == (891, 111, 111)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(1113))
    again = random_split(1113, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    assert not torch.equal(test, random_split(1113, seed=4)[2])
    with pytest.raises(ValueError, match="summing to 1"):
        random_split(10, 0, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="leave none for training"):
        random_split(2, 0, (0.0, 0.5, 0.5))


@pytest.mark.parametrize("name", ["sagpool", "gin"])
def test_the_graph_networks_map_a_batch_to_logits_and_features(tu_root, name):
    from torch_geometric.loader import DataLoader

    from encouraging.models import create_model, get_classifier

    data = load_tu("MUTAG", tu_root)
    model = create_model(name, num_classes=2, in_channels=data.num_features)
    batch = next(iter(DataLoader(data[:10], batch_size=10)))
    model.eval()
    features = model.forward_features(batch)
    assert model(batch).shape == (10, 2) and torch.allclose(get_classifier(model)(features), model(batch))
    if name == "sagpool":  # the paper's layout: 3 GCNConv(128) + SAGPooling, MLP 256 -> 128 -> 64 -> C
        assert [c.out_channels for c in model.convs] == [128, 128, 128] and features.shape == (10, 64)
        assert [p.ratio for p in model.pools] == [0.5, 0.5, 0.5]


def _graph_cfg(root, *extra):
    return apply_overrides(Config(task="graph"), [
        "--name=g", f"--data.root={root}", "--data.dataset=MUTAG", "--data.batch_size=32", "--model.name=sagpool",
        "--model.kwargs={hidden: 16}", "--optim.name=adam", "--optim.lr=0.005", "--optim.schedule=constant",
        "--train.epochs=3", "--train.threads=1", *extra])


def test_a_graph_run_selects_on_the_validation_loss_and_is_recorded(tu_root, tmp_path):
    from encouraging.experiment import run, run_dir_for
    from encouraging.results import ResultsStore, table_rows

    cfg = _graph_cfg(tu_root, "--train.select_on=loss")
    final = run(cfg, out_dir=tmp_path / "runs", db=tmp_path / "r.db", quiet=True)
    history = [json.loads(line) for line in
               (run_dir_for(cfg, tmp_path / "runs") / "metrics.jsonl").read_text().splitlines()]
    best = min(history, key=lambda m: (m["val_loss"], m["epoch"]))
    assert final["selected_epoch"] == best["epoch"] and final["selected_val_loss"] == best["val_loss"]
    assert final["selected_test_acc"] == best["test_acc"]
    (row,) = table_rows(ResultsStore(tmp_path / "r.db"))
    assert ("a random 0.8/0.1/0.1 split of 188 graphs per run (split seed: the run seed): 150 train, 19 validation, "
            "19 test") in row["table_notes"]
    assert row["test_note"] == "MUTAG: 19 test graphs (random 0.8/0.1/0.1 split, split seed: the run seed)"


def test_ce_and_el_runs_of_one_seed_share_their_split(tu_root, tmp_path):
    from encouraging.engine.task import build_task

    def split_of(cfg):
        prepared = build_task(cfg).setup()
        return prepared.notes["split_seed"], torch.cat([y for _, y in prepared.test.epoch(0)])

    ce = split_of(_graph_cfg(tu_root))
    el_seed, el_test = split_of(_graph_cfg(tu_root, "--loss.name=el"))
    assert el_seed == ce[0] == 0 and torch.equal(el_test, ce[1])
    other_seed, other_test = split_of(_graph_cfg(tu_root, "--train.seed=1"))
    assert other_seed == 1 and not torch.equal(other_test, ce[1])
    fixed_seed, fixed_test = split_of(_graph_cfg(tu_root, "--train.seed=1", "--data.split_seed=0"))
    assert fixed_seed == 0 and torch.equal(fixed_test, ce[1])


def test_analyses_run_on_a_graph_run(tu_root, tmp_path):
    from encouraging.analysis import AnalysisConfig, analyze_run
    from encouraging.experiment import load_run, run, run_dir_for

    cfg = _graph_cfg(tu_root, "--train.epochs=1")
    run(cfg, out_dir=tmp_path / "runs", db=None, quiet=True)
    loaded = load_run(run_dir_for(cfg, tmp_path / "runs"), device="cpu")
    rows = analyze_run(loaded, AnalysisConfig(grad_examples=20))
    assert set(rows) == {"margins", "energy", "gradient", "probe", "per_class"}
    train_bins = [r for r in rows["gradient"] if r["type"] == "bin" and r["split"] == "train"]
    assert sum(r["param_count"] for r in train_bins) == 20  # per-graph parameter gradients, one backward each
    probe = {r["method"]: r for r in rows["probe"]}
    assert probe["linear"]["feature_dim"] == 8  # the pooled graph embedding: hidden // 2


def test_graph_per_example_gradient_norms_match_single_graph_backward(tu_root):
    from torch_geometric.loader import DataLoader

    from encouraging.analysis.gradients import _looped_grad_norms
    from encouraging.losses import EncouragingLoss
    from encouraging.models import create_model

    data = load_tu("MUTAG", tu_root)
    model = create_model("gin", num_classes=2, in_channels=data.num_features, hidden=8, layers=2).eval()
    criterion = EncouragingLoss(log_end=0.75, reduction="none")
    batch = next(iter(DataLoader(data[:4], batch_size=4)))
    norms = _looped_grad_norms(model, criterion, batch, batch.y, keep=3)
    for i in range(3):
        one = next(iter(DataLoader(data[i:i + 1], batch_size=1)))
        model.zero_grad()
        criterion(model(one), one.y).sum().backward()
        expected = torch.stack([p.grad.double().pow(2).sum() for p in model.parameters()]).sum().sqrt()
        assert norms[i] == pytest.approx(float(expected), rel=1e-4)


def test_bad_graph_configs_are_refused_before_training(tu_root, tmp_path):
    from encouraging.experiment import run
    from encouraging.experiment.runner import ConfigError

    with pytest.raises(ConfigError, match="data.split must be three fractions"):
        run(_graph_cfg(tu_root, "--data.split=[0.9, 0.1, 0.0]"), out_dir=tmp_path, db=None)
    with pytest.raises(ConfigError, match="train.select_on must be"):
        run(_graph_cfg(tu_root, "--train.select_on=acc"), out_dir=tmp_path, db=None)


def test_image_evaluations_refuse_graph_runs_with_a_clear_message(tu_root, tmp_path, capsys):
    from encouraging.cli import main
    from encouraging.experiment import run, run_dir_for

    cfg = _graph_cfg(tu_root, "--train.epochs=1")
    run(cfg, out_dir=tmp_path / "runs", db=None, quiet=True)
    where = run_dir_for(cfg, tmp_path / "runs")
    assert main(["eval", "ood", str(where), "--ood", "fashion_mnist", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"eval ood: {where} is a 'graph' run; ood evaluation reads the runs of tasks image, longtail only" in \
        " ".join(err.split())
    assert main(["eval", "attack", str(where), "--attack", "fgsm", "--eps", "0.1", "--out", str(tmp_path / "a")]) == 2
    assert "is a 'graph' run" in capsys.readouterr().err


def test_the_deferred_bonus_starts_at_its_epoch_in_a_graph_run(tu_root, tmp_path):
    from encouraging.experiment import run, run_dir_for

    cfg = _graph_cfg(tu_root, "--loss.name=el", "--loss.log_end=0.5", "--loss.defer=2", "--train.epochs=4")
    run(cfg, out_dir=tmp_path / "runs", db=None, quiet=True)
    history = [json.loads(line) for line in (run_dir_for(cfg, tmp_path / "runs") / "metrics.jsonl").read_text()
               .splitlines()]
    bonus = [m["train_bonus"] for m in history]
    assert bonus[:2] == [0.0, 0.0] and all(b < 0 for b in bonus[2:])  # plain CE for epochs 0-1, then the bonus
