"""Where datasets are looked for: the explicit root, then ``$ENCOURAGING_DATA``, then the user cache.

The order is the search order of every loader in :mod:`encouraging.data`:

1. the explicit root (the command line's ``--data-root``), if given; it replaces step 2;
2. without an explicit root, every entry of the environment variable ``ENCOURAGING_DATA`` (several paths separated
   by ``os.pathsep``, ``:`` on POSIX), in order;
3. the default root ``$XDG_CACHE_HOME/encouraging/data`` (``~/.cache/encouraging/data`` when ``XDG_CACHE_HOME`` is
   unset).

Downloads (``download=True``) go to the explicit root when one is given and writable, else to the default root
(:func:`download_roots`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Environment variable holding extra data roots, separated by ``os.pathsep``.
DATA_ENV = "ENCOURAGING_DATA"


def cache_root() -> Path:
    """The package's user cache directory: ``$XDG_CACHE_HOME/encouraging`` or ``~/.cache/encouraging``."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    root = Path(base).expanduser() if base and Path(base).expanduser().is_absolute() else Path.home() / ".cache"
    return root / "encouraging"


def default_data_root() -> Path:
    """The last data root, where downloads go by default: ``cache_root() / "data"``."""
    return cache_root() / "data"


def data_roots(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """The data roots in search order, without duplicates (the first occurrence keeps its place).

    Args:
        explicit: a root given by the user (``--data-root``); searched first, and instead of ``ENCOURAGING_DATA``
            (what a user names on the command line beats what the environment says). ``None`` or ``""`` skips it.

    Returns:
        Paths, not checked for existence: a loader reports every path it looked at when nothing is found.
    """
    candidates: list[Path] = []
    if explicit is not None and str(explicit) != "":
        candidates.append(Path(explicit).expanduser())
    else:
        for entry in os.environ.get(DATA_ENV, "").split(os.pathsep):
            if entry.strip():
                candidates.append(Path(entry.strip()).expanduser())
    candidates.append(default_data_root())
    roots: list[Path] = []
    seen: set[str] = set()
    for path in candidates:
        key = os.path.normpath(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            roots.append(path)
    return roots


def download_roots(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where a download may go, in order: the explicit root (torchvision's ``root`` + ``download=True``
    convention), then the default cache root. ``ENCOURAGING_DATA`` entries are never written to: they usually
    name shared, read-only collections."""
    roots = [Path(explicit).expanduser()] if explicit is not None and str(explicit) != "" else []
    return [*roots, default_data_root()]


def first_writable_root(roots: list[Path]) -> Path:
    """The first of ``roots`` that exists as a writable directory or can be created; downloads go there.

    Writability is tested by creating a temporary file, so read-only mounts are skipped even for root.

    Raises:
        PermissionError: no root is writable; the message lists them.
    """
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=root):
                pass
        except OSError:
            continue
        return root
    raise PermissionError("no writable data root among: " + ", ".join(str(r) for r in roots))
