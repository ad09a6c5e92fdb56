"""Plain-NumPy reference implementations of optimizer update rules.

This module is the independent oracle that ``optimist``'s PyTorch optimizers are
tested against, and a place to read how each optimizer works. Each rule is one
short pure function, written the way the paper writes it, with the math in its
docstring. All rules are called the same way::

    new_param, new_state = rule(param, grad, state, **hyperparameters)

* ``param`` and ``grad`` are NumPy arrays of the same shape (real or complex).
* ``state`` is ``{}`` before the first step; afterwards pass back the state the
  previous call returned. Its keys are those ``torch.optim`` uses (``step``,
  ``exp_avg``, ``exp_avg_sq``, ...), with ``step`` a Python ``int``.
* Nothing is modified in place: the inputs are left untouched and fresh arrays
  are returned.
* Hyperparameters are keyword-only and have ``torch.optim``'s names and
  defaults. The arithmetic follows ``torch.optim``'s single-tensor code path, so
  in float64 the two agree to rounding error (see :func:`nadam` for the one
  place where torch keeps scalar state in its default dtype).
* A complex parameter is treated as a pair of real numbers (its real and
  imaginary parts), exactly as ``torch.optim`` does with ``view_as_real``.

Only NumPy and the standard library are used; this module never imports torch.

Example: minimise ``f(x) = x @ x / 2`` (gradient ``x``) with Adam::

    import numpy as np
    from optimist import reference

    x = np.array([1.0, -2.0, 3.0])
    state = {}
    for _ in range(100):
        grad = x  # gradient of f at x
        x, state = reference.adam(x, grad, state, lr=0.1)
    print(state["step"], x)  # 100 [0.003 0.008 0.019]: heading to 0

``RULES`` maps each rule's lowercase name to its function.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "RULES",
    "adadelta",
    "ademamix",
    "adan",
    "adopt",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "int8_decode",
    "int8_encode",
    "lion",
    "nadam",
    "radam",
    "rmsprop",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "sgd",
]

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


# --------------------------------------------------------------------------- rules


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


@_update_rule
def lion(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2).

    ::

        g = -grad if maximize else grad
        c = beta1 * m + (1 - beta1) * g
        param = param * (1 - lr * weight_decay) - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g

    ``m`` starts at zero; the weight decay is decoupled (scaled by ``lr``).

    State: ``exp_avg`` (m).
    """
    _require_nonnegative(lr=lr, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)
    m = state.get("exp_avg", np.zeros_like(param))
    g = -grad if maximize else grad
    c = beta1 * m + (1 - beta1) * g
    param = param * (1 - lr * weight_decay) - lr * np.sign(c)
    m = beta2 * m + (1 - beta2) * g
    return param, {"exp_avg": m}


def _require_betas3(betas: tuple[float, float, float]) -> tuple[float, float, float]:
    """Return ``(beta1, beta2, beta3)``, each checked to lie in ``[0, 1)``."""
    if len(betas) != 3:
        raise ValueError(f"betas must be a triple (beta1, beta2, beta3), got {betas}")
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta}")
    return betas[0], betas[1], betas[2]


@_update_rule
def adopt(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.9999),
    eps: float = 1e-6,
    clip_exponent: float | None = 0.25,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """ADOPT (Taniguchi et al., 2024, Algorithm 2; Algorithm 1 with ``clip_exponent=None``).

    ::

        g = -grad if maximize else grad
        g = g + weight_decay * param                       (unless decoupled)
        param = param * (1 - lr * weight_decay)             (if decoupled)
        step 1:  v = g^2                                    (no update)
        step t:  c = (t - 1) ** clip_exponent
                 m = beta1 m + (1 - beta1) clip(g / max(sqrt(v), eps), -c, c)
                 param = param - lr * m
                 v = beta2 v + (1 - beta2) g^2               (after its use: v_{t-1} above)

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)
    step = state.get("step", 0) + 1
    m = state.get("exp_avg", np.zeros_like(param))
    v = state.get("exp_avg_sq", np.zeros_like(param))
    g = -grad if maximize else grad
    if decoupled_weight_decay:
        param = param * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * param
    if step == 1:
        return param.copy(), {"step": step, "exp_avg": m.copy(), "exp_avg_sq": g * g}
    c = np.inf if clip_exponent is None else (step - 1) ** clip_exponent
    m = beta1 * m + (1 - beta1) * np.clip(g / np.maximum(np.sqrt(v), eps), -c, c)
    param = param - lr * m
    v = beta2 * v + (1 - beta2) * g * g
    return param, {"step": step, "exp_avg": m, "exp_avg_sq": v}


@_update_rule
def ademamix(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
    alpha: float = 2.0,
    beta3_warmup: int | None = None,
    alpha_warmup: int | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """AdEMAMix (Pagliardini et al., 2024, Algorithm 1 with the schedulers of eqs. 2-3).

    ::

        g = -grad if maximize else grad
        a_t  = alpha * min(1, t / alpha_warmup)
        b3_t = 0.5 ** (1 / (1 + (1 - x) h(beta1) + x h(beta3))), x = min(1, t / beta3_warmup),
               h(b) = log(0.5) / log(b + 1e-8) - 1   (linear in the half-life)
        m1 = beta1 m1 + (1 - beta1) g;  m2 = b3_t m2 + (1 - b3_t) g
        v = beta2 v + (1 - beta2) g^2
        param = param * (1 - lr * weight_decay)
                - lr (m1 / (1 - beta1^t) + a_t m2) / (sqrt(v / (1 - beta2^t)) + eps)

    State: ``step``, ``exp_avg_fast`` (m1), ``exp_avg_slow`` (m2), ``exp_avg_sq`` (v).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay, alpha=alpha)
    beta1, beta2, beta3 = _require_betas3(betas)
    t = state.get("step", 0) + 1

    def half_life(b: float) -> float:
        return math.log(0.5) / math.log(b + 1e-8) - 1

    a_t = alpha * (min(1.0, t / alpha_warmup) if alpha_warmup else 1.0)
    b3_t = beta3
    if beta3_warmup and t < beta3_warmup:
        x = t / beta3_warmup
        b3_t = 0.5 ** (1 / (1 + (1 - x) * half_life(beta1) + x * half_life(beta3)))
    g = -grad if maximize else grad
    m1 = beta1 * state.get("exp_avg_fast", np.zeros_like(param)) + (1 - beta1) * g
    m2 = b3_t * state.get("exp_avg_slow", np.zeros_like(param)) + (1 - b3_t) * g
    v = beta2 * state.get("exp_avg_sq", np.zeros_like(param)) + (1 - beta2) * g * g
    denom = np.sqrt(v / (1 - beta2**t)) + eps
    param = param * (1 - lr * weight_decay) - lr * (m1 / (1 - beta1**t) + a_t * m2) / denom
    return param, {"step": t, "exp_avg_fast": m1, "exp_avg_slow": m2, "exp_avg_sq": v}


@_update_rule
def adan(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    no_prox: bool = False,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Adan (Xie et al., 2022, Algorithm 1, in the authors' code's beta convention).

    ::

        g = -grad if maximize else grad
        d = g - g_prev   (0 on the first step)
        m = beta1 m + (1 - beta1) g
        v = beta2 v + (1 - beta2) d
        n = beta3 n + (1 - beta3) (g + beta2 d)^2
        u = (m / (1 - beta1^t) + beta2 v / (1 - beta2^t)) / (sqrt(n / (1 - beta3^t)) + eps)
        param = (param - lr u) / (1 + lr weight_decay)           (proximal), or
        param = param (1 - lr weight_decay) - lr u                (no_prox)

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (n), ``exp_avg_diff`` (v),
    ``neg_pre_grad`` (-g).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2, beta3 = _require_betas3(betas)
    t = state.get("step", 0) + 1
    g = -grad if maximize else grad
    d = g + state["neg_pre_grad"] if "neg_pre_grad" in state else np.zeros_like(g)
    m = beta1 * state.get("exp_avg", np.zeros_like(param)) + (1 - beta1) * g
    v = beta2 * state.get("exp_avg_diff", np.zeros_like(param)) + (1 - beta2) * d
    n = beta3 * state.get("exp_avg_sq", np.zeros_like(param)) + (1 - beta3) * (g + beta2 * d) ** 2
    u = (m / (1 - beta1**t) + beta2 * v / (1 - beta2**t)) / (np.sqrt(n / (1 - beta3**t)) + eps)
    if no_prox:
        param = param * (1 - lr * weight_decay) - lr * u
    else:
        param = (param - lr * u) / (1 + lr * weight_decay)
    new = {"step": t, "exp_avg": m, "exp_avg_sq": n, "exp_avg_diff": v, "neg_pre_grad": -g}
    return param, new


def _schedule_free(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    normalise: Callable[[np.ndarray, Mapping[str, Any], int], tuple[np.ndarray, State]],
    *,
    lr: float,
    beta1: float,
    warmup_steps: int,
    r: float,
    weight_lr_power: float,
    maximize: bool,
) -> tuple[np.ndarray, State]:
    """Schedule-Free's y/z step shared by the AdamW and SGD forms (``param`` is y)."""
    k = state.get("k", 0)
    z = state.get("z", param)
    lr_t = lr * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
    lr_max = max(lr_t, state.get("lr_max", -1.0))
    weight = (k + 1) ** r * lr_max**weight_lr_power
    weight_sum = state.get("weight_sum", 0.0) + weight
    c = weight / weight_sum if weight_sum else 0.0
    g, extra = normalise(-grad if maximize else grad, state, k + 1)
    param = (1 - c) * param + c * z + lr_t * (beta1 * (1 - c) - 1) * g
    z = z - lr_t * g
    return param, {"k": k + 1, "lr_max": lr_max, "weight_sum": weight_sum, "z": z, **extra}


@_update_rule
def schedule_free_adamw(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Schedule-Free AdamW (Defazio et al., 2024, Algorithm 1 with x eliminated), train mode.

    ::

        lr_t = lr * min(1, t / warmup_steps);  lr_max = max(lr_max, lr_t)
        w_t = t^r * lr_max^weight_lr_power;  c = w_t / sum(w_1..w_t)
        v = beta2 v + (1 - beta2) g^2
        h = g / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * y
        y = (1 - c) y + c z + lr_t (beta1 (1 - c) - 1) h
        z = z - lr_t h                                    (z starts at y)

    ``param`` is y; the evaluation point is x = (y - (1 - beta1) z) / beta1. State: ``k``,
    ``lr_max``, ``weight_sum`` (per group in the optimizer), ``z``, ``exp_avg_sq`` (v).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)

    def normalise(g: np.ndarray, st: Mapping[str, Any], t: int) -> tuple[np.ndarray, State]:
        v = beta2 * st.get("exp_avg_sq", np.zeros_like(g)) + (1 - beta2) * g * g
        return g / (np.sqrt(v / (1 - beta2**t)) + eps) + weight_decay * param, {"exp_avg_sq": v}

    return _schedule_free(
        param, grad, state, normalise, lr=lr, beta1=beta1, warmup_steps=warmup_steps, r=r,
        weight_lr_power=weight_lr_power, maximize=maximize,
    )  # fmt: skip


@_update_rule
def schedule_free_sgd(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """Schedule-Free SGD (Defazio et al., 2024): :func:`schedule_free_adamw` with
    ``h = g + weight_decay * y`` and ``beta1 = momentum``. State: ``k``, ``lr_max``,
    ``weight_sum``, ``z``."""
    _require_nonnegative(lr=lr, weight_decay=weight_decay, momentum=momentum)

    def normalise(g: np.ndarray, st: Mapping[str, Any], t: int) -> tuple[np.ndarray, State]:
        return g + weight_decay * param, {}

    return _schedule_free(
        param, grad, state, normalise, lr=lr, beta1=momentum, warmup_steps=warmup_steps, r=r,
        weight_lr_power=weight_lr_power, maximize=maximize,
    )  # fmt: skip


# --------------------------------------------------------------------------- state codecs

QUANT_BLOCK = 256


def _int8_code(t: np.ndarray, mant_bits: int) -> np.ndarray:
    """t in [0, 1] -> nearest code on a grid of 4 exponent bits (2^-15 .. 1) and mant_bits."""
    exponent = np.floor(np.log2(np.where(t > 0, t, 1.0)))
    mantissa = t / 2.0**exponent - 1.0  # in [0, 1)
    steps = np.round(mantissa * 2**mant_bits)  # ties: the C code rounds half up; see the note
    code = (exponent + 15) * 2**mant_bits + steps
    code = np.clip(code, 1, 15 * 2**mant_bits)
    return np.where(t == 0, 0, code).astype(np.int64)


def _int8_value(code: np.ndarray, mant_bits: int) -> np.ndarray:
    exponent = code // 2**mant_bits - 15
    mantissa = (code % 2**mant_bits) / 2**mant_bits
    return np.where(code == 0, 0.0, (1.0 + mantissa) * 2.0**exponent)


def int8_encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-wise 8-bit quantization of optimizer state (the engine's ``state_dtype="int8"``).

    Per block of 256 values with absmax ``a``: ``t = |x| / a`` is rounded to the nearest value
    ``(1 + k / 2^M) 2^e`` with ``e`` in -15..0 (byte 0 is exactly 0; nonzero values below
    ``2^-15 a`` take the smallest nonzero code). Blocks with no negative value use ``M = 4``;
    blocks with one use a sign bit and ``M = 3``, and store ``-a`` as their scale. Returns the
    codes (uint8 as int64) and the float32 scales. Values exactly halfway between two codes are
    rounded up (the engine adds half a step to the float's bits), which ``np.round`` does not
    do; such ties are measure-zero in tests with random data.
    """
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    codes = np.zeros(flat.size, dtype=np.int64)
    scales = np.zeros(-(-flat.size // QUANT_BLOCK), dtype=np.float32)
    for b in range(scales.size):
        block = flat[b * QUANT_BLOCK : (b + 1) * QUANT_BLOCK].astype(np.float64)
        amax = np.float32(np.abs(block).max())
        if amax == 0:
            continue
        t = np.minimum(np.abs(block) * np.float64(np.float32(1.0) / amax), 1.0)
        if (block < 0).any():
            c = _int8_code(t, 3) | np.where(block < 0, 0x80, 0)
            scales[b] = -amax
        else:
            c = _int8_code(t, 4)
            scales[b] = amax
        codes[b * QUANT_BLOCK : b * QUANT_BLOCK + block.size] = c
    return codes, scales


def int8_decode(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`int8_encode` (float64 values)."""
    out = np.zeros(codes.size)
    for b, scale in enumerate(scales):
        c = codes[b * QUANT_BLOCK : (b + 1) * QUANT_BLOCK]
        if scale >= 0:
            out[b * QUANT_BLOCK : b * QUANT_BLOCK + c.size] = _int8_value(c, 4) * scale
        else:
            magnitude = _int8_value(c & 0x7F, 3) * -scale
            out[b * QUANT_BLOCK : b * QUANT_BLOCK + c.size] = np.where(
                c >= 0x80, -magnitude, magnitude
            )
    return out


RULES: dict[str, Rule] = {
    "sgd": sgd,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adadelta": adadelta,
    "adam": adam,
    "adamw": adamw,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "lion": lion,
    "adopt": adopt,
    "ademamix": ademamix,
    "adan": adan,
    "schedule_free_adamw": schedule_free_adamw,
    "schedule_free_sgd": schedule_free_sgd,
}
