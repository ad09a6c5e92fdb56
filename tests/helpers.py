"""Shared test helpers.

``require`` skips a test whose outside resource (a data package, a database server, a browser) is
missing on a developer's machine, but fails it under CI (``CI`` set in the environment), where
``.ci/run`` installs every such resource: a missing install step must not turn into a silent skip.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch


def require(available: bool, what: str, how_to_install: str) -> None:
    """Skip (locally) or fail (in CI) unless ``available``."""
    if available:
        return
    message = f"{what} is not available; install it with: {how_to_install}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {message}")
    pytest.skip(message)


# Keras 3's torch backend converts tensors with np.array(tensor), which NumPy 2 warns about (torch's
# Tensor.__array__ takes no ``copy``): Keras's own warning, raised inside Keras in every test that
# runs it as the oracle. Those tests ignore that message from Keras, nothing else.
KERAS_NUMPY2 = (
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning:keras"
)

PEERS = {  # importable name: (what it is, how .ci/run installs it)
    "optax": ("Optax (JAX on CPU)", "pip install jax optax"),
    "pytorch_optimizer": ("pytorch_optimizer", "pip install --no-deps pytorch-optimizer==4.1.0"),
    "lion_pytorch": ("lion-pytorch", "pip install --no-deps lion-pytorch==0.2.5"),
    "adopt": ("the ADOPT authors' package", "pip install --no-deps torch-adopt"),
    "schedulefree": ("the Schedule-Free authors' package", "pip install --no-deps schedulefree"),
    "sophia_opt": ("the Sophia authors' code", "pip install --no-deps sophia-opt==0.2.2"),
    "prodigyopt": ("the Prodigy authors' package", "pip install --no-deps prodigyopt==1.1.2"),
}


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as the module ``name``: registered in ``sys.modules``
    (dataclasses look their module up there), with the benchmarks folder on ``sys.path`` (the
    scripts import each other, e.g. ``step_speed``, from beside them)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def peer(name: str) -> ModuleType:
    """The peer package ``name`` (a key of ``PEERS``), imported; :func:`require` it first."""
    what, how_to_install = PEERS[name]
    require(importlib.util.find_spec(name) is not None, what, how_to_install)
    return importlib.import_module(name)


def needs_optax() -> ModuleType:
    """Optax (with ``optax.contrib``) on JAX in float64, as every comparison with it runs."""
    peer("optax")
    import jax

    jax.config.update("jax_enable_x64", True)
    import optax
    import optax.contrib  # noqa: F401

    return optax


def needs_engine() -> None:
    """Skip (locally) or fail (in CI) a test of the C++ engine where it cannot be built."""
    from optimist.optim import engine

    if not engine.available():
        require(False, "the C++ engine", "a C++ compiler and ninja")


def device_under_test() -> torch.device | None:
    """The device tests/cuda runs on: ``OPTIMIST_TEST_DEVICE`` if set (``cpu`` runs them here),
    else CUDA where it is available, else None (skipped)."""
    wanted = os.environ.get("OPTIMIST_TEST_DEVICE")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda") if torch.cuda.is_available() else None


requires_device = pytest.mark.skipif(
    device_under_test() is None,
    reason="no CUDA device (OPTIMIST_TEST_DEVICE=cpu runs these on the CPU)",
)
"""The mark of every tests/cuda module that needs :func:`device_under_test`."""
