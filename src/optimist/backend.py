"""The few ``keras.backend`` helpers that classic Keras programs call.

optimist runs on PyTorch: images are channels-last like Keras' default, floats are torch's
default dtype, and there is no graph session to clear.
"""

from __future__ import annotations

import gc

import torch

__all__ = ["backend", "clear_session", "epsilon", "floatx", "image_data_format", "set_floatx"]

_EPSILON = 1e-7


def backend() -> str:
    return "torch"


def epsilon() -> float:
    """The fuzz factor of the losses (``1e-7``, Keras' default)."""
    return _EPSILON


def floatx() -> str:
    """Torch's default float dtype as a name (``"float32"``)."""
    return str(torch.get_default_dtype()).removeprefix("torch.")


def set_floatx(value: str) -> None:
    """Set torch's default float dtype (``"float32"``, ``"float64"``; ``"float16"`` and
    ``"bfloat16"`` are refused: torch only allows them as tensor dtypes, not as defaults)."""
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if value not in dtypes:
        raise ValueError(f"Unknown floatx type: {value!r}. Expected one of {sorted(dtypes)}")
    torch.set_default_dtype(dtypes[value])


def image_data_format() -> str:
    """``"channels_last"``: optimist's image layers take ``(N, H, W, C)`` as Keras does."""
    return "channels_last"


def clear_session() -> None:
    """Keras frees its global graph state here; optimist has none, so this only collects
    garbage (and resets Keras-style automatic layer names nowhere: names are per model)."""
    gc.collect()
