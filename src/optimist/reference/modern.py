"""Lion, ADOPT, AdEMAMix, Adan and Schedule-Free, from their papers' pseudo-code."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from optimist.reference._common import State, _require_betas, _require_nonnegative, _update_rule


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
