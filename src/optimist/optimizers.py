"""Keras 3 optimizers: ``optimist.optimizers.Adam(learning_rate=1e-3)``, ``.schedules``.

The Keras-style surface (for ``model.compile``): Keras 3's class names, argument names,
defaults and update rules, built lazily on the model's parameters onto optimist's exact
``optimist.optim`` optimizers. See :mod:`optimist.training.optimizers` for the mapping.

The torch-style surface is elsewhere and keeps torch's conventions: ``optimist.optim.Adam(params,
lr=...)`` and ``optimist.optimizer(name, params)``; ``optimist.optim.optimizers()`` lists the
registry's names. For backward compatibility this module can still be called,
``optimist.optimizers()``, and returns that same listing.
"""

from __future__ import annotations

import sys
import types

from optimist.optim.registry import optimizers as _registry_listing
from optimist.training import schedules
from optimist.training.optimizers import (
    SGD,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    Ftrl,
    Lamb,
    Lion,
    LossScaleOptimizer,
    MultiOptimizer,
    Muon,
    Nadam,
    Optimizer,
    OptimizerMap,
    RMSprop,
    ScheduleFreeAdamW,
    deserialize,
    get,
    serialize,
)

__all__ = [
    "SGD",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Muon",
    "Lamb",
    "Lion",
    "LossScaleOptimizer",
    "MultiOptimizer",
    "Ftrl",
    "Nadam",
    "Optimizer",
    "OptimizerMap",
    "RMSprop",
    "ScheduleFreeAdamW",
    "deserialize",
    "get",
    "schedules",
    "serialize",
]


class _CallableModule(types.ModuleType):
    """Lets ``optimist.optimizers()`` keep returning the registry listing (older API)."""

    def __call__(self) -> dict[str, str]:
        return _registry_listing()


sys.modules[__name__].__class__ = _CallableModule
