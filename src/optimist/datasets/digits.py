"""The UCI optical-recognition 8x8 handwritten digits that scikit-learn ships (1,797 images).

Source: ``sklearn/datasets/data/digits.csv.gz`` inside the scikit-learn package (no download).
The file is read directly, without importing scikit-learn (which takes most of a second), when
it is where and what :func:`sklearn.datasets.load_digits` expects; otherwise ``load_digits`` is
used. Install scikit-learn with ``pip install scikit-learn`` (or ``pip install 'optimist[data]'``).
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import io
from pathlib import Path

import numpy as np

from optimist.datasets import _common

__all__ = ["INSTALL_COMMAND", "load_data", "load_all"]

DISTRIBUTION = "scikit-learn"
MEMBER = "sklearn/datasets/data/digits.csv.gz"
INSTALL_COMMAND = "pip install scikit-learn"
N_SAMPLES = 1797

_NAME = "digits"


@functools.lru_cache(maxsize=1)
def _locate_csv() -> Path | None:
    """scikit-learn's digits file (looked up once per process: the file list is long)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.as_posix() == MEMBER:
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def _parse_csv(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with gzip.open(path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(io.StringIO(handle.read()), delimiter=",")
    except (OSError, EOFError, ValueError, UnicodeDecodeError):
        return None
    if table.shape != (N_SAMPLES, 65):
        return None
    images, labels = table[:, :-1], table[:, -1]
    if (
        images.min() < 0
        or images.max() > 16
        or labels.min() < 0
        or labels.max() > 9
        or np.any(table != np.rint(table))
    ):
        return None
    return images.astype(np.uint8).reshape(-1, 8, 8), labels.astype(np.uint8)


def _with_sklearn() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _common.DatasetNotAvailableError(
            f"digits needs scikit-learn: {INSTALL_COMMAND} (or pip install 'optimist[data]')"
        ) from None
    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.uint8)


def load_all(*, copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: ``uint8`` images ``(1797, 8, 8)`` (values 0..16), ``uint8`` labels."""
    path = _locate_csv()
    if path is not None and not path.is_file():
        path = None
    key = _common.fingerprint([path] if path is not None else [])
    pair = _common.memory_get(_NAME, key)
    if pair is None:
        parsed = _parse_csv(path) if path is not None else None
        images, labels = parsed if parsed is not None else _with_sklearn()
        images.flags.writeable = False
        labels.flags.writeable = False
        pair = (images, labels)
        _common.memory_put(_NAME, key, pair)
    images, labels = pair
    return (images.copy(), labels.copy()) if copy else (images, labels)


def load_data(
    test_split: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The digits as ``(x_train, y_train), (x_test, y_test)``, split at random but reproducibly.

    ``round(1797 * test_split)`` samples, drawn by a NumPy generator seeded with ``seed``, form
    the test set; each split keeps the original order of the samples. ``x`` are ``uint8`` images
    ``(n, 8, 8)`` with values 0..16, ``y`` ``uint8`` labels 0..9.
    """
    if isinstance(test_split, bool) or not 0.0 <= float(test_split) < 1.0:
        raise ValueError(f"test_split must be in [0, 1), got {test_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    images, labels = load_all(copy=False)
    n = len(labels)
    n_test = int(round(n * float(test_split)))
    order = np.random.default_rng(int(seed)).permutation(n)
    test = np.zeros(n, dtype=bool)
    test[order[:n_test]] = True
    # Boolean indexing copies: the caller gets fresh, writable arrays.
    return (images[~test], labels[~test]), (images[test], labels[test])
