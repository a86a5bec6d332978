"""Two CPU processes under torchrun (gloo) reproduce one process with the same global batch, up to float noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from encouraging.engine.config import Config, apply_overrides
from encouraging.experiment.runner import run_dir_for

COMMON = ["--data.dataset=mnist", "--data.train_subset=1024", "--data.test_subset=300", "--model.name=mlp",
          "--optim.lr=0.05", "--train.epochs=2", "--train.threads=1", "--loss.name=el", "--data.augment=none"]


def _history(cfg: Config, out) -> list[dict]:
    lines = (run_dir_for(cfg, out) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.timeout(600)
def test_two_process_ddp_matches_one_process(tmp_path, data_root):
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text("name: ddp\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = ["train", str(recipe), *COMMON, "--data.batch_size=64", "--quiet", "--out", str(tmp_path / "one")]
    subprocess.run([sys.executable, "-m", "encouraging.cli", *single], env=env, check=True, timeout=300)
    ddp = ["train", str(recipe), *COMMON, "--data.batch_size=32", "--quiet", "--out", str(tmp_path / "two")]
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    "-m", "encouraging.cli", *ddp], env=env, check=True, timeout=300)

    one = _history(apply_overrides(Config(), ["--name=ddp", *COMMON, "--data.batch_size=64"]), tmp_path / "one")
    two = _history(apply_overrides(Config(), ["--name=ddp", *COMMON, "--data.batch_size=32"]), tmp_path / "two")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "p_target", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-4), key
