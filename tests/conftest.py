"""Suite-wide fixtures: the project's offline data (``../shared/data`` beside the checkout, or $ENCOURAGING_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
