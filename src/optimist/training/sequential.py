"""``Sequential``: a stack of layers, each feeding the next (Keras' Sequential model)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from optimist.training import placement as _placement
from optimist.training.layers import LAYER_CLASSES, InputLayer, Layer, count_weights
from optimist.training.model import Model

_CUSTOMIZABLE_KEYS = (
    "activation",
    "recurrent_activation",
    "kernel_initializer",
    "bias_initializer",
    "recurrent_initializer",
    "embeddings_initializer",
)


class Sequential(Model):
    """A linear stack of layers.

    >>> model = Sequential([Dense(10, activation="relu", input_shape=(784,)), Dense(10)])

    The first layer's ``input_shape=`` (or a leading ``Input(shape=...)``) builds every layer at
    once; without it the model builds on its first input (``fit``/``predict`` build it from the
    data before the optimizer is created). Plain ``torch.nn`` modules may be mixed in; output
    shapes after them are found with a dry run. ``state_dict`` keys are ``<layer name>.<weight>``
    (``dense.kernel``, ``dense_1.bias``...).
    """

    def __init__(self, layers: Iterable[nn.Module] | None = None, name: str | None = None):
        super().__init__(name=name or "sequential")
        self._layer_list: list[nn.Module] = []
        self._input_shape: tuple[int | None, ...] | None = None  # batch dim included
        self.built = False
        for layer in layers or []:
            self.add(layer)

    # -- structure ----------------------------------------------------------------------------
    @property
    def layers(self) -> list[nn.Module]:
        return list(self._layer_list)

    def __getitem__(self, index: int | slice | str) -> Any:
        if isinstance(index, str):
            return self.get_layer(index)
        return self._layer_list[index]

    def __len__(self) -> int:
        return len(self._layer_list)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._layer_list)

    def get_layer(self, name: str) -> nn.Module:
        for layer in self._layer_list:
            if _layer_name(layer) == name:
                return layer
        raise ValueError(
            f"no layer named {name!r}; layers: {[_layer_name(m) for m in self._layer_list]}"
        )

    def add(self, layer: nn.Module) -> None:
        """Append a layer (a Keras-style Layer or any ``torch.nn.Module``)."""
        if isinstance(layer, InputLayer):
            if self._layer_list:
                raise ValueError("Input(...) must come first in a Sequential model")
            self._input_shape = (None, *layer.input_shape_arg)  # type: ignore[misc]
            return
        if not isinstance(layer, nn.Module):
            raise ValueError(
                f"Sequential layers must be optimist layers or torch.nn.Modules, got "
                f"{type(layer).__name__}"
            )
        if any(existing is layer for existing in self._layer_list):
            raise ValueError(f"layer {_layer_name(layer)!r} is already in this model")
        name = self._unique_name(layer)
        if hasattr(self, name) and name not in self._modules:
            raise ValueError(f"layer name {name!r} clashes with an attribute of Sequential")
        self.add_module(name, layer)
        layer.train(self.training)  # inference mode outside fit, as the model
        if isinstance(layer, Layer):
            layer.name = name
        self._layer_list.append(layer)
        if len(self._layer_list) == 1 and self._input_shape is None:
            shape_arg = getattr(layer, "input_shape_arg", None)
            if shape_arg is not None:
                self._input_shape = (None, *shape_arg)
        if self._input_shape is not None:
            if self.built:
                with _placement.device(self._build_device()):
                    self._build_layer(layer, self._output_shape_of(self._layer_list[:-1]))
            else:
                self.build(self._input_shape)

    def pop(self) -> nn.Module:
        """Remove and return the last layer."""
        if not self._layer_list:
            raise ValueError("there are no layers to pop")
        layer = self._layer_list[-1]
        del self._modules[self._key_of(layer)]
        self._layer_list.pop()
        return layer

    def _key_of(self, layer: nn.Module) -> str:
        return next(k for k, v in self._modules.items() if v is layer)

    def _unique_name(self, layer: nn.Module) -> str:
        taken = set(self._modules)
        given = getattr(layer, "name", None) if isinstance(layer, Layer) else None
        if given:
            if given in taken:
                raise ValueError(f"duplicate layer name {given!r} in Sequential model")
            return given
        base = layer.default_name if isinstance(layer, Layer) else type(layer).__name__.lower()
        if base not in taken:
            return base
        i = 1
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    # -- building -----------------------------------------------------------------------------
    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        """Create every layer's parameters for inputs of ``input_shape`` (batch dim included,
        e.g. ``(None, 784)``; a shape without it is accepted when unambiguous)."""
        if input_shape is None:
            input_shape = self._input_shape
        if input_shape is None:
            raise ValueError("build needs an input shape, e.g. model.build((None, 784))")
        shape = tuple(None if d is None else int(d) for d in input_shape)
        self._input_shape = shape
        self.built = True
        with _placement.device(self._build_device()):
            current: tuple[int | None, ...] | None = shape
            for layer in self._layer_list:
                current = self._build_layer(layer, current)
                if current is None:
                    break
            if not super()._is_built():
                # Shapes unknown after a plain torch module: the rest build in a dry run.
                self._dry_run(shape)

    def _build_layer(self, layer: nn.Module, shape: tuple | None) -> tuple | None:
        if isinstance(layer, Layer):
            if shape is None:
                return None
            layer.build(shape)
            return tuple(layer.compute_output_shape(shape))
        return None

    def _dry_run(self, shape: tuple[int | None, ...]) -> None:
        sample_shape = [1 if d is None else d for d in shape]
        dtype = torch.long if self._takes_indices() else torch.get_default_dtype()
        self._probe(torch.zeros(sample_shape, dtype=dtype, device=self._device()))

    def _output_shape_of(self, layers: Sequence[nn.Module]) -> tuple | None:
        shape = self._input_shape
        for layer in layers:
            if shape is None or not isinstance(layer, Layer):
                return None
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple | None:
        shape: tuple | None = tuple(input_shape)
        for layer in self._layer_list:
            if shape is None or not isinstance(layer, Layer):
                return None
            shape = tuple(layer.compute_output_shape(shape))
        return shape

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        return self._input_shape

    @property
    def output_shape(self) -> tuple | None:
        return None if self._input_shape is None else self.compute_output_shape(self._input_shape)

    # -- engine hooks -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.built:
            self.build((None, *x.shape[1:]))
        for layer in self._layer_list:
            x = layer(x)
        return x

    def _network(self) -> nn.Module:
        return self

    def _final_activation(self) -> str | None:
        if not self._layer_list:
            return None
        last = self._layer_list[-1]
        name = getattr(last, "activation_name", None)
        if isinstance(last, Layer) and name in ("softmax", "sigmoid"):
            return name
        if isinstance(last, nn.Softmax) and last.dim in (-1, 1):
            return "softmax"
        if isinstance(last, nn.Sigmoid):
            return "sigmoid"
        return None

    def _forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        layers = self._layer_list
        for layer in layers[:-1]:
            x = layer(x)
        last = layers[-1]
        return last.pre_activation(x) if isinstance(last, Layer) else x

    def _is_built(self) -> bool:
        return self.built and super()._is_built()

    def _build_from(self, x: torch.Tensor) -> None:
        self.build((None, *x.shape[1:]))

    def _expected_input_shape(self) -> tuple[int | None, ...] | None:
        return None if self._input_shape is None else tuple(self._input_shape[1:])

    def _static_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple | None:
        return self.compute_output_shape(input_shape)

    def _summary_rows(self) -> list[tuple[str, str, int]]:
        rows = []
        shape = self._input_shape
        for layer in self._layer_list:
            if shape is not None and isinstance(layer, Layer):
                shape = tuple(layer.compute_output_shape(shape))
            else:
                shape = None
            label = f"{_layer_name(layer) if isinstance(layer, Layer) else self._key_of(layer)}"
            label += f" ({type(layer).__name__})"
            rows.append((label, "?" if shape is None else str(shape), sum(count_weights(layer))))
        if any(r[1] == "?" for r in rows) and self._sample_input is not None and self.built:
            traced = super()._summary_rows()
            rows = [(r[0], t[1], r[2]) for r, t in zip(rows, traced, strict=True)]
        return rows

    # -- config -------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """JSON-able description: layer class names and constructor arguments, in order."""
        layers = []
        for layer in self._layer_list:
            if not isinstance(layer, Layer) or type(layer).__name__ not in LAYER_CLASSES:
                raise ValueError(
                    f"cannot save layer {type(layer).__name__}: only registered optimist layers "
                    f"can be described by a config (register custom ones with "
                    f"optimist.training.layers.register_layer, or wrap the network in "
                    f"optimist.Model and pass module= to load_model)"
                )
            layers.append({"class_name": type(layer).__name__, "config": layer.get_config()})
        return {
            "name": self.name,
            "layers": layers,
            "build_input_shape": None if self._input_shape is None else list(self._input_shape),
        }

    def _config(self) -> dict[str, Any] | None:
        return self.get_config()

    @classmethod
    def from_config(
        cls, config: dict[str, Any], custom_objects: dict[str, Any] | None = None
    ) -> Sequential:
        custom = dict(custom_objects or {})
        model = cls(name=config.get("name"))
        for entry in config.get("layers", []):
            class_name = entry.get("class_name")
            layer_cls = custom.get(class_name) or LAYER_CLASSES.get(class_name)
            if layer_cls is None:
                raise ValueError(
                    f"unknown layer class {class_name!r} in the config; pass it in "
                    f"custom_objects={{{class_name!r}: {class_name}}}"
                )
            kwargs = dict(entry.get("config", {}))
            for key in _CUSTOMIZABLE_KEYS:
                value = kwargs.get(key)
                if isinstance(value, str) and value in custom:
                    kwargs[key] = custom[value]
            kwargs.pop("input_shape", None)
            try:
                layer = layer_cls.from_config(kwargs)
            except ValueError as exc:
                raise ValueError(
                    f"cannot rebuild layer {kwargs.get('name')!r} ({class_name}): {exc} (custom "
                    f"functions must be passed in custom_objects)"
                ) from None
            model.add(layer)
        shape = config.get("build_input_shape")
        if shape is not None:
            model.build(tuple(shape))
        return model


def _layer_name(layer: nn.Module) -> str:
    return getattr(layer, "name", None) or type(layer).__name__.lower()
