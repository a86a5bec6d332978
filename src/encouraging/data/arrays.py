"""Read ``.npy`` and xz-compressed ``.npy.xz`` arrays, caching the decompressed file once per source.

Decompressing is slow on a small machine (CIFAR-10's ``x_train.npy.xz``: about 10 s on 2 cores), loading a plain
``.npy`` is not (about 0.1 s for the same 150 MB). So the first load of a ``.npy.xz`` streams the decompressed
bytes to ``cache_root()/arrays/<dir>_<name>-<key>.npy``, and later loads read that file. The key hashes the source's
absolute path, size and modification time: a changed source gets a new cache file. The file is written to a
temporary name in the same directory and moved into place with ``os.replace``, so a killed or concurrent writer
never leaves a partial cache file under the final name. If the cache directory is not writable the array is
decompressed in memory instead (with a warning), so a read-only home never stops a run.

Pickled (object) arrays are always refused (``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .roots import cache_root

#: The suffixes ``load_array`` accepts.
SUFFIXES = (".npy", ".npy.xz")


def array_cache_dir() -> Path:
    """Where decompressed arrays are cached: ``cache_root() / "arrays"``."""
    return cache_root() / "arrays"


def find_array(stem: str | os.PathLike[str]) -> Path | None:
    """``<stem>.npy`` if it exists, else ``<stem>.npy.xz`` if it exists, else ``None``."""
    for suffix in SUFFIXES:
        candidate = Path(f"{os.fspath(stem)}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def cached_path(path: str | os.PathLike[str]) -> Path:
    """The cache file a ``.npy.xz`` source decompresses to (whether or not it exists yet)."""
    src = Path(path).expanduser().resolve()
    stat = src.stat()
    key = hashlib.sha256(f"{src}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    name = src.name[: -len(".npy.xz")]
    return array_cache_dir() / f"{src.parent.name}_{name}-{key}.npy"


def load_array(path: str | os.PathLike[str], *, mmap: bool = False, cache: bool = True) -> np.ndarray:
    """Load a ``.npy`` or ``.npy.xz`` file.

    Args:
        path: the file; its name must end in ``.npy`` or ``.npy.xz``.
        mmap: return a read-only memory map (``np.load(mmap_mode="r")``) instead of reading the array into memory.
            For ``.npy.xz`` this maps the cache file, so it needs ``cache=True`` and a writable cache.
        cache: for ``.npy.xz``, decompress once into the user cache and read from there afterwards.

    Returns:
        The array. ``allow_pickle`` is always ``False``: object arrays raise ``ValueError``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the suffix is neither ``.npy`` nor ``.npy.xz``, or the content is not a plain ``.npy`` array.
    """
    path = Path(path).expanduser()
    name = path.name
    if not name.endswith(SUFFIXES):
        raise ValueError(f"path must end in one of {list(SUFFIXES)}, got {str(path)!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no such array file: {path}")
    mode = "r" if mmap else None
    if name.endswith(".npy"):
        return np.load(path, mmap_mode=mode, allow_pickle=False)
    if cache:
        target = cached_path(path)
        if not target.is_file():
            try:
                _decompress_to(path, target)
            except OSError as err:
                warnings.warn(
                    f"could not cache the decompressed {path} under {target.parent} ({err}); decompressing in "
                    "memory, which repeats on every load",
                    RuntimeWarning,
                    stacklevel=2,
                )
                target = None
        if target is not None:
            try:
                return np.load(target, mmap_mode=mode, allow_pickle=False)
            except (ValueError, OSError, EOFError):
                # A damaged cache file (disk full, manual edits): rebuild it once, then trust the result.
                _decompress_to(path, target)
                return np.load(target, mmap_mode=mode, allow_pickle=False)
    with lzma.open(path) as f:
        return np.load(f, allow_pickle=False)


def _decompress_to(src: Path, target: Path) -> None:
    """Stream ``src`` (xz) into ``target`` atomically, checking that the result is a loadable ``.npy``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(src) as f:
            # Streaming in 16 MiB pieces keeps memory flat: the array itself is read later, from disk.
            shutil.copyfileobj(f, out, length=16 << 20)
        try:
            np.load(tmp, mmap_mode="r", allow_pickle=False)  # reads the header only
        except ValueError as err:
            raise ValueError(f"{src} does not hold a plain .npy array: {err}") from None
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a cache of public data can be shared
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
