"""Suite-wide fixtures: the project's offline data (``../shared/data`` beside the checkout, or $ENCOURAGING_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from encouraging import load_plugins

load_plugins()  # the built-in tasks and report sections, as the CLI loads them

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_root() -> Path | None:
    for entry in os.environ.get("ENCOURAGING_DATA", "").split(os.pathsep):
        if entry and (Path(entry) / "mnist").is_dir():
            return Path(entry)
    return SHARED_DATA if (SHARED_DATA / "mnist").is_dir() else None


@pytest.fixture
def data_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The offline datasets, exported as ENCOURAGING_DATA; skips the test when they are absent."""
    root = shared_data_root()
    if root is None:
        pytest.skip("offline datasets not found (../shared/data or $ENCOURAGING_DATA)")
    monkeypatch.setenv("ENCOURAGING_DATA", str(root))
    return root


TINY_RECIPE = """name: tiny-mnist
data: {{dataset: mnist, root: {root}, train_subset: 600, test_subset: 300, batch_size: 64}}
model: {{name: mlp, kwargs: {{hidden: [64]}}}}
optim: {{name: adam, lr: 3.0e-3, schedule: constant}}
train: {{epochs: 2, threads: 1}}
"""


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two tiny trained MNIST runs (CE and EL with log_end=1), seed 0, in one results database.

    Returns ``{"db": path, "out": runs folder, "CE": run_dir, "EL": run_dir}``; shared by the tests that
    analyse or evaluate trained models.
    """
    root = shared_data_root()
    if root is None:
        pytest.skip("offline datasets not found (../shared/data or $ENCOURAGING_DATA)")
    from encouraging.engine.config import load_config
    from encouraging.experiment.runner import grid, run_dir_for

    folder = tmp_path_factory.mktemp("trained")
    recipe = folder / "tiny.yaml"
    recipe.write_text(TINY_RECIPE.format(root=root))
    cfg = load_config(recipe)
    out, db = folder / "runs", folder / "runs" / "results.db"
    done = grid(cfg, ["ce", "el(log_end=1.0)"], [0], out_dir=out, db=db, quiet=True)
    dirs = {name: run_dir_for(one, out) for name, (one, _) in zip(("CE", "EL"), done, strict=True)}
    return {"db": db, "out": out, "recipe": recipe, **dirs}


@pytest.fixture
def longtail_features(tmp_path):
    """A 3-class array folder (460 training rows, 90 test rows) and the overrides of a 2-epoch long-tailed MLP."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "feats"
    data.mkdir()
    y = np.repeat([0, 1, 2], [300, 100, 60])
    np.save(data / "x_train.npy", (rng.normal(size=(460, 6)) + y[:, None]).astype(np.float32))
    np.save(data / "y_train.npy", y)
    np.save(data / "x_test.npy", (rng.normal(size=(90, 6)) + np.repeat([0, 1, 2], 30)[:, None]).astype(np.float32))
    np.save(data / "y_test.npy", np.repeat([0, 1, 2], 30))
    return ["--name=crt", f"--data.dataset={data}", "--data.imbalance_ratio=5", "--data.batch_size=32",
            "--data.many_above=50", "--data.few_below=20", "--model.name=mlp", "--model.kwargs={hidden: [16]}",
            "--optim.name=sgd", "--optim.lr=0.1", "--train.epochs=2", "--train.threads=1"]
