"""The nine classic rules, as torch.optim's single-tensor code path computes them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimist.reference._common import State, _require_betas, _require_nonnegative, _update_rule


@_update_rule
def sgd(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    ::

        g = -grad if maximize else grad
        g = g + weight_decay * param
        if momentum != 0:
            b = g                                   (first step)
            b = momentum * b + (1 - dampening) * g  (later steps)
            g = g + momentum * b  if nesterov  else  b
        param = param - lr * g

    The momentum buffer starts as the first gradient rather than zero, so
    dampening only takes effect from the second step on.

    State: ``momentum_buffer`` (only when ``momentum != 0``). No step counter.
    """
    _require_nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if math.isnan(dampening):
        raise ValueError(f"dampening must be a number, got {dampening}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(
            "nesterov requires momentum > 0 and dampening == 0, "
            f"got momentum={momentum} and dampening={dampening}"
        )

    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param

    new_state: State = {}
    if momentum != 0:
        if "momentum_buffer" in state:
            b = momentum * state["momentum_buffer"] + (1 - dampening) * g
        else:
            b = g.copy()
        new_state["momentum_buffer"] = b
        g = g + momentum * b if nesterov else b

    return param - lr * g, new_state


@_update_rule
def adagrad(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Adagrad (Duchi, Hazan & Singer, 2011).

    ::

        t = t + 1
        g = -grad if maximize else grad
        g = g + weight_decay * param
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g                       (s starts at initial_accumulator_value)
        param = param - lr_t * g / (sqrt(s) + eps)

    State: ``step`` (t), ``sum`` (s).
    """
    _require_nonnegative(
        lr=lr,
        lr_decay=lr_decay,
        weight_decay=weight_decay,
        initial_accumulator_value=initial_accumulator_value,
        eps=eps,
    )

    t = int(state.get("step", 0)) + 1
    s = state.get("sum", np.full_like(param, initial_accumulator_value))

    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param
    lr_t = lr / (1 + (t - 1) * lr_decay)
    s = s + g * g
    param = param - lr_t * g / (np.sqrt(s) + eps)

    return param, {"step": t, "sum": s}


@_update_rule
def rmsprop(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """RMSprop (Hinton's lecture notes; centered variant from Graves, 2013).

    ::

        t = t + 1
        g = -grad if maximize else grad
        g = g + weight_decay * param
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            denom = sqrt(v - a * a) + eps
        else:
            denom = sqrt(v) + eps
        if momentum > 0:
            b = momentum * b + g / denom
            param = param - lr * b
        else:
            param = param - lr * g / denom

    ``v``, ``a`` and ``b`` start at zero. Note ``eps`` is added after the square root.

    State: ``step`` (t), ``square_avg`` (v), ``momentum_buffer`` (b, only when
    ``momentum > 0``), ``grad_avg`` (a, only when ``centered``).
    """
    _require_nonnegative(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    v = state.get("square_avg", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param

    v = alpha * v + (1 - alpha) * g * g
    new_state: State = {"step": t, "square_avg": v}
    if centered:
        a = alpha * state.get("grad_avg", zeros) + (1 - alpha) * g
        new_state["grad_avg"] = a
        denom = np.sqrt(v - a * a) + eps
    else:
        denom = np.sqrt(v) + eps

    if momentum > 0:
        b = momentum * state.get("momentum_buffer", zeros) + g / denom
        new_state["momentum_buffer"] = b
        param = param - lr * b
    else:
        param = param - lr * g / denom

    return param, new_state


@_update_rule
def adadelta(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Adadelta (Zeiler, 2012).

    ::

        t = t + 1
        g = -grad if maximize else grad
        g = g + weight_decay * param
        v = rho * v + (1 - rho) * g * g
        delta = sqrt(u + eps) / sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        param = param - lr * delta

    ``v`` (running mean of squared gradients) and ``u`` (running mean of squared
    updates) start at zero.

    State: ``step`` (t), ``square_avg`` (v), ``acc_delta`` (u).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    v = state.get("square_avg", zeros)
    u = state.get("acc_delta", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param

    v = rho * v + (1 - rho) * g * g
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
    u = rho * u + (1 - rho) * delta * delta
    param = param - lr * delta

    return param, {"step": t, "square_avg": v, "acc_delta": u}


def _adam(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> tuple[np.ndarray, State]:
    """The Adam step shared by :func:`adam` and :func:`adamw` (see their docstrings)."""
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    m = state.get("exp_avg", zeros)
    v = state.get("exp_avg_sq", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    new_state: State = {"step": t, "exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v_max = np.maximum(state.get("max_exp_avg_sq", zeros), v)
        new_state["max_exp_avg_sq"] = v_max
        denom = np.sqrt(v_max) / math.sqrt(bias_correction2) + eps
    else:
        denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps
    param = param - lr / bias_correction1 * m / denom

    return param, new_state


@_update_rule
def adam(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Adam (Kingma & Ba, 2015), optionally AMSGrad (Reddi et al., 2018).

    ::

        t = t + 1
        g = -grad if maximize else grad
        g = g + weight_decay * param            (L2 penalty, added to the gradient)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if amsgrad:
            v_max = max(v_max, v)
            v_used = v_max
        else:
            v_used = v
        denom = sqrt(v_used) / sqrt(1 - beta2**t) + eps
        param = param - lr / (1 - beta1**t) * m / denom

    ``m``, ``v`` and ``v_max`` start at zero; ``v_max`` tracks the maximum of the
    *uncorrected* ``v``. Note ``eps`` is added after bias-correcting ``sqrt(v)``.

    State: ``step`` (t), ``exp_avg`` (m), ``exp_avg_sq`` (v), ``max_exp_avg_sq``
    (v_max, only with ``amsgrad``).
    """
    return _adam(
        param,
        grad,
        state,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=False,
    )


@_update_rule
def adamw(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay.

    The parameter is shrunk directly instead of adding ``weight_decay * param``
    to the gradient, then an ordinary :func:`adam` step follows::

        param = param * (1 - lr * weight_decay)
        ... Adam update with g = -grad if maximize else grad ...

    Note the decay is scaled by ``lr`` (as in torch.optim), and the default
    ``weight_decay`` is ``1e-2``.

    State: as :func:`adam`.
    """
    return _adam(
        param,
        grad,
        state,
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
    )


@_update_rule
def adamax(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Adamax (Kingma & Ba, 2015, section 7): Adam with an infinity norm.

    ::

        t = t + 1
        g = -grad if maximize else grad
        g = g + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        u = max(beta2 * u, |g| + eps)
        param = param - lr / (1 - beta1**t) * m / u

    ``m`` and ``u`` start at zero. Note ``eps`` goes inside the maximum.

    State: ``step`` (t), ``exp_avg`` (m), ``exp_inf`` (u).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    m = state.get("exp_avg", zeros)
    u = state.get("exp_inf", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + weight_decay * param

    m = beta1 * m + (1 - beta1) * g
    u = np.maximum(beta2 * u, np.abs(g) + eps)
    param = param - lr / (1 - beta1**t) * m / u

    return param, {"step": t, "exp_avg": m, "exp_inf": u}


@_update_rule
def nadam(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum schedule.

    ::

        t = t + 1
        g = -grad if maximize else grad
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param
        mu_t      = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))
        mu_next   = beta1 * (1 - 0.5 * 0.96**((t + 1) * momentum_decay))
        mu_prod   = mu_prod * mu_t                    (mu_prod starts at 1)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        denom = sqrt(v / (1 - beta2**t)) + eps
        param = param - lr * (1 - mu_t) / (1 - mu_prod) * g / denom
        param = param - lr * mu_next / (1 - mu_prod * mu_next) * m / denom

    State: ``step`` (t), ``mu_product`` (mu_prod, a Python float), ``exp_avg`` (m),
    ``exp_avg_sq`` (v).

    ``mu_product`` is kept in float64 here. torch.optim stores it as a tensor of
    the default dtype, so under torch's default float32 it is rounded to float32
    every step and differs from this value by about 1e-7 relative (the parameter
    updates much less); with ``torch.set_default_dtype(torch.float64)`` the two agree.
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay)
    beta1, beta2 = _require_betas(betas)

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    mu_product = float(state.get("mu_product", 1.0))
    m = state.get("exp_avg", zeros)
    v = state.get("exp_avg_sq", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param

    mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    mu_product = mu_product * mu_t

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v / (1 - beta2**t)) + eps
    param = param - lr * (1 - mu_t) / (1 - mu_product) * g / denom
    param = param - lr * mu_next / (1 - mu_product * mu_next) * m / denom

    return param, {"step": t, "mu_product": mu_product, "exp_avg": m, "exp_avg_sq": v}


@_update_rule
def radam(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """RAdam (Liu et al., 2020): Adam with a rectified adaptive learning rate.

    ::

        t = t + 1
        g = -grad if maximize else grad
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t)
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho_t > 5:
            r = sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                     / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            param = param - lr * m_hat * sqrt(1 - beta2**t) / (sqrt(v) + eps) * r
        else:
            param = param - lr * m_hat           (plain momentum step)

    While the variance estimate is unreliable (``rho_t <= 5``, the first 5 steps
    with the default ``beta2 = 0.999``) the step is un-adapted. Note ``eps`` is
    added to the *uncorrected* ``sqrt(v)``, unlike Adam.

    State: ``step`` (t), ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)

    zeros = np.zeros_like(param)
    t = int(state.get("step", 0)) + 1
    m = state.get("exp_avg", zeros)
    v = state.get("exp_avg_sq", zeros)

    g = -grad if maximize else grad
    if weight_decay != 0:
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param

    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    bias_correction1 = 1 - beta1**t
    bias_correction2 = 1 - beta2**t
    m_hat = m / bias_correction1

    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / bias_correction2
    if rho_t > 5:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        param = param - lr * m_hat * math.sqrt(bias_correction2) / (np.sqrt(v) + eps) * r
    else:
        param = param - lr * m_hat

    return param, {"step": t, "exp_avg": m, "exp_avg_sq": v}
