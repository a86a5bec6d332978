"""load_array: .npy and .npy.xz, the decompression cache, refusal of pickles; and the data roots."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import numpy as np
import pytest

from encouraging.data import arrays as arrays_mod
from encouraging.data import cached_path, data_roots, default_data_root, find_array, load_array
from encouraging.data.roots import cache_root, download_roots, first_writable_root


def _write_xz(path: Path, array: np.ndarray) -> Path:
    raw = path.with_suffix("")  # strip ".xz"
    np.save(raw, array)
    with open(raw, "rb") as f, lzma.open(path, "wb", preset=1) as out:
        out.write(f.read())
    raw.unlink()
    return path


def test_npy_roundtrip_and_mmap(tmp_path, isolated):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(load_array(tmp_path / "a.npy"), a)
    mapped = load_array(str(tmp_path / "a.npy"), mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, a)
    assert not isolated.exists(), "a plain .npy must not touch the cache"


def test_xz_is_decompressed_once_then_read_from_the_cache(tmp_path, isolated, monkeypatch):
    a = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    src = _write_xz(tmp_path / "x_train.npy.xz", a)
    np.testing.assert_array_equal(load_array(src), a)
    target = cached_path(src)
    assert target.is_file() and target.parent == isolated / "encouraging" / "arrays"
    assert target.name.startswith(f"{tmp_path.name}_x_train-") and target.suffix == ".npy"
    assert not list(target.parent.glob("*.tmp")), "no temporary file may be left behind"

    def no_lzma(*args, **kwargs):
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(arrays_mod.lzma, "open", no_lzma)
    np.testing.assert_array_equal(load_array(src), a)
    np.testing.assert_array_equal(load_array(src, mmap=True), a)


def test_changed_source_gets_a_new_cache_entry(tmp_path, isolated):
    src = _write_xz(tmp_path / "y.npy.xz", np.zeros(4, dtype=np.int64))
    first = cached_path(src)
    load_array(src)
    _write_xz(src, np.ones(6, dtype=np.int64))
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert cached_path(src) != first
    np.testing.assert_array_equal(load_array(src), np.ones(6))


def test_cache_disabled_and_unwritable_cache_still_load(tmp_path, monkeypatch):
    a = np.linspace(0, 1, 10, dtype=np.float32)
    src = _write_xz(tmp_path / "f.npy.xz", a)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")  # a cache under a regular file cannot be created, even by root
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    np.testing.assert_array_equal(load_array(src, cache=False), a)
    with pytest.warns(RuntimeWarning, match="could not cache"):
        np.testing.assert_array_equal(load_array(src), a)


def test_bad_inputs(tmp_path, isolated):
    with pytest.raises(ValueError, match=r"\.npy"):
        load_array(tmp_path / "a.txt")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_array(tmp_path / "missing.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickle"):
        load_array(tmp_path / "obj.npy")
    _write_xz(tmp_path / "obj.npy.xz", np.array([None, 1], dtype=object))
    with pytest.raises(ValueError):
        load_array(tmp_path / "obj.npy.xz")
    assert not list((isolated / "encouraging" / "arrays").glob("*")), "a refused array must leave no cache file"


def test_find_array_prefers_plain_npy(tmp_path):
    assert find_array(tmp_path / "x") is None
    _write_xz(tmp_path / "x.npy.xz", np.zeros(1))
    assert find_array(tmp_path / "x") == tmp_path / "x.npy.xz"
    np.save(tmp_path / "x.npy", np.zeros(1))
    assert find_array(tmp_path / "x") == tmp_path / "x.npy"


# ----------------------------------------------------------------------------------------------------- roots


def test_data_roots_order_env_and_dedup(tmp_path, isolated, monkeypatch):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    monkeypatch.setenv("ENCOURAGING_DATA", os.pathsep.join([str(b), "", str(c), str(b)]))
    assert data_roots(None) == [b, c, default_data_root()], "a root given twice keeps its first place"
    # --data-root beats the environment: only it, then the cache
    assert data_roots(str(a)) == [a, isolated / "encouraging" / "data"]
    assert data_roots(str(b)) == [b, default_data_root()]


def test_cache_root_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "encouraging"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert cache_root() == Path.home() / ".cache" / "encouraging"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "encouraging"


def test_downloads_go_to_the_explicit_root_else_the_cache(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("ENCOURAGING_DATA", str(tmp_path / "shared"))
    assert download_roots(None) == [default_data_root()]
    assert download_roots(tmp_path / "mine") == [tmp_path / "mine", default_data_root()]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert first_writable_root([blocker / "sub", tmp_path / "ok"]) == tmp_path / "ok"
    with pytest.raises(PermissionError, match="no writable data root"):
        first_writable_root([blocker / "sub"])
