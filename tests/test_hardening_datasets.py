"""Regression tests for issue 7, item 14: a malformed or modified data set cache is rebuilt.

They drive :func:`optimist.datasets._common.cached` with a tiny data set, so no download is needed.
"""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from optimist.datasets import _common

ARRAYS = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.array([0, 1, 2], np.uint8)}


def check(arrays) -> None:
    if set(arrays) != {"x", "y"} or arrays["x"].shape != (3, 4):
        raise ValueError("toy: wrong arrays")


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """Build and cache the toy set once; returns (load function, cache file, build calls)."""
    monkeypatch.setenv("OPTIMIST_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "toy.bin"
    source.write_bytes(b"source")
    calls: list[int] = []

    def build():
        calls.append(1)
        return {k: v.copy() for k, v in ARRAYS.items()}

    def load():
        _common.clear_cache()
        return _common.cached("toy", [source], build, check)

    load()
    assert calls == [1]
    return load, _common.cache_file("toy"), calls


def npy_member(header: bytes, data: bytes) -> bytes:
    """A .npy member with a hand-written header dictionary."""
    header = header + b" " * ((-len(header) - 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def replace_member(path: Path, name: str, payload: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    members[name] = payload
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    path.write_bytes(buffer.getvalue())


def assert_rebuilt(load, calls, match: str) -> None:
    with pytest.warns(RuntimeWarning, match=match):
        arrays = load()
    assert len(calls) == 2
    for key, value in ARRAYS.items():
        assert np.array_equal(arrays[key], value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten cache is valid again
        load()
    assert len(calls) == 2


def test_valid_cache_is_reused(toy):
    load, _, calls = toy
    arrays = load()
    assert calls == [1] and np.array_equal(arrays["x"], ARRAYS["x"])


def test_header_promising_a_huge_array_is_rebuilt_without_allocating_it(toy):
    load, path, calls = toy
    header = b"{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000000, 4), }"
    replace_member(path, "x.npy", npy_member(header, bytes(12)))
    assert_rebuilt(load, calls, "header promises shape")


def test_unparsable_header_is_rebuilt(toy):
    load, path, calls = toy
    replace_member(path, "x.npy", npy_member(b"{'descr': '|u1', 'shape': (3, 4 \"\"\"", bytes(12)))
    assert_rebuilt(load, calls, "unreadable data set cache")


def test_modified_cache_fails_its_checksum_and_is_rebuilt(toy):
    load, path, calls = toy
    tampered = ARRAYS["x"].copy()
    tampered[0, 0] = 200  # valid file, right shapes, wrong values
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, tampered)
    replace_member(path, "x.npy", buffer.getvalue())
    assert_rebuilt(load, calls, "checksum mismatch")
