"""Keras-style layers on PyTorch.

Every layer is a ``torch.nn.Module``. Shapes follow Keras: the batch dimension comes first and
is written ``None`` in shapes; images are channels-last ``(N, H, W, C)`` unless a layer is given
``data_format="channels_first"``; sequences are ``(N, T, features)``.

A layer creates its parameters in :meth:`Layer.build` from the shape of its input, either
eagerly (the first layer of a :class:`~optimist.Sequential` given ``input_shape=``) or on the
first call. Parameters are drawn from torch's global random generator, in layer order.

Weight layouts: ``Dense.kernel`` is ``(in, units)`` as in Keras (so ``get_weights`` arrays can be
exchanged with Keras); ``Conv2D.kernel`` uses PyTorch's ``(filters, in, kh, kw)`` layout so the
convolution runs without copies; recurrent kernels use Keras' ``(in, k*units)`` layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from optimist.training import activations as _activations
from optimist.training import initializers as _initializers
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
        """Create the parameters for inputs of ``input_shape`` (batch dimension included)."""
        shape = tuple(None if d is None else int(d) for d in input_shape)
        if not self.built:
            self._build(shape)
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
        if not self.built:
            self.build((None, *x.shape[1:]))
            self.to(x.device)
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

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self._activation(self.pre_activation(x))


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


@register_layer
class Dense(_ActivationMixin, Layer):
    """Fully connected layer ``activation(x @ kernel + bias)`` on the last axis."""

    default_name = "dense"

    def __init__(
        self,
        units: int,
        activation: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        bias_initializer: str | Callable[..., Any] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense units must be a positive int, got {units!r}")
        self.units = units
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._kernel_init = _initializers.get(kernel_initializer)
        self._bias_init = _initializers.get(bias_initializer)
        self.kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        fan_in = input_shape[-1]
        if fan_in is None:
            raise ValueError(f"Dense needs a known last input dimension, got {input_shape}")
        kernel = torch.empty(fan_in, self.units)
        _initializers.initialize(kernel, self._kernel_init, fan_in, self.units)
        self.kernel = nn.Parameter(kernel)
        if self.use_bias:
            bias = torch.empty(self.units)
            _initializers.initialize(bias, self._bias_init, fan_in, self.units)
            self.bias = nn.Parameter(bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return x @ self.kernel
        if x.dim() == 2:
            return torch.addmm(self.bias, x, self.kernel)
        return x @ self.kernel + self.bias

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": _activation_config(self._activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
        }


@register_layer
class Activation(_ActivationMixin, Layer):
    """Applies an activation function (by name or callable)."""

    default_name = "activation"

    def __init__(self, activation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_activation(activation)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": _activation_config(self._activation_arg)}


@register_layer
class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs while training (scaled by 1/(1-rate))."""

    default_name = "dropout"

    def __init__(self, rate: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate}")
        self.rate = rate

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        return F.dropout(x, self.rate, True)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


@register_layer
class Flatten(Layer):
    """Flattens everything but the batch dimension (channels-last order, as Keras)."""

    default_name = "flatten"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0], None)
        return (input_shape[0], math.prod(rest))  # type: ignore[arg-type]


@register_layer
class Reshape(Layer):
    """Reshapes to ``target_shape`` (batch dimension excluded; one entry may be -1)."""

    default_name = "reshape"

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        if sum(d == -1 for d in self.target_shape) > 1:
            raise ValueError(f"Reshape target_shape may contain at most one -1: {target_shape}")

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.target_shape)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if -1 not in self.target_shape:
            return (input_shape[0], *self.target_shape)
        rest = input_shape[1:]
        if any(d is None for d in rest):
            return (input_shape[0], *(None if d == -1 else d for d in self.target_shape))
        known = math.prod(d for d in self.target_shape if d != -1)
        missing = math.prod(rest) // known  # type: ignore[arg-type]
        return (input_shape[0], *(missing if d == -1 else d for d in self.target_shape))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


def _conv_out(size: int | None, k: int, s: int, d: int, padding: str) -> int | None:
    if size is None:
        return None
    if padding == "same":
        return -(-size // s)
    return (size - d * (k - 1) - 1) // s + 1


def _same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    # TensorFlow/Keras "same": output ceil(size / s), extra padding goes after (bottom/right).
    out = -(-size // s)
    total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class _Spatial2D(Layer):
    """Common code for 2D layers: channels-last <-> channels-first and "same" padding."""

    def _init_spatial(self, padding: str, data_format: str) -> None:
        self.padding = _check_choice(padding, ("valid", "same"), "padding")
        self.data_format = _check_choice(
            data_format, ("channels_last", "channels_first"), "data_format"
        )

    def _to_nchw(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects 4D input (batch, rows, cols, channels) for "
                f"data_format={self.data_format!r}, got shape {tuple(x.shape)}"
            )
        return x.permute(0, 3, 1, 2) if self.data_format == "channels_last" else x

    def _from_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1) if self.data_format == "channels_last" else x

    def _hw_c(self, input_shape: Shape) -> tuple[int | None, int | None, int | None]:
        if len(input_shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects 4D input shapes (batch included), got {input_shape}"
            )
        if self.data_format == "channels_last":
            return input_shape[1], input_shape[2], input_shape[3]
        return input_shape[2], input_shape[3], input_shape[1]

    def _shape_out(self, input_shape: Shape, h: int | None, w: int | None, c: int | None) -> Shape:
        if self.data_format == "channels_last":
            return (input_shape[0], h, w, c)
        return (input_shape[0], c, h, w)

    def _pad_same(
        self,
        x: torch.Tensor,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        dilation: tuple[int, int],
        value: float = 0.0,
    ) -> torch.Tensor:
        top, bottom = _same_pads(x.shape[2], kernel[0], strides[0], dilation[0])
        left, right = _same_pads(x.shape[3], kernel[1], strides[1], dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), value=value)
        return x


@register_layer
class Conv2D(_ActivationMixin, _Spatial2D):
    """2D convolution. Input ``(N, H, W, C)`` (channels last, as Keras) unless
    ``data_format="channels_first"``; ``padding`` is ``"valid"`` or ``"same"`` (TensorFlow's rule:
    output size ``ceil(size / stride)``, the odd extra pixel padded at the bottom/right)."""

    default_name = "conv2d"

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str = "channels_last",
        dilation_rate: int | Sequence[int] = (1, 1),
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        bias_initializer: str | Callable[..., Any] = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"Conv2D filters must be a positive int, got {filters!r}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.dilation_rate = _pair(dilation_rate, "dilation_rate")
        self._init_spatial(padding, data_format)
        self._set_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._kernel_init = _initializers.get(kernel_initializer)
        self._bias_init = _initializers.get(bias_initializer)
        self.kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None
        # "same" with stride 1 and an odd effective kernel pads symmetrically: let conv2d do it.
        eff = [d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation_rate, strict=True)]
        self._symmetric_same = (
            self.padding == "same" and self.strides == (1, 1) and all(e % 2 == 1 for e in eff)
        )
        self._conv_padding = tuple(e // 2 for e in eff) if self._symmetric_same else (0, 0)

    def _build(self, input_shape: Shape) -> None:
        _, _, channels = self._hw_c(input_shape)
        if channels is None:
            raise ValueError(f"Conv2D needs a known channel dimension, got {input_shape}")
        kh, kw = self.kernel_size
        fan_in, fan_out = channels * kh * kw, self.filters * kh * kw
        kernel = torch.empty(self.filters, channels, kh, kw)
        _initializers.initialize(kernel, self._kernel_init, fan_in, fan_out)
        self.kernel = nn.Parameter(kernel)
        if self.use_bias:
            bias = torch.empty(self.filters)
            _initializers.initialize(bias, self._bias_init, fan_in, fan_out)
            self.bias = nn.Parameter(bias)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, _ = self._hw_c(input_shape)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation_rate
        return self._shape_out(
            input_shape,
            _conv_out(h, kh, sh, dh, self.padding),
            _conv_out(w, kw, sw, dw, self.padding),
            self.filters,
        )

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same" and not self._symmetric_same:
            x = self._pad_same(x, self.kernel_size, self.strides, self.dilation_rate)
        y = F.conv2d(
            x, self.kernel, self.bias, self.strides, self._conv_padding, self.dilation_rate
        )
        return self._from_nchw(y)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": list(self.dilation_rate),
            "activation": _activation_config(self._activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
        }


class _Pooling2D(_Spatial2D):
    def __init__(
        self,
        pool_size: int | Sequence[int] = (2, 2),
        strides: int | Sequence[int] | None = None,
        padding: str = "valid",
        data_format: str = "channels_last",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        self._init_spatial(padding, data_format)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = self._hw_c(input_shape)
        (ph, pw), (sh, sw) = self.pool_size, self.strides
        return self._shape_out(
            input_shape,
            _conv_out(h, ph, sh, 1, self.padding),
            _conv_out(w, pw, sw, 1, self.padding),
            c,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "data_format": self.data_format,
        }


@register_layer
class MaxPooling2D(_Pooling2D):
    """2D max pooling (``strides`` default to ``pool_size``; channels last by default)."""

    default_name = "max_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same":
            x = self._pad_same(x, self.pool_size, self.strides, (1, 1), value=-math.inf)
        return self._from_nchw(F.max_pool2d(x, self.pool_size, self.strides))


@register_layer
class AveragePooling2D(_Pooling2D):
    """2D average pooling; with ``padding="same"`` the padded cells are not averaged (Keras)."""

    default_name = "average_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        x = self._to_nchw(x)
        if self.padding == "same":
            ones = torch.ones_like(x[:1, :1])
            x = self._pad_same(x, self.pool_size, self.strides, (1, 1))
            ones = self._pad_same(ones, self.pool_size, self.strides, (1, 1))
            y = F.avg_pool2d(x, self.pool_size, self.strides)
            y = y / F.avg_pool2d(ones, self.pool_size, self.strides)
        else:
            y = F.avg_pool2d(x, self.pool_size, self.strides)
        return self._from_nchw(y)


class _GlobalPooling2D(_Spatial2D):
    def __init__(self, data_format: str = "channels_last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_spatial("valid", data_format)

    def _dims(self) -> tuple[int, int]:
        return (1, 2) if self.data_format == "channels_last" else (2, 3)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        _, _, c = self._hw_c(input_shape)
        return (input_shape[0], c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "data_format": self.data_format}


@register_layer
class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over the spatial dimensions: ``(N, H, W, C) -> (N, C)``."""

    default_name = "global_average_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self._dims())


@register_layer
class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over the spatial dimensions: ``(N, H, W, C) -> (N, C)``."""

    default_name = "global_max_pooling2d"

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=self._dims())


@register_layer
class BatchNormalization(Layer):
    """Batch normalization over ``axis`` (default last, i.e. channels-last features).

    Keras conventions: ``momentum=0.99`` is the weight of the *old* moving statistic and
    ``epsilon=1e-3``. Trainable ``gamma``/``beta``; ``moving_mean``/``moving_variance`` are buffers
    (counted as non-trainable weights). As in PyTorch, the moving variance is updated with the
    unbiased batch variance (Keras uses the biased one: a factor ``n / (n - 1)`` apart).
    """

    default_name = "batch_normalization"

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"BatchNormalization momentum must be in [0, 1), got {momentum}")
        if epsilon <= 0:
            raise ValueError(f"BatchNormalization epsilon must be positive, got {epsilon}")
        self.axis = int(axis)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = bool(center)
        self.scale = bool(scale)
        self.gamma: nn.Parameter | None = None
        self.beta: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        features = input_shape[self.axis]
        if self.axis == 0 or self.axis == -len(input_shape) or features is None:
            raise ValueError(
                f"BatchNormalization axis {self.axis} must name a known, non-batch dimension of "
                f"{input_shape}"
            )
        if self.scale:
            self.gamma = nn.Parameter(torch.ones(features))
        if self.center:
            self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("moving_mean", torch.zeros(features))
        self.register_buffer("moving_variance", torch.ones(features))

    def call(self, x: torch.Tensor) -> torch.Tensor:
        last = self.axis in (-1, x.dim() - 1)
        moved = x if last else x.movedim(self.axis, -1)
        shape = moved.shape
        y = F.batch_norm(
            moved.reshape(-1, shape[-1]),
            self.moving_mean,
            self.moving_variance,
            self.gamma,
            self.beta,
            self.training,
            1.0 - self.momentum,
            self.epsilon,
        ).reshape(shape)
        return y if last else y.movedim(-1, self.axis)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }


@register_layer
class Embedding(Layer):
    """Maps integer indices in ``[0, input_dim)`` to vectors of size ``output_dim``."""

    default_name = "embedding"

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        embeddings_initializer: str | Callable[..., Any] = "uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if input_dim <= 0 or output_dim <= 0:
            raise ValueError(
                f"Embedding input_dim and output_dim must be positive, got {input_dim}, "
                f"{output_dim}"
            )
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.embeddings_initializer = embeddings_initializer
        self._init = _initializers.get(embeddings_initializer)
        self.embeddings: nn.Parameter | None = None

    def _build(self, input_shape: Shape) -> None:
        table = torch.empty(self.input_dim, self.output_dim)
        _initializers.initialize(table, self._init, self.input_dim, self.output_dim)
        self.embeddings = nn.Parameter(table)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.long()
        return F.embedding(x, self.embeddings)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": _initializer_config(self.embeddings_initializer),
        }


class _Recurrent(Layer):
    """Shared code for LSTM/GRU over batch-first ``(N, T, features)`` input."""

    gates: ClassVar[int] = 1

    def __init__(
        self,
        units: int,
        activation: Any = "tanh",
        recurrent_activation: Any = "sigmoid",
        use_bias: bool = True,
        kernel_initializer: str | Callable[..., Any] = "glorot_uniform",
        recurrent_initializer: str | Callable[..., Any] = "orthogonal",
        bias_initializer: str | Callable[..., Any] = "zeros",
        return_sequences: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ValueError(f"{type(self).__name__} units must be a positive int, got {units!r}")
        self.units = units
        self._activation_arg = activation
        self._recurrent_activation_arg = recurrent_activation
        self._act = _activations.get(activation)
        self._rec_act = _activations.get(recurrent_activation)
        # The fused torch kernels implement exactly tanh / sigmoid.
        self._fused = (
            _activations.name_of(activation) == "tanh"
            and _activations.name_of(recurrent_activation) == "sigmoid"
        )
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.recurrent_initializer = recurrent_initializer
        self.bias_initializer = bias_initializer
        self.return_sequences = bool(return_sequences)
        self.kernel: nn.Parameter | None = None
        self.recurrent_kernel: nn.Parameter | None = None
        self.bias: nn.Parameter | None = None

    def _bias_shape(self) -> tuple[int, ...]:
        return (self.gates * self.units,)

    def _build(self, input_shape: Shape) -> None:
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, timesteps, features) with "
                f"known features, got {input_shape}"
            )
        n_in, g = input_shape[-1], self.gates * self.units
        kernel = torch.empty(n_in, g)
        _initializers.initialize(kernel, _initializers.get(self.kernel_initializer), n_in, g)
        rec = torch.empty(self.units, g)
        _initializers.initialize(rec, _initializers.get(self.recurrent_initializer), self.units, g)
        self.kernel = nn.Parameter(kernel)
        self.recurrent_kernel = nn.Parameter(rec)
        if self.use_bias:
            bias = torch.empty(self._bias_shape())
            _initializers.initialize(bias, _initializers.get(self.bias_initializer), n_in, g)
            self._adjust_bias(bias)
            self.bias = nn.Parameter(bias)

    def _adjust_bias(self, bias: torch.Tensor) -> None:
        pass

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(
                f"{type(self).__name__} expects input (batch, timesteps, features), got shape "
                f"{tuple(x.shape)}"
            )
        seq = self._fused_call(x) if self._fused else self._loop_call(x)
        return seq if self.return_sequences else seq[:, -1]

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "activation": _activation_config(self._activation_arg),
            "recurrent_activation": _activation_config(self._recurrent_activation_arg),
            "use_bias": self.use_bias,
            "kernel_initializer": _initializer_config(self.kernel_initializer),
            "recurrent_initializer": _initializer_config(self.recurrent_initializer),
            "bias_initializer": _initializer_config(self.bias_initializer),
            "return_sequences": self.return_sequences,
        }


@register_layer
class LSTM(_Recurrent):
    """Long short-term memory layer (Keras gate order i, f, c, o; ``unit_forget_bias`` sets the
    forget-gate bias to 1). Parameters: ``kernel (in, 4u)``, ``recurrent_kernel (u, 4u)``,
    ``bias (4u)``. Uses PyTorch's fused LSTM kernel for the default tanh/sigmoid activations."""

    default_name = "lstm"
    gates = 4

    def __init__(self, units: int, *args: Any, unit_forget_bias: bool = True, **kwargs: Any):
        super().__init__(units, *args, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _adjust_bias(self, bias: torch.Tensor) -> None:
        if self.unit_forget_bias:
            bias[self.units : 2 * self.units] = 1.0

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:
        h0 = x.new_zeros(1, x.shape[0], self.units)
        params = [self.kernel.t(), self.recurrent_kernel.t()]
        if self.bias is not None:
            params += [self.bias, torch.zeros_like(self.bias)]
        out, _, _ = torch.lstm(
            x, (h0, h0), params, self.bias is not None, 1, 0.0, self.training, False, True
        )
        return out

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:
        xw = x @ self.kernel
        if self.bias is not None:
            xw = xw + self.bias
        h = x.new_zeros(x.shape[0], self.units)
        c = h
        outputs = []
        for t in range(x.shape[1]):
            z = xw[:, t] + h @ self.recurrent_kernel
            i, f, g, o = z.chunk(4, dim=-1)
            c = self._rec_act(f) * c + self._rec_act(i) * self._act(g)
            h = self._rec_act(o) * self._act(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@register_layer
class GRU(_Recurrent):
    """Gated recurrent unit, Keras' default ``reset_after=True`` form (gate order z, r, h).
    Parameters: ``kernel (in, 3u)``, ``recurrent_kernel (u, 3u)``, ``bias (2, 3u)`` (input and
    recurrent biases). Uses PyTorch's fused GRU kernel for the default activations."""

    default_name = "gru"
    gates = 3

    def _bias_shape(self) -> tuple[int, ...]:
        return (2, 3 * self.units)

    @staticmethod
    def _to_torch_order(w: torch.Tensor, units: int) -> torch.Tensor:
        # Keras (z, r, h) -> torch (r, z, n) along the last axis.
        return torch.cat([w[..., units : 2 * units], w[..., :units], w[..., 2 * units :]], dim=-1)

    def _fused_call(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        h0 = x.new_zeros(1, x.shape[0], u)
        params = [
            self._to_torch_order(self.kernel, u).t(),
            self._to_torch_order(self.recurrent_kernel, u).t(),
        ]
        if self.bias is not None:
            params += [
                self._to_torch_order(self.bias[0], u),
                self._to_torch_order(self.bias[1], u),
            ]
        out, _ = torch.gru(x, h0, params, self.bias is not None, 1, 0.0, self.training, False, True)
        return out

    def _loop_call(self, x: torch.Tensor) -> torch.Tensor:
        u = self.units
        xw = x @ self.kernel
        if self.bias is not None:
            xw = xw + self.bias[0]
        h = x.new_zeros(x.shape[0], u)
        outputs = []
        for t in range(x.shape[1]):
            inner = h @ self.recurrent_kernel
            if self.bias is not None:
                inner = inner + self.bias[1]
            xz, xr, xh = xw[:, t].split(u, dim=-1)
            hz, hr, hh = inner.split(u, dim=-1)
            z = self._rec_act(xz + hz)
            r = self._rec_act(xr + hr)
            candidate = self._act(xh + r * hh)
            h = z * h + (1.0 - z) * candidate
            outputs.append(h)
        return torch.stack(outputs, dim=1)


# Layers of other files register themselves in LAYER_CLASSES on import (they subclass Layer).
from optimist.training import layers_more as _more_layers  # noqa: E402
from optimist.training import layers_seq as _seq_layers  # noqa: E402
from optimist.training.layers_more import *  # noqa: E402, F403
from optimist.training.layers_seq import *  # noqa: E402, F403

__all__ = [
    "LAYER_CLASSES",
    "Activation",
    "AveragePooling2D",
    "BatchNormalization",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "SymbolicTensor",
    "LSTM",
    "Layer",
    "MaxPooling2D",
    "Reshape",
    "count_weights",
    "register_layer",
    *_more_layers.__all__,
    *_seq_layers.__all__,
]
