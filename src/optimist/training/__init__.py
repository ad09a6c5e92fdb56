"""Keras-style training on PyTorch: layers, ``Sequential``/``Model``, compile/fit/evaluate/predict,
callbacks and checkpoints.

>>> import optimist
>>> from optimist.layers import Dense
>>> model = optimist.Sequential([Dense(10, activation="relu", input_shape=(784,)),
...                              Dense(10, activation="softmax")])
>>> model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
"""

from __future__ import annotations

from optimist.training import activations, callbacks, initializers, layers, losses, metrics
from optimist.training.callbacks import Callback
from optimist.training.history import History
from optimist.training.model import Model, fit, load_model
from optimist.training.sequential import Sequential

__all__ = [
    "Callback",
    "History",
    "Model",
    "Sequential",
    "activations",
    "callbacks",
    "fit",
    "initializers",
    "layers",
    "load_model",
    "losses",
    "metrics",
]
