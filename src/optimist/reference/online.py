"""FTRL-Proximal, the online-learning rule of large sparse linear models, from its paper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from optimist.reference._common import State, _require_nonnegative, _update_rule


@_update_rule
def ftrl(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    lr_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1: float = 0.0,
    l2: float = 0.0,
    l2_shrinkage: float = 0.0,
    beta: float = 0.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """FTRL-Proximal (McMahan et al., 2013, "Ad Click Prediction: a View from the Trenches",
    Algorithm 1), per coordinate, in TensorFlow's and Keras' form::

        g = -grad if maximize else grad
        w = param * (1 - lr * weight_decay)                   (decoupled decay first)
        sigma = ((n + g^2) ** -lr_power - n ** -lr_power) / lr
        z = z + g + 2 * l2_shrinkage * w - sigma * w
        n = n + g^2                                         (n starts at initial_accumulator_value)
        param = 0                                   where |z| <= l1
              = -(z - sign(z) * l1) / (n ** -lr_power / lr + beta / lr + 2 * l2)   elsewhere

    With ``lr_power = -0.5`` this is the paper's rule, whose denominator is
    ``(beta + sqrt(n)) / lr + lambda_2``: TensorFlow's ``l2`` is half the paper's ``lambda_2``.
    The shrinkage term's gradient enters ``z`` only, not ``n``.

    State: ``accumulator`` (n), ``linear`` (z).
    """
    _require_nonnegative(
        lr=lr,
        initial_accumulator_value=initial_accumulator_value,
        l1=l1,
        l2=l2,
        l2_shrinkage=l2_shrinkage,
        beta=beta,
        weight_decay=weight_decay,
    )
    if not lr > 0:
        raise ValueError(f"lr must be > 0 (FTRL divides by it), got {lr}")
    if not lr_power <= 0:
        raise ValueError(f"lr_power must be <= 0, got {lr_power}")
    n = state.get("accumulator", np.full_like(param, initial_accumulator_value))
    z = state.get("linear", np.zeros_like(param))
    g = -grad if maximize else grad
    w = param * (1 - lr * weight_decay)
    n_new = n + g * g
    sigma = (n_new**-lr_power - n**-lr_power) / lr
    z = z + g + 2 * l2_shrinkage * w - sigma * w
    denominator = n_new**-lr_power / lr + beta / lr + 2 * l2
    shrunk = z - np.sign(z) * l1
    param = np.where(np.abs(z) <= l1, 0.0, -shrunk / denominator)
    return param, {"accumulator": n_new, "linear": z}
