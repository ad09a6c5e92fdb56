"""Prodigy, Sophia and Lookahead, from their papers' pseudo-code.

Prodigy's step size is global: it sums over every parameter. These functions take ``param`` as
the whole parameter vector (pass the concatenation of several tensors to check a multi-tensor
optimizer; the sums are the same up to their order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimist.reference._common import State, _require_betas, _require_nonnegative, _update_rule


@_update_rule
def prodigy(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = True,
    use_bias_correction: bool = False,
    safeguard_warmup: bool = False,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = math.inf,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Prodigy, Adam version (Mishchenko & Defazio, 2023, Algorithm 3; as ``prodigyopt``).

    ::

        g = -grad if maximize else grad;  g += wd x  (if not decouple)
        eta = d lr [sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) if use_bias_correction]
        r = beta3 r + (d / d0) eta <g, x0 - x>
        m = beta1 m + (1 - beta1) d g;   v = beta2 v + (1 - beta2) d^2 g^2
        s = beta3 s + (d / d0) (d if safeguard_warmup else eta) g
        d_hat = d_coef r / |s|_1;  d_max = max(d_max, d_hat)
        d_new = min(d_max, d growth_rate)   (d = max(d, d_hat) first while d == d0)
        x = x (1 - wd eta) [if decouple] - eta m / (sqrt(v) + d_new eps)
            (beta1 = 0: - eta d_new g / (sqrt(v) + d_new eps))

    ``beta3`` defaults to ``sqrt(beta2)``. A step with ``|s|_1 == 0`` changes nothing.

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v), ``s``, ``p0`` (x0), and the scalars
    ``d``, ``d_max``, ``d_numerator`` (r), ``k``.
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay, d_coef=d_coef)
    beta1, beta2 = _require_betas(betas)
    b3 = math.sqrt(beta2) if beta3 is None else beta3
    k = state.get("k", 0)
    d, d_max = state.get("d", d0), state.get("d_max", d0)
    x0 = state.get("p0", param)
    g = -grad if maximize else grad
    if weight_decay and not decouple:
        g = g + weight_decay * param
    bc = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1)) if use_bias_correction else 1.0
    eta = d * lr * bc
    r = b3 * state.get("d_numerator", 0.0) + (d / d0) * eta * float(np.sum(g * (x0 - param)))
    m = beta1 * state.get("exp_avg", np.zeros_like(param)) + (1 - beta1) * d * g
    v = beta2 * state.get("exp_avg_sq", np.zeros_like(param)) + (1 - beta2) * d * d * g * g
    s = b3 * state.get("s", np.zeros_like(param)) + (d / d0) * (d if safeguard_warmup else eta) * g
    norm = float(np.sum(np.abs(s)))
    if norm == 0.0:
        return param, dict(state)
    d_new = d
    if lr > 0:
        d_hat = d_coef * r / norm
        if d == d0:
            d_new = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d_new = min(d_max, d_new * growth_rate)
    x = param * (1 - weight_decay * eta) if decouple else param
    numerator = m if beta1 > 0 else d_new * g
    x = x - eta * numerator / (np.sqrt(v) + d_new * eps)
    new_state: State = {"step": state.get("step", 0) + 1, "exp_avg_sq": v, "s": s, "p0": x0}
    if beta1 > 0:
        new_state["exp_avg"] = m
    new_state.update(d=d_new, d_max=d_max, d_numerator=r, k=k + 1)
    return x, new_state


@_update_rule
def sophia_g(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.965, 0.99),
    rho: float = 0.04,
    weight_decay: float = 0.1,
    bs: int = 5120,
    eps: float = 1e-15,
    eps_form: str = "add",
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """SophiaG's step (Liu et al., 2023, Algorithm 3; the authors' conventions).

    ::

        g = -grad if maximize else grad
        param = param * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g
        d = rho * bs * h + eps          # eps_form "add": the authors' code
        d = max(rho * bs * h, eps)      # eps_form "max": the paper's Algorithm 3, Optax
        param = param - lr * sign(m) * min(|m| / d, 1)

    ``h`` (state ``hessian``, zero at first) changes only in :func:`sophia_g_update_hessian`.

    State: ``exp_avg`` (m), ``hessian`` (h).
    """
    _require_nonnegative(lr=lr, rho=rho, weight_decay=weight_decay, eps=eps)
    if eps_form not in ("add", "max"):
        raise ValueError(f"eps_form must be 'add' or 'max', got {eps_form!r}")
    beta1, _ = _require_betas(betas)
    h = state.get("hessian", np.zeros_like(param))
    g = -grad if maximize else grad
    param = param * (1 - lr * weight_decay)
    m = beta1 * state.get("exp_avg", np.zeros_like(param)) + (1 - beta1) * g
    d = np.maximum(rho * bs * h, eps) if eps_form == "max" else rho * bs * h + eps
    param = param - lr * np.sign(m) * np.minimum(np.abs(m) / d, 1.0)
    return param, {"exp_avg": m, "hessian": h}


@_update_rule
def sophia_g_update_hessian(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    betas: tuple[float, float] = (0.965, 0.99),
) -> tuple[np.ndarray, State]:
    """SophiaG's curvature EMA from a GNB gradient (Algorithm 2): ``h = b2 h + (1 - b2) g^2``.

    ``param`` is returned unchanged.
    """
    _, beta2 = _require_betas(betas)
    h = beta2 * state.get("hessian", np.zeros_like(param)) + (1 - beta2) * grad * grad
    return param, {"exp_avg": state.get("exp_avg", np.zeros_like(param)), "hessian": h}


def lookahead(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    inner: str = "adam",
    k: int = 5,
    alpha: float = 0.5,
    reset_state: bool = False,
    **inner_hyperparameters: Any,
) -> tuple[np.ndarray, State]:
    """Lookahead (Zhang et al., 2019, Algorithm 1) over the reference rule named ``inner``.

    ::

        slow = param at the first call
        param, inner_state = RULES[inner](param, grad, inner_state, **inner_hyperparameters)
        every k-th call:  slow = slow + alpha * (param - slow);  param = slow
                          (reset_state: inner_state = {})

    State: ``slow_param``, ``fast_steps``, ``inner`` (the inner rule's state).
    """
    from optimist.reference import RULES

    if inner not in RULES:
        raise ValueError(f"unknown inner rule {inner!r}; known: {', '.join(sorted(RULES))}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    slow = np.asarray(state.get("slow_param", param))
    fast, inner_state = RULES[inner](param, grad, state.get("inner", {}), **inner_hyperparameters)
    steps = state.get("fast_steps", 0) + 1
    if steps % k == 0:
        slow = slow + alpha * (fast - slow)
        fast = slow
        if reset_state:
            inner_state = {}
    return fast, {"slow_param": slow, "fast_steps": steps, "inner": inner_state}
