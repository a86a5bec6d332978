"""Atomic, verified checkpoints.

A checkpoint file is a small header (magic, payload length, SHA-256 of the payload) followed by the
``torch.save`` payload. It is written to a temporary file in the same directory, flushed and fsynced, then
renamed over the old one, so a run killed at any moment leaves either the previous checkpoint or the new one.
Loading checks the header, so a truncated or corrupted file is refused with a clear message instead of being
half-loaded. Payloads are read with ``weights_only=True``: they hold tensors and plain Python values only.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

MAGIC = b"ENCOURAGING-CKPT-1\n"


class CheckpointError(RuntimeError):
    """The checkpoint is missing, truncated, corrupted or not one of ours."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = MAGIC + f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n".encode()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not an encouraging checkpoint (bad header); refusing to load it")
    try:
        line_end = data.index(b"\n", len(MAGIC))
        length_text, digest = data[len(MAGIC):line_end].decode().split()
        length = int(length_text)
    except ValueError:
        raise CheckpointError(f"{path} has a corrupt header; refusing to load it") from None
    payload = data[line_end + 1:]
    if len(payload) != length:
        raise CheckpointError(
            f"{path} is truncated: expected {length} payload bytes, found {len(payload)} "
            "(the run was probably killed while an older version wrote it); refusing to load it"
        )
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CheckpointError(f"{path} is corrupt: its checksum does not match; refusing to load it")
    return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of model state dicts (fairseq's ``average_checkpoints``): floating tensors averaged in
    float64 and cast back; other entries (BatchNorm's step counters) taken from the last state."""
    if not states:
        raise ValueError("average_state_dicts needs at least one state dict")
    keys = list(states[-1])
    if any(list(s) != keys for s in states):
        raise ValueError("the state dicts to average have different keys: they are not of one model")
    out = {}
    for key in keys:
        last = states[-1][key]
        if last.is_floating_point():
            out[key] = (sum(s[key].double() for s in states) / len(states)).to(last.dtype)
        else:
            out[key] = last
    return out
