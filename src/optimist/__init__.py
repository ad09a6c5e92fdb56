"""optimist: deep-learning optimizers on PyTorch, a Keras-style training API, and fair comparisons.

Layers (arrows one way): ``reference`` (NumPy math) <- ``optim`` (optimizers, kernels, registry)
<- ``training`` (layers, Sequential, fit, callbacks, datasets) <- ``compare`` <- ``cli``.

Heavy subpackages are imported lazily, so ``import optimist`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from optimist import optim
from optimist.optim import chain, optimizer, optimizers

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "reference": ("optimist.reference", None),
    "transforms": ("optimist.transforms", None),
    "schedules": ("optimist.optim.schedules", None),
    "layers": ("optimist.layers", None),
    "datasets": ("optimist.datasets", None),
    "utils": ("optimist.utils", None),
    "callbacks": ("optimist.callbacks", None),
    "training": ("optimist.training", None),
    "Sequential": ("optimist.training", "Sequential"),
    "Model": ("optimist.training", "Model"),
    "fit": ("optimist.training", "fit"),
    "load_model": ("optimist.training", "load_model"),
    "compare": ("optimist.comparison", "compare"),
    "comparison": ("optimist.comparison", None),
}

__all__ = ["__version__", "chain", "optim", "optimizer", "optimizers", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'optimist' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
