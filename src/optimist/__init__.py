"""optimist: deep-learning optimizers on PyTorch, a Keras-style training API, and fair comparisons.

Layers (arrows one way): ``reference`` (NumPy math) <- ``optim`` (rules on one engine, state
codecs, transforms and ``chain``, registry) <- ``monitor`` (training signals, verdicts, ``watch``,
``lr_finder``) <- ``training`` (layers, Sequential, fit, callbacks, datasets) <- ``compare`` <-
``cli``.

Heavy subpackages are imported lazily, so ``import optimist`` stays cheap.

``import optimist as keras`` gives Keras' namespaces (``keras.Input``, ``keras.models``,
``keras.layers``, ``keras.losses``, ``keras.metrics``, ``keras.optimizers`` with Keras 3's
optimizers and ``schedules``, ``keras.regularizers``, ``keras.initializers``,
``keras.activations``, ``keras.callbacks``, ``keras.utils``, ``keras.backend``,
``keras.datasets``) and ``keras.device`` (the device scope), so Keras programs run with their
imports changed.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.distributed as _dist

__version__ = "0.1.0"

from optimist import optim
from optimist.optim import chain, optimizer

if _dist.is_available():
    # Imported before any process group exists, so that its collectives' group=WORLD
    # defaults are None: imported later (by DistributedDataParallel) they keep the default
    # group alive past destroy_process_group() (optimist.training.distributed, "Teardown").
    import torch.distributed.nn.functional  # noqa: F401

# name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "reference": ("optimist.reference", None),
    "transforms": ("optimist.transforms", None),
    "schedules": ("optimist.optim.schedules", None),
    # Keras' namespaces, for ``import optimist as keras``
    "optimizers": ("optimist.optimizers", None),
    "models": ("optimist.models", None),
    "losses": ("optimist.losses", None),
    "metrics": ("optimist.metrics", None),
    "regularizers": ("optimist.regularizers", None),
    "initializers": ("optimist.initializers", None),
    "activations": ("optimist.activations", None),
    "backend": ("optimist.backend", None),
    "Input": ("optimist.training.layers", "Input"),
    "device": ("optimist.training.placement", "device"),
    "layers": ("optimist.layers", None),
    "datasets": ("optimist.datasets", None),
    "utils": ("optimist.utils", None),
    "callbacks": ("optimist.callbacks", None),
    "training": ("optimist.training", None),
    "Sequential": ("optimist.training", "Sequential"),
    "Model": ("optimist.training", "Model"),
    "fit": ("optimist.training", "fit"),
    "load_model": ("optimist.training", "load_model"),
    "monitor": ("optimist.monitor", None),
    "lr_finder": ("optimist.monitor", "lr_finder"),
    "compare": ("optimist.comparison", "compare"),
    "comparison": ("optimist.comparison", None),
}

__all__ = ["__version__", "chain", "optim", "optimizer", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'optimist' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
