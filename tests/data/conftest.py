"""Fixtures for the data tests: a private cache and no inherited data roots, unless a test asks for the real data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``XDG_CACHE_HOME`` under ``tmp_path`` and no ``ENCOURAGING_DATA``: only explicit roots count."""
    cache = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ENCOURAGING_DATA", raising=False)
    return cache


def real_data_root() -> Path | None:
    """The project's offline data: ``$ENCOURAGING_DATA`` (first entry holding mnist/) or ``../shared/data``."""
    for entry in os.environ.get("ENCOURAGING_DATA", "").split(os.pathsep):
        if entry and (Path(entry) / "mnist").is_dir():
            return Path(entry)
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return default if (default / "mnist").is_dir() else None
