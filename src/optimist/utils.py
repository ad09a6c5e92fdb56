"""Small Keras-style helpers for preparing data."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["normalize", "set_random_seed", "to_categorical"]


def set_random_seed(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (all devices), as
    ``keras.utils.set_random_seed`` does."""
    import random

    import torch

    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))


def normalize(x: Any, axis: int = -1, order: int = 2) -> np.ndarray:
    """``x`` divided by its ``order``-norm along ``axis`` (zero vectors stay zero), as
    ``keras.utils.normalize``."""
    arr = np.asarray(x, dtype=np.float64 if np.asarray(x).dtype == np.float64 else np.float32)
    norm = np.linalg.norm(arr, ord=order, axis=axis, keepdims=True)
    return arr / np.where(norm == 0, 1, norm)


def to_categorical(
    y: Any, num_classes: int | None = None, dtype: npt.DTypeLike = "float32"
) -> np.ndarray:
    """One-hot encode integer class labels, like ``keras.utils.to_categorical``.

    ``y`` is any array-like of class ids (a trailing axis of length 1 is dropped, as in Keras);
    the result has shape ``y.shape + (num_classes,)`` and dtype ``dtype``. ``num_classes``
    defaults to ``max(y) + 1``.

    Raises ``ValueError`` for non-integer labels (floats are accepted only when whole), negative
    labels, labels ``>= num_classes`` (naming the offending value) and an empty ``y`` without
    ``num_classes``.
    """
    labels = np.asarray(y)
    if labels.dtype == np.bool_ or not (
        np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)
    ):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if np.issubdtype(labels.dtype, np.floating):
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            raise ValueError(f"labels must be integers, got {labels[~whole].flat[0].item()}")
        labels = labels.astype(np.int64)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels.reshape(labels.shape[:-1])

    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes}")

    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0:
            raise ValueError(f"labels must be non-negative, got {low}")
        if num_classes is None:
            num_classes = int(high) + 1
        elif high >= num_classes:
            raise ValueError(
                f"label {high} is out of range for num_classes={num_classes} "
                f"(labels must be < {num_classes})"
            )
    elif num_classes is None:
        raise ValueError("cannot infer num_classes from empty labels; pass num_classes")

    flat = labels.reshape(-1).astype(np.intp, copy=False)
    out = np.zeros((flat.size, num_classes), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(*labels.shape, num_classes)
