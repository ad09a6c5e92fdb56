"""How a model takes data: arrays, tensors, lists or dicts (one array per input) become checked
tensors on the model's device; DataLoaders/Datasets become batches (see :mod:`.data`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optimist.training import data as _data
from optimist.training import losses as _losses
from optimist.training import metrics as _metrics


class DataMixin:
    """Input checking and batching for :class:`Model` (``fit``/``evaluate``/``predict``)."""

    def _x_kind(self) -> str:
        return "input_int" if self._takes_indices() else "float"

    def _arrays(
        self,
        x: Any,
        y: Any,
        sample_weight: Any,
        prefix: str,
        *,
        need_y: bool = True,
        check: bool = True,
    ) -> _data.ArrayData:
        if x is None:
            raise ValueError(f"{prefix}x is required")
        if need_y and y is None:
            raise ValueError(
                f"{prefix}y is required for array input (only a DataLoader/Dataset may yield "
                f"the targets itself)"
            )
        device = self._device() if self._is_built() else None
        dtype = self._dtype()
        xt: Any
        if self._input_count() > 1:
            parts = self._input_parts(x, f"{prefix}x")
            xt = tuple(
                _data.to_tensor(part, name, kind=kind, device=device, dtype=dtype)
                for part, name, kind in parts
            )
            for t, (_, name, _) in zip(xt[1:], parts[1:], strict=True):
                if t.shape[0] != xt[0].shape[0]:
                    raise ValueError(
                        f"the inputs have different lengths: {parts[0][1]} has {xt[0].shape[0]} "
                        f"samples, {name} has {t.shape[0]}"
                    )
        else:
            xt = _data.to_tensor(x, f"{prefix}x", kind=self._x_kind(), device=device, dtype=dtype)
        yt = None
        if y is not None:
            kind = self.loss.target_kind if self.loss is not None else "float"
            yt = _data.to_tensor(y, f"{prefix}y", kind=kind, device=device, dtype=dtype)
        wt = None
        if sample_weight is not None:
            wt = _data.to_tensor(
                sample_weight, f"{prefix}sample_weight", kind="float", device=device, dtype=dtype
            )
            if wt.dim() != 1:
                wt = wt.reshape(wt.shape[0], -1)[:, 0] if wt.numel() == wt.shape[0] else wt
            if wt.dim() != 1:
                raise ValueError(
                    f"{prefix}sample_weight must hold one weight per sample, got shape "
                    f"{tuple(wt.shape)}"
                )
        _data.check_lengths(_data.first(xt), yt, wt, prefix)
        if need_y and _data.first(xt).shape[0] == 0:
            raise ValueError(
                f"{prefix}x is empty (0 samples): there is nothing to train or evaluate on"
            )
        if check:
            for i, t in enumerate(xt if isinstance(xt, tuple) else (xt,)):
                _data.check_finite(t, f"{prefix}x" if t is xt else f"{prefix}x[{i}]")
            if yt is not None:
                _data.check_finite(yt, f"{prefix}y")
            if wt is not None:
                _data.check_finite(wt, f"{prefix}sample_weight")
                if bool((wt < 0).any()):
                    raise ValueError(f"{prefix}sample_weight must be >= 0")
        if isinstance(xt, tuple):
            self._check_input_shapes(xt, f"{prefix}x")
        elif self._is_built():
            _data.check_input_shape(tuple(xt.shape), self._expected_input_shape(), f"{prefix}x")
        return _data.ArrayData(xt, yt, wt)

    def _check_input_shapes(self, xs: tuple[torch.Tensor, ...], name: str) -> None:
        """A multi-input model checks each input against its ``Input`` (see Functional)."""

    def _prepare_model(self, x: Any, name: str = "x") -> None:
        """Build from the data if needed, then check the input shape."""
        if isinstance(x, tuple):  # a multi-input (functional) model: built, shapes checked
            if self._sample_input is None:
                self._sample_input = tuple(t[:1].detach().clone() for t in x)  # type: ignore[assignment]
            return
        if not self._is_built():
            self._build_from(x)
        _data.check_input_shape(tuple(x.shape), self._expected_input_shape(), name)
        if self._sample_input is None:
            self._sample_input = x[:1].detach().clone()

    def _move(self, arr: _data.ArrayData) -> _data.ArrayData:
        device = self._device()
        if _data.first(arr.x).device == device:
            return arr
        return _data.ArrayData(
            _data.map_inputs(lambda t: t.to(device), arr.x),
            None if arr.y is None else arr.y.to(device),
            None if arr.sample_weight is None else arr.sample_weight.to(device),
        )

    def _output_shape(self, x: torch.Tensor) -> tuple[int | None, ...]:
        shape = self._static_output_shape((None, *_data.first(x).shape[1:]))
        if shape is None:
            out = self._probe(x)
            if not isinstance(out, torch.Tensor):
                raise ValueError("the model must return a single tensor for fit/evaluate")
            shape = (None, *out.shape[1:])
        return shape

    def _check_arrays(self, arr: _data.ArrayData, prefix: str) -> None:
        """Check targets (and embedding indices) against the model before any training step."""
        from optimist.training.layers import Embedding

        if not isinstance(arr.x, tuple) and not arr.x.is_floating_point():
            emb = next(
                (m for m in self._network().modules() if isinstance(m, (Embedding, nn.Embedding))),
                None,
            )
            size = getattr(emb, "input_dim", None) or getattr(emb, "num_embeddings", None)
            if size is not None and arr.n:
                lo, hi = int(arr.x.min()), int(arr.x.max())
                if lo < 0 or hi >= size:
                    raise ValueError(
                        f"{prefix}x holds indices from {lo} to {hi}, but the embedding has "
                        f"input_dim={size} (indices must be in [0, {size}))"
                    )
        if arr.y is not None and self.loss is not None and arr.n:
            self.loss.check_targets(arr.y, self._output_shape(arr.x))

    def _compact_targets(self, arr: Any) -> Any:
        """Exact one-hot targets of categorical cross-entropy as int64 labels, once per data
        set: the same loss and accuracy, computed with class indices (``F.cross_entropy``'s
        fast path, no ``argmax`` of the targets per batch). Only when every metric reads labels
        the same way; anything else (soft labels, other metrics) is left as it is."""
        if not isinstance(arr, _data.ArrayData) or arr.y is None or arr.y.dim() != 2:
            return arr
        if type(self.loss) is not _losses.CategoricalCrossentropy or not arr.y.is_floating_point():
            return arr
        label_metrics = (_metrics.CategoricalAccuracy, _metrics.TopKAccuracy)
        for m in self.compiled_metrics:
            kind = m.kind if isinstance(m, _metrics.Accuracy) else m
            if not isinstance(kind, label_metrics):
                return arr
        y = arr.y
        if not (bool(((y == 0) | (y == 1)).all()) and bool((y.sum(dim=1) == 1).all())):
            return arr
        return _data.ArrayData(arr.x, y.argmax(dim=1), arr.sample_weight)

    def _validation_source(self, validation_data: Any, batch_size: int | None) -> Any:
        if _data.is_loader_like(validation_data):
            return _data.LoaderData(validation_data, batch_size, False, None)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(
                "validation_data must be (x_val, y_val), (x_val, y_val, sample_weight_val) or "
                "a DataLoader/Dataset"
            )
        xv, yv, *rest = validation_data
        arr = self._arrays(xv, yv, rest[0] if rest else None, "validation ")
        arr = self._move(arr)
        self._check_arrays(arr, "validation ")
        return arr

    def _batches(self, source: Any, batch_size: int | None, shuffle: bool, steps: int | None):
        if isinstance(source, _data.ArrayData):
            return source.batches(batch_size, shuffle, self._shuffle_generator)
        return source.batches(
            steps,
            x_kind=self._x_kind(),
            y_kind=self.loss.target_kind if self.loss is not None else "float",
            device=self._device(),
            dtype=self._dtype(),
        )

    def _check_batch(self, xb: torch.Tensor, yb: torch.Tensor | None) -> None:
        """First batch of a DataLoader: the checks that arrays get on the whole data up front."""
        if not self._is_built():
            self._build_from(xb)
        _data.check_input_shape(tuple(xb.shape), self._expected_input_shape(), "x batch")
        self._check_arrays(_data.ArrayData(xb, yb, None), "DataLoader batch ")
