"""Merging layers of functional models: ``Add`` and ``Concatenate``."""

from __future__ import annotations

from typing import Any

import torch

from optimist.training.layers.base import (
    Layer,
    Shape,
    SymbolicTensor,
    is_symbolic,
    register_layer,
)


class _Merge(Layer):
    """Layers that combine a list of tensors (functional models)."""

    def build(self, input_shape: Any) -> None:
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ValueError(f"{type(self).__name__} needs a list of at least 2 inputs")
        self._check_shapes(shapes)
        self.built = True
        self.built_input_shape = shapes  # type: ignore[assignment]

    def _check_shapes(self, shapes: list[tuple]) -> None:
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"{type(self).__name__} inputs must have equal shapes, got {shapes}")

    def compute_output_shape(self, input_shape: Any) -> Shape:
        return tuple(input_shape[0])

    def forward(self, x: Any) -> torch.Tensor:
        if is_symbolic(x):
            return SymbolicTensor.record(self, x)
        if not isinstance(x, (list, tuple)) or len(x) < 2:
            raise ValueError(f"{type(self).__name__} is called on a list of at least 2 tensors")
        return self.call(list(x))


@register_layer
class Add(_Merge):
    """Element-wise sum of a list of tensors of one shape."""

    default_name = "add"

    def call(self, xs: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_layer
class Concatenate(_Merge):
    """Concatenation of a list of tensors along ``axis`` (the last by default)."""

    default_name = "concatenate"

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis = int(axis)

    def _check_shapes(self, shapes: list[tuple]) -> None:
        rank = len(shapes[0])
        axis = self.axis % rank
        for s in shapes:
            same = len(s) == rank and all(
                a == b for k, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if k != axis
            )
            if not same:
                raise ValueError(
                    f"Concatenate inputs must match except along axis {self.axis}, got {shapes}"
                )

    def compute_output_shape(self, input_shape: Any) -> Shape:
        shapes = [tuple(s) for s in input_shape]
        axis = self.axis % len(shapes[0])
        sizes = [s[axis] for s in shapes]
        out = list(shapes[0])
        out[axis] = None if any(d is None for d in sizes) else sum(sizes)
        return tuple(out)

    def call(self, xs: list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return torch.cat(xs, dim=self.axis)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}
