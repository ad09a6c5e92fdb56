"""The base of every layer: :class:`Layer` (lazy build, config, trainable, regularizer
losses), the registry of layer classes by name, the symbolic tensors and ``Input`` of the
functional API and the small argument checks the layer families share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from optimist.training import activations as _activations
from optimist.training import initializers as _initializers
from optimist.training import placement as _placement
from optimist.training import regularizers as _regularizers

Shape = tuple[int | None, ...]

LAYER_CLASSES: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Register a layer class so saved :class:`Sequential` models can rebuild it by name."""
    LAYER_CLASSES[cls.__name__] = cls
    return cls


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, int):
        out = (value, value)
    else:
        out = tuple(int(v) for v in value)
        if len(out) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(out) <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return out  # type: ignore[return-value]


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    key = str(value).lower()
    if key not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return key


def _activation_config(activation: Any) -> Any:
    if isinstance(activation, str) or activation is None:
        return activation
    name = _activations.name_of(activation)
    return name if name is not None else getattr(activation, "__name__", repr(activation))


def _initializer_config(initializer: Any) -> Any:
    return _initializers.config_of(initializer)


class Layer(nn.Module):
    """Base class: a module that knows its input/output shapes and builds lazily.

    Subclasses implement ``_build(input_shape)`` (create parameters), ``call(x)`` and
    ``compute_output_shape(input_shape)``; shapes include the batch dimension as ``None``.
    """

    default_name: ClassVar[str] = "layer"

    def __init__(
        self,
        *,
        name: str | None = None,
        input_shape: Sequence[int | None] | None = None,
        trainable: bool = True,
        input_dim: int | None = None,
        dtype: Any = None,
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
    ) -> None:
        super().__init__()
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)
        if input_dim is not None:  # Keras 2's Dense(input_dim=784) == input_shape=(784,)
            if input_shape is not None:
                raise ValueError("pass input_shape= or input_dim=, not both")
            input_shape = (int(input_dim),)
        if name is not None and (not isinstance(name, str) or not name or "." in name):
            raise ValueError(f"layer name must be a non-empty string without '.', got {name!r}")
        self.name = name
        self.input_shape_arg: Shape | None = (
            tuple(None if d is None else int(d) for d in input_shape)
            if input_shape is not None
            else None
        )
        self.built = False
        self.built_input_shape: Shape | None = None
        self._trainable = bool(trainable)

    # -- building -----------------------------------------------------------------------------
    def build(self, input_shape: Sequence[int | None]) -> None:
        """Create the parameters for inputs of ``input_shape`` (batch dimension included), on
        the device Keras 3 would use (:func:`optimist.training.placement.get_device`: the
        innermost ``optimist.device`` scope, ``KERAS_TORCH_DEVICE``, else the accelerator).
        Their initial values are drawn on the CPU from torch's global generator and then moved,
        so a seed gives the same initial weights on every device (as a torch module built and
        then moved with ``.to``)."""
        shape = tuple(None if d is None else int(d) for d in input_shape)
        if not self.built:
            target = _placement.get_device()
            with torch.device("cpu"):  # drawn on the CPU even under torch.set_default_device
                self._build(shape)
            self.to(target)
            self.built = True
            self.built_input_shape = shape
            self._apply_trainable()

    def _build(self, input_shape: Shape) -> None:
        pass

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    # -- running ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.built and isinstance(x, torch.Tensor):  # the per-batch path: straight to call
            return self.call(x)
        if is_symbolic(x):  # functional API: record the call, compute shapes only
            return SymbolicTensor.record(self, x)
        if not self.built:  # a lazy build by a call: the weights go where the input is
            with _placement.device(x.device):
                self.build((None, *x.shape[1:]))
        return self.call(x)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x

    # -- trainable ----------------------------------------------------------------------------
    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = bool(value)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        for p in self.parameters():
            p.requires_grad_(self._trainable)

    # -- introspection ------------------------------------------------------------------------
    def count_params(self) -> int:
        """Number of weights, trainable and not (moving statistics included), as Keras counts."""
        return sum(count_weights(self))

    @property
    def losses(self) -> list[torch.Tensor]:
        """This layer's weight penalties (``kernel_regularizer`` / ``bias_regularizer``)."""
        out = []
        for attr, reg in (("kernel", self.kernel_regularizer), ("bias", self.bias_regularizer)):
            weight = getattr(self, attr, None)
            if reg is not None and isinstance(weight, torch.Tensor):
                out.append(reg(weight))
        return out

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"name": self.name, "trainable": self._trainable}
        for key in ("kernel_regularizer", "bias_regularizer"):
            if getattr(self, key) is not None:
                config[key] = _regularizers.serialize(getattr(self, key))
        if self.input_shape_arg is not None:
            config["input_shape"] = list(self.input_shape_arg)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        return cls(**config)

    def get_weights(self) -> list[Any]:
        return [t.detach().cpu().numpy().copy() for t in self.state_dict().values()]

    def keras_weights(self) -> dict[int, torch.Tensor]:
        """Keras' views of parameters stored in another layout, by ``id`` of the parameter
        (``Dense``: its ``(in, units)`` kernel for its ``(units, in)`` weight)."""
        return {}

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class SymbolicTensor:
    """The output of a layer called on :func:`Input` (or on another symbolic tensor): it
    records the layer and its inputs, and knows its shape; ``Model(inputs, outputs)`` runs the
    recorded graph."""

    def __init__(self, layer: Layer, parents: list[Any], multi: bool, shape: Shape) -> None:
        self.layer, self.parents, self.multi, self.shape = layer, parents, multi, shape

    @staticmethod
    def record(layer: Layer, x: Any) -> SymbolicTensor:
        multi = isinstance(x, (list, tuple))
        parents = list(x) if multi else [x]
        shapes = [tuple(p.shape) for p in parents]
        if multi:
            layer.build(shapes)  # merge layers take a list of shapes
            shape = tuple(layer.compute_output_shape(shapes))
        else:
            layer.build(shapes[0])
            shape = tuple(layer.compute_output_shape(shapes[0]))
        return SymbolicTensor(layer, parents, multi, shape)

    def __repr__(self) -> str:
        return f"<SymbolicTensor shape={self.shape} from {type(self.layer).__name__}>"


def is_symbolic(x: Any) -> bool:
    if isinstance(x, (list, tuple)):
        return bool(x) and all(is_symbolic(v) for v in x)
    return isinstance(x, (SymbolicTensor, InputLayer))


def count_weights(module: nn.Module) -> tuple[int, int]:
    """(trainable, non_trainable) weight counts; floating buffers count as non-trainable."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    frozen += sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return trainable, frozen


class _ActivationMixin:
    """Shared by layers with an ``activation`` argument (lets the engine fold it into the loss)."""

    activation_name: str | None
    _activation: Callable[[torch.Tensor], torch.Tensor]

    def _set_activation(self, activation: Any) -> None:
        self._activation = _activations.get(activation)
        self.activation_name = _activations.name_of(activation)
        self._activation_arg = activation

    def _set_kernel_options(
        self,
        activation: Any,
        use_bias: bool,
        kernel_initializer: str | Callable[..., Any],
        bias_initializer: str | Callable[..., Any],
    ) -> None:
        """The activation, the bias switch and the two initializers of a layer with a kernel and
        an optional bias (Dense, Conv2D), the initializers resolved now (an unknown name fails
        at construction); the kernel and bias themselves are made at build."""
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._kernel_init = _initializers.get(kernel_initializer)
        self._bias_init = _initializers.get(bias_initializer)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self._activation(self.pre_activation(x))


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


@register_layer
class InputLayer(Layer):
    """What :func:`Input` returns: the input shape of a :class:`Sequential` (as its first
    entry), or the symbolic input of a functional model (``Input`` -> layers ->
    ``Model(inputs, outputs)``)."""

    default_name = "input_layer"

    def __init__(self, shape: Sequence[int | None], **kwargs: Any) -> None:
        super().__init__(input_shape=shape, **kwargs)

    @property
    def shape(self) -> Shape:
        return (None, *self.input_shape_arg)  # type: ignore[misc]

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["shape"] = config.pop("input_shape")
        return config


def Input(shape: Sequence[int | None], name: str | None = None) -> InputLayer:  # noqa: N802
    """``Input(shape=(784,))`` as the first entry of a :class:`Sequential` (batch dim excluded)."""
    return InputLayer(shape, name=name)
