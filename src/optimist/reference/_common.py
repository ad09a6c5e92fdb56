"""Shared input handling of the NumPy reference rules (see :mod:`optimist.reference`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

State = dict[str, Any]
Rule = Callable[..., tuple[np.ndarray, State]]


# --------------------------------------------------------------------------- helpers


def _require_nonnegative(**values: float) -> None:
    """Raise ``ValueError`` unless every value is ``>= 0`` (NaN fails too)."""
    for name, value in values.items():
        if not value >= 0.0:  # written so that NaN fails too
            raise ValueError(f"{name} must be >= 0, got {value}")


def _require_betas(betas: tuple[float, float]) -> tuple[float, float]:
    """Return ``(beta1, beta2)``, each checked to lie in ``[0, 1)``."""
    if len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
    return betas[0], betas[1]


def _as_float_array(x: Any, name: str) -> np.ndarray:
    array = np.asarray(x)
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype.kind not in "fc":
        raise ValueError(f"{name} must be a real or complex array, got dtype {array.dtype}")
    return array


def _view_as_real(x: np.ndarray) -> np.ndarray:
    """Complex array of shape ``S`` -> real array of shape ``S + (2,)`` (real, imag)."""
    return np.stack([x.real, x.imag], axis=-1)


def _view_as_complex(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_view_as_real`."""
    return np.asarray(x[..., 0] + 1j * x[..., 1])


def _as_array(x: Any) -> Any:
    """Arithmetic on 0-d arrays gives NumPy scalars: turn those back into arrays."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def _update_rule(rule: Rule) -> Rule:
    """Shared input handling for every rule.

    Checks that ``param`` and ``grad`` match, and runs complex parameters through
    the rule as real arrays holding (real, imag) pairs, converting the new
    parameter and the state arrays back to complex afterwards.
    """

    @functools.wraps(rule)
    def wrapper(
        param: Any, grad: Any, state: Mapping[str, Any], **hyperparameters: Any
    ) -> tuple[np.ndarray, State]:
        param = _as_float_array(param, "param")
        grad = _as_float_array(grad, "grad")
        if param.shape != grad.shape:
            raise ValueError(
                f"param and grad must have the same shape, got param shape {param.shape} "
                f"and grad shape {grad.shape}"
            )
        if np.iscomplexobj(param) != np.iscomplexobj(grad):
            raise ValueError(
                f"param and grad must both be real or both be complex, got param dtype "
                f"{param.dtype} and grad dtype {grad.dtype}"
            )
        dtype = np.result_type(param, grad)
        param, grad = param.astype(dtype, copy=False), grad.astype(dtype, copy=False)
        if not np.iscomplexobj(param):
            new_param, new_state = rule(param, grad, state, **hyperparameters)
            return _as_array(new_param), {key: _as_array(v) for key, v in new_state.items()}

        real_state = {
            key: _view_as_real(v) if isinstance(v, np.ndarray) else v for key, v in state.items()
        }
        new_param, new_state = rule(
            _view_as_real(param), _view_as_real(grad), real_state, **hyperparameters
        )
        return _view_as_complex(new_param), {
            key: _view_as_complex(v) if isinstance(v, np.ndarray) else v
            for key, v in new_state.items()
        }

    return wrapper
