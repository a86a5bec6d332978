"""An ImageFolder tree trains end to end through the DataLoader path (LoaderBatches)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from encouraging.engine.config import Config, apply_overrides
from encouraging.experiment.runner import run


def _tree(root, per_class):
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label, color in (("cat", 40), ("dog", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(color, 30, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_image_folder_trains_through_a_dataloader(tmp_path):
    _tree(tmp_path / "tree", {"train": 16, "val": 6})
    cfg = apply_overrides(Config(), [
        "--name=folder", f"--data.dataset={tmp_path / 'tree'}", "--data.image_size=16", "--data.batch_size=8",
        "--data.eval_batch_size=5", "--data.num_workers=0", "--model.name=small_cnn", "--model.kwargs={width: 4}",
        "--optim.lr=0.05", "--train.epochs=2", "--train.threads=1", "--loss.name=el"])
    final = run(cfg, out_dir=tmp_path / "runs", db=tmp_path / "r.db", quiet=True)
    assert final is not None and 0.0 <= final["final_test_acc"] <= 1.0
    assert final["final_train_acc"] > 0.5  # two well-separated colours
