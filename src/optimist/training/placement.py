"""Where Keras-style models build their weights: Keras 3's torch-backend rule.

The device a layer's weights are created on (when it is *built*, not when it is constructed) is,
first to last:

1. the innermost ``optimist.device(name)`` scope active at that moment (``keras.device``);
2. the ``KERAS_TORCH_DEVICE`` environment variable (Keras' own, e.g. ``cpu`` or ``cuda:1``);
3. ``mps`` if ``torch.backends.mps.is_available()``, else ``cuda`` if
   ``torch.cuda.is_available()``, else ``xpu`` if ``torch.xpu.is_available()``, else ``cpu``
   (Keras' order).

Keras reads 2 and 3 once, when it is imported; optimist reads them at each build, so a variable
set (or a device made visible) after ``import optimist`` counts. Names are Keras': case does
not matter and ``gpu`` means ``cuda`` (``"gpu:1"`` is ``cuda:1``).

This rule is for the weights optimist builds itself (its layers in ``Sequential``, a functional
``Model`` or a ``Model`` subclass). A ``torch.nn.Module`` the user made keeps its own device,
as in torch (see ``Model._build_device``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

__all__ = ["ENV_VAR", "default_device", "device", "get_device", "parse_device"]

ENV_VAR = "KERAS_TORCH_DEVICE"


class _Scopes(threading.local):
    def __init__(self) -> None:
        self.stack: list[torch.device] = []


_SCOPES = _Scopes()  # per thread, as Keras' global_state


def parse_device(name: str | torch.device, what: str = "device_name") -> torch.device:
    """``name`` as a ``torch.device`` (``"gpu"`` -> ``cuda``, case ignored), or a one-line
    ``ValueError`` saying what was wrong; an accelerator that torch cannot see is refused here
    rather than at the first weight."""
    if isinstance(name, torch.device):
        dev = name
    elif isinstance(name, str) and name.strip():
        text = name.strip().lower().replace("gpu", "cuda")
        try:
            dev = torch.device(text)
        except RuntimeError:
            raise ValueError(
                f"Invalid value for argument `{what}`: expected a device such as 'cpu', 'gpu', "
                f"'gpu:1', 'cuda', 'mps' or 'meta'. Received: {what}={name!r}"
            ) from None
    else:
        raise ValueError(
            f"Invalid value for argument `{what}`: expected a string like 'gpu:0' or 'cpu'. "
            f"Received: {what}={name!r}"
        )
    if not _available(dev):
        raise ValueError(
            f"{what}={str(name)!r}: torch sees no {dev.type} device here "
            f"(torch.{_probe_name(dev.type)}() is False)"
        )
    return dev


def _probe_name(kind: str) -> str:
    return "backends.mps.is_available" if kind == "mps" else f"{kind}.is_available"


def _available(dev: torch.device) -> bool:
    if dev.type == "cuda":
        return torch.cuda.is_available()
    if dev.type == "mps":
        return torch.backends.mps.is_available()
    if dev.type == "xpu":
        return hasattr(torch, "xpu") and torch.xpu.is_available()
    return True


def default_device() -> torch.device:
    """The device outside any scope: ``KERAS_TORCH_DEVICE`` if set, else the first of mps,
    cuda, xpu that torch reports available, else the CPU."""
    env = os.environ.get(ENV_VAR)
    if env:
        return parse_device(env, ENV_VAR)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return torch.device("xpu")
    return torch.device("cpu")


def get_device() -> torch.device:
    """The device Keras-style weights are built on now: the innermost :func:`device` scope,
    else :func:`default_device`."""
    return _SCOPES.stack[-1] if _SCOPES.stack else default_device()


@contextlib.contextmanager
def device(device_name: str | torch.device) -> Iterator[torch.device]:
    """``with optimist.device("cpu"): ...`` (Keras' ``keras.device``): Keras-style weights
    built inside go to that device. Scopes nest (the innermost wins) and the previous device
    comes back on exit, also when the body raises. Yields the ``torch.device``.

    >>> with optimist.device("gpu:0"):
    ...     model = optimist.Sequential([optimist.Input((8,)), optimist.layers.Dense(1)])
    """
    dev = parse_device(device_name)
    _SCOPES.stack.append(dev)
    try:
        yield dev
    finally:
        _SCOPES.stack.pop()
