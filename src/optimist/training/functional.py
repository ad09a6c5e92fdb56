"""Keras' functional API: ``Input`` -> layers -> ``Model(inputs, outputs)``.

>>> inputs = Input(shape=(8,))
>>> a = Dense(4, activation="relu")(inputs)
>>> b = Dense(4, activation="relu")(inputs)
>>> outputs = Dense(2, activation="softmax")(Concatenate()([a, b]))
>>> model = Model(inputs=inputs, outputs=outputs)

Calling a layer on an ``Input`` (or on what such a call returned) builds the layer and records
the call; the model runs the recorded graph in order. Branches and merges (``Add``,
``Concatenate``) are free. A model of several inputs takes them as Keras does: a list in the
order of ``inputs`` or a dict by ``Input(name=...)``, in ``model([x1, x2])``, ``fit([x1, x2],
y)``, ``evaluate``, ``predict`` and ``validation_data=([x1, x2], y)`` (the inputs are sliced,
shuffled and batched together); ``model(x1, x2)`` works too. One output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optimist.training.data import check_input_shape
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
        return self._run(self._unpack(xs), logits=False)

    def _forward_logits(self, *xs: torch.Tensor) -> torch.Tensor:
        return self._run(self._unpack(xs), logits=True)

    def _unpack(self, xs: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(xs) == 1 and len(self._inputs) > 1 and isinstance(xs[0], (list, tuple, dict)):
            return tuple(part for part, _, _ in self._input_parts(xs[0], "x"))
        return xs

    def _input_count(self) -> int:
        return len(self._inputs)

    def _input_kinds(self) -> list[str]:
        return [self._input_kind(i) for i in range(len(self._inputs))]

    def _input_parts(self, x: Any, name: str) -> list[tuple[Any, str, str]]:
        n = len(self._inputs)
        if isinstance(x, dict):
            names = [i.name for i in self._inputs]
            if None in names:
                raise ValueError(
                    f"{name} is a dict, but not every Input has a name: give each one, "
                    f"Input(shape, name=...), or pass the inputs as a list in order"
                )
            missing = [k for k in names if k not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise ValueError(
                    f"{name} must have the keys {names} (the Input names), got {list(x)}"
                )
            return [(x[k], f"{name}[{k!r}]", self._input_kind(i)) for i, k in enumerate(names)]
        if not isinstance(x, (list, tuple)) or len(x) != n:
            got = (
                f"a {type(x).__name__} of {len(x)}"
                if isinstance(x, (list, tuple))
                else (type(x).__name__)
            )
            raise ValueError(
                f"this model has {n} inputs: pass {name} as a list of {n} arrays in the order "
                f"of Model(inputs=...) or a dict by Input name, got {got}"
            )
        return [(part, f"{name}[{i}]", self._input_kind(i)) for i, part in enumerate(x)]

    def _input_kind(self, i: int) -> str:
        """``"input_int"`` (integers kept, as indices) for an input read by an Embedding."""
        from optimist.training.layers import Embedding

        inp = self._inputs[i]
        for node in self._order:
            if any(p is inp for p in node.parents) and isinstance(node.layer, Embedding):
                return "input_int"
        return "float"

    def _check_input_shapes(self, xs: tuple[torch.Tensor, ...], name: str) -> None:
        for i, (t, inp) in enumerate(zip(xs, self._inputs, strict=True)):
            check_input_shape(tuple(t.shape), tuple(inp.shape[1:]), f"{name}[{i}]")

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
