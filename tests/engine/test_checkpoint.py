from __future__ import annotations

import pytest
import torch

from encouraging.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state():
    weights = {"w": torch.arange(6.0).view(2, 3)}
    return {"epoch": 3, "model": weights, "history": [{"a": 1.0}], "rng": torch.get_rng_state()}


def test_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(_state(), path)
    save_checkpoint({**_state(), "epoch": 4}, path)
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], torch.arange(6.0).view(2, 3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)
    torch.save(_state(), path)
    with pytest.raises(CheckpointError, match="not an encouraging checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
