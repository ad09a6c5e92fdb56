"""Keras' functional API: ``Input`` -> layers -> ``Model(inputs, outputs)``.

>>> inputs = Input(shape=(8,))
>>> a = Dense(4, activation="relu")(inputs)
>>> b = Dense(4, activation="relu")(inputs)
>>> outputs = Dense(2, activation="softmax")(Concatenate()([a, b]))
>>> model = Model(inputs=inputs, outputs=outputs)

Calling a layer on an ``Input`` (or on what such a call returned) builds the layer and records
the call; the model runs the recorded graph in order. Branches and merges (``Add``,
``Concatenate``) are free; several inputs work in ``model(x1, x2)`` but ``fit`` takes one input
array (and one output), so train those models on one input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optimist.training.layers import InputLayer, Layer, SymbolicTensor, is_symbolic
from optimist.training.model import Model

__all__ = ["Functional"]


class Functional(Model):
    """A model given by its symbolic inputs and output (what ``Model(inputs, outputs)`` makes)."""

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None) -> None:
        super().__init__(name=name or "functional")
        ins = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if not ins or not all(isinstance(i, InputLayer) for i in ins):
            raise ValueError("Model(inputs=...) takes the Input(...) objects the graph starts from")
        if isinstance(outputs, (list, tuple)) or not is_symbolic(outputs):
            raise ValueError(
                "Model(outputs=...) takes one output: what the last layer call returned"
            )
        self._inputs = ins
        self._output = outputs
        self._order: list[SymbolicTensor] = []
        seen: set[int] = set()

        def visit(node: Any) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            if isinstance(node, InputLayer):
                if not any(node is i for i in ins):
                    raise ValueError(f"the graph uses an Input that is not in inputs: {node.shape}")
                return
            for parent in node.parents:
                visit(parent)
            self._order.append(node)

        visit(outputs)
        taken: set[str] = set()
        for node in self._order:
            layer = node.layer
            if any(layer is m for m in self._modules.values()):
                continue  # a shared layer
            base = layer.name or layer.default_name
            key, i = base, 1
            while key in taken:
                key, i = f"{base}_{i}", i + 1
            taken.add(key)
            layer.name = layer.name or key
            self.add_module(key, layer)
            layer.train(self.training)

    def _run(self, xs: tuple[Any, ...], logits: bool) -> Any:
        if len(xs) != len(self._inputs):
            raise ValueError(f"this model takes {len(self._inputs)} input(s), got {len(xs)}")
        values: dict[int, Any] = {id(i): x for i, x in zip(self._inputs, xs, strict=True)}
        last = self._order[-1]
        for node in self._order:
            args = [values[id(p)] for p in node.parents]
            arg = args if node.multi else args[0]
            if logits and node is last:
                return node.layer.pre_activation(arg)
            values[id(node)] = node.layer(arg)
        return values[id(last)]

    def forward(self, *xs: Any) -> Any:
        return self._run(xs, logits=False)

    def _forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._run((x,), logits=True)

    def _final_activation(self) -> str | None:
        layer = self._order[-1].layer
        name = getattr(layer, "activation_name", None)
        if hasattr(layer, "pre_activation") and name in ("softmax", "sigmoid"):
            return name
        return None

    def _expected_input_shape(self) -> tuple[int | None, ...] | None:
        return tuple(self._inputs[0].shape[1:]) if len(self._inputs) == 1 else None

    def _static_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple | None:
        return tuple(self._output.shape)

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        shapes = {id(node.layer): str(node.shape) for node in self._order}
        return [
            (f"{key} ({type(layer).__name__})", shapes.get(id(layer), "?"), layer.count_params())
            for key, layer in self.named_children()
            if isinstance(layer, Layer)
        ]

    @property
    def layers(self) -> list[nn.Module]:
        return [m for m in self.children() if isinstance(m, Layer)]

    @property
    def input_shape(self) -> Any:
        shapes = [i.shape for i in self._inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> tuple:
        return tuple(self._output.shape)
