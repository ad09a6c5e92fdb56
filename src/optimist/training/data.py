"""Input handling for fit/evaluate/predict: conversion, validation and batching.

Array inputs (NumPy arrays, torch tensors, nested lists) are converted once to tensors on the
model's device: floating arrays of any dtype to the model's dtype (that of its parameters, or
torch's default ``float32`` before it is built, as Keras casts inputs), integer inputs to
``int64`` when the model starts with an embedding (else to float), targets to what the loss
needs (``int64`` labels for sparse cross-entropy, float otherwise). Batches are then slices of
these tensors taken with a permutation index (no DataLoader, no per-batch conversion).

``torch.utils.data.DataLoader`` inputs are iterated as they are (their own batch size and
shuffling); a ``Dataset`` is wrapped in a DataLoader with ``fit``'s ``batch_size`` and the
model's shuffle generator. Each batch is ``(x, y)`` or ``(x, y, sample_weight)``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

Batch = tuple[Any, torch.Tensor | None, torch.Tensor | None]  # x: a tensor or a tuple


def is_loader_like(x: Any) -> bool:
    return isinstance(x, (DataLoader, Dataset))


def to_tensor(
    value: Any,
    name: str,
    *,
    kind: str,
    device: torch.device | None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Convert ``value`` for role ``kind``: "float", "index", "input_int" (keep integers).

    Floating results (any input dtype: float16, bfloat16, float64, integers for a "float" role)
    are cast to ``dtype`` -- the model's dtype, as Keras casts inputs -- or torch's default.
    """
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} could not be converted to an array: {exc}") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise ValueError(
                f"{name} must be numeric, got an array of dtype {arr.dtype}"
                + (" (ragged nested lists?)" if arr.dtype == object else "")
            )
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:  # long double: torch has none
            arr = arr.astype(np.float64)
        if not arr.flags.writeable:
            arr = arr.copy()
        elif not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        t = torch.from_numpy(arr)
    if t.dim() == 0:
        raise ValueError(f"{name} must have a batch dimension, got a scalar")
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    if kind == "index" or (kind == "input_int" and not t.is_floating_point()):
        if t.is_floating_point() and (
            not bool(torch.isfinite(t).all()) or bool((t != t.round()).any())
        ):
            raise ValueError(f"{name} must hold whole numbers (integer labels or indices)")
        t = t.long()
    else:
        target = dtype or torch.get_default_dtype()
        if t.dtype != target:
            t = t.to(target)
    if device is not None and t.device != device:
        t = t.to(device)
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` saying how many NaN / inf values ``t`` holds (if any)."""
    if not t.is_floating_point() or t.numel() == 0:
        return
    # A finite sum proves every value finite (NaN and inf propagate), so one fast reduction
    # settles the common case; an overflowing sum just falls through to the exact count.
    if bool(torch.isfinite(t.sum())):
        return
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(torch.isinf(t).sum())
    if n_nan or n_inf:
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} inf")
        raise ValueError(
            f"{name} contains {' and '.join(parts)} value{'s' if n_nan + n_inf > 1 else ''} "
            f"(out of {t.numel()}); clean or impute the data before training"
        )


def check_lengths(x: torch.Tensor, y: torch.Tensor | None, sw: torch.Tensor | None, what: str):
    if y is not None and y.shape[0] != x.shape[0]:
        raise ValueError(
            f"{what}x and {what}y have different lengths: {what}x has {x.shape[0]} samples, "
            f"{what}y has {y.shape[0]}"
        )
    if sw is not None and sw.shape[0] != x.shape[0]:
        raise ValueError(
            f"{what}sample_weight has {sw.shape[0]} entries but {what}x has {x.shape[0]} samples"
        )


def check_input_shape(x_shape: tuple[int, ...], expected: tuple[int | None, ...] | None, name: str):
    """``expected`` excludes the batch dimension; ``None`` entries match anything."""
    if expected is None:
        return
    got = tuple(x_shape[1:])
    ok = len(got) == len(expected) and all(
        e is None or e == g for e, g in zip(expected, got, strict=True)
    )
    if not ok:
        if len(got) == len(expected) == 1:
            detail = f"expected {expected[0]} features per sample, got {got[0]}"
        else:
            detail = f"expected per-sample shape {expected}, got {got}"
        raise ValueError(
            f"{name} has shape {tuple(x_shape)} but the model expects input shape "
            f"{(None, *expected)}: {detail}"
        )


Inputs = torch.Tensor | tuple[torch.Tensor, ...]


def first(x: Inputs) -> torch.Tensor:
    """The (first) input tensor: ``x`` is one tensor, or a tuple of them (multi-input model)."""
    return x[0] if isinstance(x, tuple) else x


def map_inputs(fn: Any, x: Inputs) -> Inputs:
    """``fn`` applied to the input tensor, or to each of a multi-input model's."""
    return tuple(fn(t) for t in x) if isinstance(x, tuple) else fn(x)


@dataclass
class ArrayData:
    """Tensors of one split, already converted, checked and on the model's device. ``x`` is a
    tuple of tensors (sliced, shuffled and batched together) for a multi-input model."""

    x: Inputs
    y: torch.Tensor | None
    sample_weight: torch.Tensor | None

    @property
    def n(self) -> int:
        return int(first(self.x).shape[0])

    def split_last(self, fraction: float) -> tuple[ArrayData, ArrayData]:
        """(first part, last ``fraction``): Keras' ``validation_split`` before shuffling."""
        split_at = int(self.n * (1.0 - fraction))
        if split_at <= 0 or split_at >= self.n:
            raise ValueError(
                f"validation_split={fraction} leaves "
                f"{'no training' if split_at <= 0 else 'no validation'} samples out of {self.n}"
            )

        def part(sl: slice) -> ArrayData:
            return ArrayData(
                map_inputs(lambda t: t[sl], self.x),
                None if self.y is None else self.y[sl],
                None if self.sample_weight is None else self.sample_weight[sl],
            )

        return part(slice(0, split_at)), part(slice(split_at, None))

    def batches(
        self, batch_size: int | None, shuffle: bool, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        """One epoch of batches; with ``shuffle`` one ``torch.randperm(n, generator=...)``."""
        n = self.n
        bs = n if batch_size is None else batch_size
        x, y, sw = self.x, self.y, self.sample_weight
        multi = isinstance(x, tuple)
        if shuffle:
            perm = torch.randperm(n, generator=generator)
            if perm.device != first(x).device:
                perm = perm.to(first(x).device)
            for idx in perm.split(bs):
                yield (
                    tuple(t.index_select(0, idx) for t in x) if multi else x.index_select(0, idx),
                    None if y is None else y.index_select(0, idx),
                    None if sw is None else sw.index_select(0, idx),
                )
        else:
            for start in range(0, n, bs):
                end = start + bs
                yield (
                    tuple(t[start:end] for t in x) if multi else x[start:end],
                    None if y is None else y[start:end],
                    None if sw is None else sw[start:end],
                )

    def steps(self, batch_size: int | None) -> int:
        if batch_size is None:
            return 1 if self.n else 0
        return -(-self.n // batch_size)


class LoaderData:
    """A DataLoader (or a Dataset wrapped in one); batches converted on the fly."""

    def __init__(
        self,
        source: DataLoader | Dataset,
        batch_size: int | None,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> None:
        if isinstance(source, DataLoader):
            self.loader = source
        else:
            iterable = isinstance(source, IterableDataset)
            if batch_size is None:
                if iterable:
                    raise ValueError("batch_size=None needs a sized Dataset, not an iterable one")
                batch_size = len(source)  # type: ignore[arg-type]
            self.loader = DataLoader(
                source,
                batch_size=batch_size,
                shuffle=bool(shuffle) and not iterable,
                generator=generator,
            )
        self._iterator: Iterator[Any] | None = None

    def steps(self, batch_size: int | None = None) -> int | None:
        try:
            return len(self.loader)
        except TypeError:
            return None

    def split_last(self, fraction: float) -> tuple[LoaderData, LoaderData]:
        raise ValueError(
            "validation_split is not supported for DataLoader input; pass validation_data"
        )

    def _raw_batches(self, steps: int | None) -> Iterator[Any]:
        if steps is None:
            yield from self.loader
            return
        # steps_per_epoch: keep one iterator across epochs, restarting it when exhausted.
        for _ in range(steps):
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                yield next(self._iterator)
            except StopIteration:
                self._iterator = iter(self.loader)
                try:
                    yield next(self._iterator)
                except StopIteration:
                    return

    def batches(
        self,
        steps: int | None,
        *,
        x_kind: str,
        y_kind: str,
        device: torch.device | None,
        need_y: bool = True,
        dtype: torch.dtype | None = None,
    ) -> Iterator[Batch]:
        for i, item in enumerate(self._raw_batches(steps)):
            if isinstance(item, dict):
                raise ValueError("DataLoader batches must be (x, y) or (x, y, sample_weight)")
            if isinstance(item, (list, tuple)):
                if not 1 <= len(item) <= 3:
                    raise ValueError(
                        f"DataLoader batch {i} has {len(item)} elements; expected (x, y) or "
                        f"(x, y, sample_weight)"
                    )
                parts = list(item) + [None] * (3 - len(item))
            else:
                parts = [item, None, None]
            xb, yb, wb = parts
            if need_y and yb is None:
                raise ValueError("DataLoader batches must yield (x, y) pairs for fit/evaluate")
            convert = functools.partial(to_tensor, device=device, dtype=dtype)
            xb = convert(xb, "x batch", kind=x_kind)
            yb = None if yb is None else convert(yb, "y batch", kind=y_kind)
            wb = None if wb is None else convert(wb, "sample_weight", kind="float")
            yield xb, yb, wb


def subset_last(dataset: Dataset, fraction: float) -> tuple[Subset, Subset]:
    n = len(dataset)  # type: ignore[arg-type]
    split_at = int(n * (1.0 - fraction))
    if split_at <= 0 or split_at >= n:
        raise ValueError(f"validation_split={fraction} leaves an empty split of {n} samples")
    return Subset(dataset, range(split_at)), Subset(dataset, range(split_at, n))


def class_weight_table(class_weight: dict[int, float], device: torch.device | None) -> torch.Tensor:
    if not isinstance(class_weight, dict) or not class_weight:
        raise ValueError("class_weight must be a non-empty dict {class_index: weight}")
    keys = []
    for key, value in class_weight.items():
        k = int(key)
        if k != key or k < 0:
            raise ValueError(f"class_weight keys must be class indices >= 0, got {key!r}")
        if not np.isfinite(float(value)) or float(value) < 0:
            raise ValueError(f"class_weight values must be finite and >= 0, got {value!r}")
        keys.append(k)
    table = torch.ones(max(keys) + 1, dtype=torch.get_default_dtype())
    for key, value in class_weight.items():
        table[int(key)] = float(value)
    return table if device is None else table.to(device)


def class_weights_for(y: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Per-sample weights: the weight of each sample's class (argmax of one-hot, else label);
    classes missing from ``class_weight`` weigh 1."""
    if y.dim() >= 2 and y.shape[-1] > 1:
        labels = y.argmax(dim=-1)
    else:
        labels = (y.round() if y.is_floating_point() else y).long()
    labels = labels.reshape(labels.shape[0], -1)[:, 0] if labels.dim() > 1 else labels
    if labels.numel() and int(labels.max()) >= table.shape[0]:
        pad = torch.ones(int(labels.max()) + 1 - table.shape[0], dtype=table.dtype)
        table = torch.cat([table, pad.to(table.device)])
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError("class_weight needs non-negative class labels")
    return table[labels]
