"""Shared machinery for the data set loaders: errors, folders, idx parsing and caching.

Decoded arrays are cached twice:

* on disk, as an uncompressed ``.npz`` in :func:`cache_dir` (``$OPTIMIST_CACHE_DIR``, default
  ``~/.cache/optimist``), written atomically (temporary file + ``os.replace``) and tagged with a
  fingerprint of the source files (path, size, modification time), so a changed source is decoded
  again, and with a SHA-256 checksum of the decoded arrays, verified on every read. A stale cache
  file is rebuilt quietly; an unreadable, malformed (a header promising more data than the file
  holds, an unparsable header) or modified one is rebuilt with a :class:`RuntimeWarning`; the
  file is read member by member with sizes checked first, never trusted;
* in this process, as read-only arrays, so a second call costs no file access beyond a ``stat``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import struct
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_FORMAT",
    "DatasetNotAvailableError",
    "INSTALL_SCRIPT",
    "cache_dir",
    "cached",
    "clear_cache",
    "data_dir",
    "read_idx",
]

#: Bumped whenever the layout of the cache files changes; old files are then ignored.
#: 2: the metadata member holds JSON with the source fingerprint and the arrays' checksum.
CACHE_FORMAT = 2

INSTALL_SCRIPT = "scripts/install_data.sh"

_META_KEY = "__optimist_meta__"


class DatasetNotAvailableError(RuntimeError):
    """A data set's files (or the package that ships them) are not installed.

    The message says exactly what to run to install them.
    """


def _env_dir(variable: str, default: Path) -> Path:
    value = os.environ.get(variable, "").strip()
    return Path(value).expanduser() if value else default


def cache_dir() -> Path:
    """Folder for decoded-array caches: ``$OPTIMIST_CACHE_DIR`` or ``~/.cache/optimist``."""
    return _env_dir("OPTIMIST_CACHE_DIR", Path.home() / ".cache" / "optimist")


def data_dir() -> Path:
    """Folder for downloaded source files: ``$OPTIMIST_DATA_DIR`` or ``~/.cache/optimist/data``.

    It does not follow ``$OPTIMIST_CACHE_DIR``: pointing the cache elsewhere (as tests do) must
    not hide the downloaded sources.
    """
    return _env_dir("OPTIMIST_DATA_DIR", Path.home() / ".cache" / "optimist" / "data")


# --------------------------------------------------------------------------------------------
# idx files (the MNIST family's format)

# idx type code -> big-endian numpy dtype
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic; ValueError when corrupt."""
    raw = Path(path).read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Parse an idx file (optionally gzipped) into a native-byte-order array.

    The magic number (two zero bytes, a known type code, the number of dimensions) and the exact
    length of the payload are checked; anything else raises ``ValueError`` naming the file.
    """
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an idx file (magic number {raw[:4].hex() or 'missing'})")
    dims_count = raw[3]
    if dims_count == 0 or (ndim is not None and dims_count != ndim):
        expected = "at least 1" if ndim is None else str(ndim)
        raise ValueError(f"{path}: idx file has {dims_count} dimensions, expected {expected}")
    header = 4 + 4 * dims_count
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes)")
    shape = struct.unpack(f">{dims_count}I", raw[4:header])
    dtype = _IDX_TYPES[raw[2]]
    count = math.prod(shape)
    expected_size = header + count * dtype.itemsize
    if len(raw) != expected_size:
        problem = "truncated" if len(raw) < expected_size else "has trailing bytes"
        raise ValueError(
            f"{path}: idx file {problem}: shape {shape} needs {expected_size} bytes, "
            f"found {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def find_idx(directory: Path, stem: str) -> Path | None:
    """``directory/stem.gz`` or ``directory/stem``, whichever exists first."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def read_idx_set(paths: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Read ``x_train``/``y_train``/``x_test``/``y_test`` idx files of unsigned bytes.

    Image files must have 3 dimensions, label files 1, and each split as many labels as images.
    """
    arrays = {}
    for key, path in paths.items():
        array = read_idx(path, ndim=3 if key.startswith("x") else 1)
        if array.dtype != np.uint8:
            raise ValueError(f"{path}: expected unsigned bytes, found {array.dtype}")
        arrays[key] = array
    for split in ("train", "test"):
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(images) != len(labels):
            raise ValueError(
                f"{paths[f'y_{split}']}: {len(labels)} labels for {len(images)} images "
                f"in {paths[f'x_{split}']}"
            )
    return arrays


# --------------------------------------------------------------------------------------------
# caches

_LOCK = threading.RLock()
_MEMORY: dict[str, tuple[str, Any]] = {}


def fingerprint(sources: Iterable[Path], **extra: Any) -> str:
    """A string that changes whenever a source file (path, size, mtime) or ``extra`` changes."""
    items = []
    for source in sources:
        stat = Path(source).stat()
        items.append([str(Path(source).resolve()), stat.st_size, stat.st_mtime_ns])
    return json.dumps({"format": CACHE_FORMAT, "sources": items, "extra": extra}, sort_keys=True)


def memory_get(name: str, key: str) -> Any | None:
    with _LOCK:
        hit = _MEMORY.get(name)
    return hit[1] if hit is not None and hit[0] == key else None


def memory_put(name: str, key: str, value: Any) -> None:
    with _LOCK:
        _MEMORY[name] = (key, value)


def cache_file(name: str) -> Path:
    """Where the disk cache of data set ``name`` lives."""
    return cache_dir() / f"{name}-v{CACHE_FORMAT}.npz"


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.reshape(-1).view(np.uint8) if array.size else b"")
    return digest.hexdigest()


def cache_meta(key: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The metadata member of a cache file: the source fingerprint and the arrays' checksum."""
    return np.array(json.dumps({"key": key, "sha256": checksum(arrays)}))


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One ``.npy`` member, its header checked against the member's size before any allocation
    (a crafted header cannot make us allocate more than the file holds)."""
    with archive.open(info) as handle:
        version = np.lib.format.read_magic(handle)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            raise ValueError(f"{info.filename}: unsupported .npy version {version}")
        shape, fortran, dtype = readers[version](handle)
        if dtype.hasobject or fortran:
            raise ValueError(f"{info.filename}: not a plain C-ordered array")
        size = math.prod(shape) * dtype.itemsize
        if size > info.file_size:
            raise ValueError(
                f"{info.filename}: header promises shape {shape} ({size} bytes) but the member "
                f"holds {info.file_size} bytes"
            )
        data = handle.read(size)
    if len(data) != size:
        raise ValueError(f"{info.filename}: truncated ({len(data)} of {size} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _read_cache(
    path: Path, key: str, check: Callable[[Mapping[str, np.ndarray]], None]
) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    meta_name = f"{_META_KEY}.npy"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if meta_name not in names:
                return None  # another format; rebuild quietly
            meta = json.loads(str(_read_member(archive, archive.getinfo(meta_name))[()]))
            if not isinstance(meta, dict) or meta.get("key") != key:
                return None  # stale: the sources changed; rebuild quietly
            arrays = {}
            for info in archive.infolist():
                if info.filename == meta_name:
                    continue
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"unexpected member {info.filename!r}")
                arrays[info.filename.removesuffix(".npy")] = _read_member(archive, info)
        if checksum(arrays) != meta.get("sha256"):
            raise ValueError("checksum mismatch: the file was changed after it was written")
        check(arrays)
    except Exception as exc:  # any malformed file (MemoryError, SyntaxError, ...) is rebuilt
        warnings.warn(
            f"ignoring unreadable data set cache {path} ({type(exc).__name__}: {exc}); "
            "decoding the source files again and rewriting it",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return arrays


def _write_cache(path: Path, key: str, arrays: Mapping[str, np.ndarray]) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{_META_KEY: cache_meta(key, arrays)}, **arrays)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        warnings.warn(
            f"could not write data set cache {path} ({exc}); loading will stay slow",
            RuntimeWarning,
            stacklevel=4,
        )
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def cached(
    name: str,
    sources: Iterable[Path],
    build: Callable[[], Mapping[str, np.ndarray]],
    check: Callable[[Mapping[str, np.ndarray]], None],
) -> dict[str, np.ndarray]:
    """Decoded arrays of data set ``name``: from memory, else the disk cache, else ``build()``.

    ``check`` validates a mapping of arrays (raising ``ValueError``); it guards both what
    ``build`` made and what a cache file holds. The arrays returned are shared and read-only.
    """
    key = fingerprint(sources)
    with _LOCK:
        arrays = memory_get(name, key)
        if arrays is not None:
            return arrays
        path = cache_file(name)
        arrays = _read_cache(path, key, check)
        if arrays is None:
            arrays = {k: np.ascontiguousarray(v) for k, v in build().items()}
            check(arrays)
            _write_cache(path, key, arrays)
        for array in arrays.values():
            array.flags.writeable = False
        memory_put(name, key, arrays)
        return arrays


def clear_cache(*, disk: bool = False) -> None:
    """Forget the arrays kept in this process; with ``disk=True`` also delete the cache files."""
    with _LOCK:
        _MEMORY.clear()
        if disk:
            folder = cache_dir()
            if folder.is_dir():
                for path in folder.glob(f"*-v{CACHE_FORMAT}.npz"):
                    with contextlib.suppress(OSError):
                        path.unlink()


def keras_tuple(
    arrays: Mapping[str, np.ndarray], copy: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)``, as copies or as the shared read-only arrays."""
    names = ("x_train", "y_train", "x_test", "y_test")
    out = [arrays[n].copy() if copy else arrays[n] for n in names]
    return (out[0], out[1]), (out[2], out[3])


def check_image_set(
    arrays: Mapping[str, np.ndarray],
    *,
    what: str,
    n_train: int,
    n_test: int,
    image_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    """Shapes, dtypes and label range of a Keras-style image classification set."""
    expected = {
        "x_train": (n_train, *image_shape),
        "y_train": (n_train,),
        "x_test": (n_test, *image_shape),
        "y_test": (n_test,),
    }
    for name, shape in expected.items():
        if name not in arrays:
            raise ValueError(f"{what}: missing array {name!r}")
        array = arrays[name]
        if array.shape != shape or array.dtype != np.uint8:
            raise ValueError(
                f"{what}: {name} has shape {array.shape} and dtype {array.dtype}, "
                f"expected {shape} uint8"
            )
    for name in ("y_train", "y_test"):
        if arrays[name].size and int(arrays[name].max()) >= num_classes:
            raise ValueError(f"{what}: {name} holds labels >= {num_classes}")
