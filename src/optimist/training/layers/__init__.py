"""Keras-style layers on PyTorch.

Every layer is a ``torch.nn.Module``. Shapes follow Keras: the batch dimension comes first and
is written ``None`` in shapes; images are channels-last ``(N, H, W, C)`` unless a layer is given
``data_format="channels_first"``; sequences are ``(N, T, features)``.

A layer creates its parameters in :meth:`Layer.build` from the shape of its input, either
eagerly (the first layer of a :class:`~optimist.Sequential` given ``input_shape=``) or on the
first call. Parameters are drawn from torch's global random generator, in layer order.

Weight layouts: ``Dense.kernel`` is ``(in, units)`` as in Keras (so ``get_weights`` arrays can be
exchanged with Keras), a view of the parameter ``Dense.weight``, stored ``(units, in)`` as
``nn.Linear``'s for speed; ``Conv2D.kernel`` uses PyTorch's ``(filters, in, kh, kw)`` layout so the
convolution runs without copies; recurrent kernels use Keras' ``(in, k*units)`` layout.
"""

from __future__ import annotations

from optimist.training.layers.activations import LeakyReLU, ReLU, Softmax
from optimist.training.layers.base import (
    LAYER_CLASSES,
    Input,
    InputLayer,
    Layer,
    SymbolicTensor,
    count_weights,
    register_layer,
)
from optimist.training.layers.base import Shape as Shape
from optimist.training.layers.base import is_symbolic as is_symbolic
from optimist.training.layers.convolutional import Conv1D, Conv2D
from optimist.training.layers.core import (
    Activation,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Reshape,
)
from optimist.training.layers.merging import Add, Concatenate
from optimist.training.layers.normalization import BatchNormalization
from optimist.training.layers.pooling import (
    AveragePooling2D,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    MaxPooling2D,
)
from optimist.training.layers.preprocessing import Normalization, Rescaling
from optimist.training.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed

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
    "Add",
    "Concatenate",
    "LeakyReLU",
    "Normalization",
    "ReLU",
    "Rescaling",
    "Softmax",
    "Bidirectional",
    "Conv1D",
    "SimpleRNN",
    "TimeDistributed",
]
