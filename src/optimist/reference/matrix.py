"""Muon, Adafactor, LAMB, LARS and SOAP: optimizers whose update needs the whole tensor.

Each is one function, called like every rule in :mod:`optimist.reference`, written from its
paper's pseudo-code (and ``torch.optim``'s documented algorithm where torch has the optimizer):
norms, factored moments, Newton-Schulz and eigenbases over the whole parameter. Real
parameters only (a complex one raises ``ValueError``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from optimist.reference._common import Rule, State, _require_betas, _require_nonnegative
from optimist.reference._common import _update_rule as _any_rule
from optimist.reference.classic import adamw


def _real_rule(rule: Rule) -> Rule:
    """:func:`optimist.reference._common._update_rule` for real parameters only."""
    checked = _any_rule(rule)

    @functools.wraps(rule)
    def wrapper(param: Any, grad: Any, state: Mapping[str, Any], **hyper: Any):
        if np.iscomplexobj(param) or np.iscomplexobj(grad):
            raise ValueError(f"{rule.__name__} takes real parameters only, got a complex array")
        return checked(param, grad, state, **hyper)

    return wrapper


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


# --------------------------------------------------------------------------- Muon


def newton_schulz(
    g: np.ndarray, coefficients: tuple[float, float, float], steps: int, eps: float
) -> np.ndarray:
    """The quintic Newton-Schulz iteration that maps ``g`` to its nearest semi-orthogonal
    matrix (approximately: singular values land in about [0.7, 1.2])::

        X = g / max(||g||_F, eps)             (transposed first if g is tall)
        repeat steps times:  A = X X^T;  X = a X + (b A + c A A) X
    """
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / max(float(np.linalg.norm(x)), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


@_real_rule
def muon(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    adamw_lr: float = 1e-3,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    adamw_eps: float = 1e-8,
    adamw_weight_decay: float = 0.1,
) -> tuple[np.ndarray, State]:
    """Muon (Jordan et al. 2024; ``torch.optim.Muon``'s documented algorithm).

    For a parameter of rank >= 2, seen as the matrix ``(shape[0], -1)``::

        B = momentum * B + (1 - momentum) * grad
        U = grad + momentum * (B - grad)  if nesterov else B
        O = newton_schulz(U)
        s = sqrt(max(1, rows / cols))             (adjust_lr_fn None / "original")
            0.2 * sqrt(max(rows, cols))           ("match_rms_adamw")
        param = param * (1 - lr * weight_decay) - lr * s * O

    Newton-Schulz runs in the arrays' precision (float64); torch runs it in bfloat16, and
    ``optimist.optim.Muon(ns_dtype=None)`` in the gradient's. A parameter of rank < 2 takes
    an :func:`adamw` step with the ``adamw_*`` settings, as optimist's ``Muon`` does.

    State: ``momentum_buffer`` (B), or AdamW's for rank < 2.
    """
    if param.ndim < 2:
        return adamw(
            param,
            grad,
            state,
            lr=adamw_lr,
            betas=adamw_betas,
            eps=adamw_eps,
            weight_decay=adamw_weight_decay,
        )
    _require_nonnegative(lr=lr, weight_decay=weight_decay, momentum=momentum, eps=eps)
    if adjust_lr_fn not in (None, "original", "match_rms_adamw"):
        raise ValueError(
            f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}"
        )
    buf = state.get("momentum_buffer", np.zeros_like(param))
    buf = momentum * buf + (1 - momentum) * grad
    update = grad + momentum * (buf - grad) if nesterov else buf
    rows, cols = param.shape[0], math.prod(param.shape[1:])
    ortho = newton_schulz(update.reshape(rows, cols), ns_coefficients, ns_steps, eps)
    if adjust_lr_fn == "match_rms_adamw":
        scale = 0.2 * math.sqrt(max(rows, cols))
    else:
        scale = math.sqrt(max(1.0, rows / cols))
    param = param * (1 - lr * weight_decay) - lr * scale * ortho.reshape(param.shape)
    return param, {"momentum_buffer": buf}


# --------------------------------------------------------------------------- Adafactor


@_real_rule
def adafactor(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
    eps1_form: str = "clamp",
) -> tuple[np.ndarray, State]:
    """Adafactor (Shazeer & Stern 2018, Algorithms 4-5 with update clipping), as the algorithm
    in ``torch.optim.Adafactor``'s documentation::

        g = -grad if maximize else grad;  t = step + 1;  w = t ** beta2_decay  (= 1 - beta2_t)
        alpha = max(eps2, RMS(param)) * min(lr, 1 / sqrt(t))
        param = param * (1 - lr * weight_decay)
        rank >= 2 (factored over the last two dimensions):
            R = (1 - w) R + w mean_{-1}(g^2);   C = (1 - w) C + w mean_{-2}(g^2)
            V = R C / max(mean_{-2}(R), eps1)
        else:  V = (1 - w) V + w g^2
        U = g / sqrt(max(V, eps1^2))
        param = param - alpha * U / max(1, RMS(U) / d)

    ``eps1_form="add"``: the paper's placement of eps1 (and Keras 3's), added to ``g^2``
    with no floor::

        R = (1 - w) R + w mean_{-1}(g^2 + eps1);   C = (1 - w) C + w mean_{-2}(g^2 + eps1)
        V = (R / mean_{-2}(R)) C                    (rank >= 2)
        V = (1 - w) V + w (g^2 + eps1)              (else)
        U = g / sqrt(V)

    ``eps1`` None is the parameter dtype's machine epsilon. State: ``step``, ``row_var``,
    ``col_var`` (rank >= 2) or ``variance``.
    """
    _require_nonnegative(lr=lr, weight_decay=weight_decay)
    if not beta2_decay <= 0:
        raise ValueError(f"beta2_decay must be <= 0, got {beta2_decay}")
    if not d >= 1.0:
        raise ValueError(f"d must be >= 1, got {d}")
    if eps1_form not in ("clamp", "add"):
        raise ValueError(f"eps1_form must be 'clamp' or 'add', got {eps1_form!r}")
    add = eps1_form == "add"
    eps1 = float(np.finfo(param.dtype).eps) if eps[0] is None else eps[0]
    eps2 = eps[1]
    g = -grad if maximize else grad
    square = g * g + eps1 if add else g * g
    t = state.get("step", 0) + 1
    w = t**beta2_decay
    alpha = max(eps2, _rms(param)) * min(lr, 1 / math.sqrt(t))
    param = param * (1 - lr * weight_decay)
    if g.ndim >= 2:
        row = state.get("row_var", np.zeros((*g.shape[:-1], 1), g.dtype))
        col = state.get("col_var", np.zeros((*g.shape[:-2], 1, g.shape[-1]), g.dtype))
        row = (1 - w) * row + w * np.mean(square, axis=-1, keepdims=True)
        col = (1 - w) * col + w * np.mean(square, axis=-2, keepdims=True)
        row_mean = np.mean(row, axis=-2, keepdims=True)
        v = (row / row_mean) @ col if add else row @ col / np.maximum(row_mean, eps1)
        new_state: State = {"step": t, "row_var": row, "col_var": col}
    else:
        variance = (1 - w) * state.get("variance", np.zeros_like(g)) + w * square
        v = variance
        new_state = {"step": t, "variance": variance}
    u = g / np.sqrt(v if add else np.maximum(v, eps1 * eps1))
    param = param - alpha * u / max(1.0, _rms(u) / d)
    return param, new_state


# --------------------------------------------------------------------------- LAMB and LARS


def _trust_ratio(param: np.ndarray, update: np.ndarray, coefficient: float, eps: float) -> float:
    p_norm, u_norm = float(np.linalg.norm(param)), float(np.linalg.norm(update))
    if p_norm == 0.0 or u_norm == 0.0:
        return 1.0
    return coefficient * p_norm / (u_norm + eps)


@_real_rule
def lamb(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """LAMB (You et al. 2019, Algorithm 2 with phi the identity)::

        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * param
        param = param - lr * (||param|| / ||u||) * u        (ratio 1 if either norm is 0)

    State: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)
    g = -grad if maximize else grad
    t = state.get("step", 0) + 1
    m = beta1 * state.get("exp_avg", np.zeros_like(param)) + (1 - beta1) * g
    v = beta2 * state.get("exp_avg_sq", np.zeros_like(param)) + (1 - beta2) * g * g
    update = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps) + weight_decay * param
    param = param - lr * _trust_ratio(param, update, 1.0, 0.0) * update
    return param, {"step": t, "exp_avg": m, "exp_avg_sq": v}


@_real_rule
def lars(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    lr_inside_momentum: bool = True,
    trust_ratio_form: str = "optax",
) -> tuple[np.ndarray, State]:
    """LARS (You, Gitman & Ginsburg 2017, Algorithm 1; momentum on the scaled update)::

        u = g + weight_decay * param
        u = lr * trust_coefficient * ||param|| / (||u|| + eps) * u   (ratio 1 if a norm is 0)
        b = momentum * b + u
        param = param - (u + momentum * b  if nesterov else b)

    With ``lr_inside_momentum=False`` (torch SGD's and ``pytorch_optimizer``'s form) ``u`` is
    not multiplied by ``lr``, and the step is ``lr`` times the bracket. With
    ``trust_ratio_form="paper"`` (Algorithm 1 as printed) the ratio is
    ``trust_coefficient * ||param|| / (||g|| + weight_decay * ||param|| + eps)``, 1 where
    ``||param||`` or that denominator is 0.

    State: ``momentum_buffer`` (b).
    """
    _require_nonnegative(
        lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
        eps=eps,
    )  # fmt: skip
    g = -grad if maximize else grad
    update = g + weight_decay * param
    if trust_ratio_form == "optax":
        ratio = _trust_ratio(param, update, trust_coefficient, eps)
    else:
        p_norm = float(np.linalg.norm(param))
        denominator = float(np.linalg.norm(g)) + weight_decay * p_norm + eps
        ok = p_norm != 0.0 and denominator != 0.0
        ratio = trust_coefficient * p_norm / denominator if ok else 1.0
    inside = lr if lr_inside_momentum else 1.0
    update = inside * ratio * update
    buf = momentum * state.get("momentum_buffer", np.zeros_like(param)) + update
    step = update + momentum * buf if nesterov else buf
    param = param - (step if lr_inside_momentum else lr * step)
    return param, {"momentum_buffer": buf}


# --------------------------------------------------------------------------- SOAP


def _merged_shape(shape: tuple[int, ...], limit: int) -> tuple[int, ...]:
    """Merge adjacent dimensions while their product stays <= ``limit`` (the authors' rule)."""
    merged: list[int] = []
    current = 1
    for size in shape:
        if current * size > limit:
            merged.append(current if current > 1 else size)
            current = size if current > 1 else 1
        else:
            current *= size
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def _mode_product(x: np.ndarray, q: np.ndarray, axis: int) -> np.ndarray:
    """Contract axis ``axis`` of ``x`` with the rows of ``q``: ``x ×_axis q^T``."""
    return np.moveaxis(np.tensordot(x, q, axes=([axis], [0])), -1, axis)


def _project(x: np.ndarray, bases: list[np.ndarray | None], back: bool) -> np.ndarray:
    for axis, q in enumerate(bases):
        if q is not None:
            x = _mode_product(x, q.T if back else q, axis)
    return x


def _factor(g: np.ndarray, axis: int) -> np.ndarray:
    """g unfolded along ``axis`` times its transpose: sum over the other axes of g g^T."""
    unfolded = np.moveaxis(g, axis, 0).reshape(g.shape[axis], -1)
    return unfolded @ unfolded.T


@_real_rule
def soap(
    param: np.ndarray,
    grad: np.ndarray,
    state: Mapping[str, Any],
    *,
    lr: float = 3e-3,
    betas: tuple[float, float] = (0.95, 0.95),
    shampoo_beta: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    precondition_frequency: int = 10,
    max_precond_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    normalize_grads: bool = False,
    correct_bias: bool = True,
    maximize: bool = False,
) -> tuple[np.ndarray, State]:
    """SOAP (Vyas et al. 2024, Algorithm 3; eigenbasis refresh of Algorithm 4)::

        G = grad, seen with shape S (merged if merge_dims); axis i of size <= max_precond_dim
        (a vector only with precondition_1d) keeps a factor L_i and its eigenbasis Q_i.
        P(X) = X ×_1 Q_1^T ... ×_k Q_k^T  (projection),  P^-1(X) = X ×_1 Q_1 ... ×_k Q_k
        first call:  L_i = (1 - b_s) G_(i) G_(i)^T;  Q_i = eigenvectors of L_i, eigenvalues
                     descending;  no update
        then, t = 1, 2, ...:
            M = beta1 M + (1 - beta1) G;   V = beta2 V + (1 - beta2) P(G)^2
            N = P^-1(P(M) / (sqrt(V) + eps));   N = N / RMS(N)  if normalize_grads
            param = param - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * N   (lr alone without
                                                                           correct_bias)
            param = param * (1 - lr * weight_decay)
            L_i = b_s L_i + (1 - b_s) G_(i) G_(i)^T
            if t % precondition_frequency == 0, for each i:
                order = argsort(diag(Q_i^T L_i Q_i)), descending
                Q_i = Q of the QR decomposition of L_i Q_i[:, order];  V = V[..., order, ...]

    ``b_s`` is ``shampoo_beta`` (``beta2`` when None); ``G_(i)`` is G with axis i first and the
    others flattened. A 0-d parameter is never preconditioned.

    State: ``step`` (Adam steps), ``exp_avg`` (M), ``exp_avg_sq`` (V), ``GG`` and ``Q``: lists
    with one entry per axis of S (None where the axis is not preconditioned), absent for a
    0-d parameter.
    """
    _require_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
    beta1, beta2 = _require_betas(betas)
    b_s = beta2 if shampoo_beta is None else shampoo_beta
    g = -grad if maximize else grad
    if param.ndim == 0:
        shape, on = (), []
    elif param.ndim == 1:
        shape, on = param.shape, [precondition_1d and param.shape[0] <= max_precond_dim]
    else:
        shape = _merged_shape(param.shape, max_precond_dim) if merge_dims else param.shape
        on = [size <= max_precond_dim for size in shape]
    g = g.reshape(shape)
    if "step" not in state:
        new: State = {
            "step": 0,
            "exp_avg": np.zeros_like(param),
            "exp_avg_sq": np.zeros_like(param),
        }
        if on:
            factors = [(1 - b_s) * _factor(g, i) if use else None for i, use in enumerate(on)]
            bases = []
            for factor in factors:
                if factor is None:
                    bases.append(None)
                else:
                    _, vectors = np.linalg.eigh(factor + 1e-30 * np.eye(len(factor)))
                    bases.append(vectors[:, ::-1].copy())
            new.update(GG=factors, Q=bases)
        return param.copy(), new
    t = state["step"] + 1
    bases = [None if q is None else q.copy() for q in state.get("Q", [])]
    m = beta1 * state["exp_avg"].reshape(shape) + (1 - beta1) * g
    v = beta2 * state["exp_avg_sq"].reshape(shape) + (1 - beta2) * _project(g, bases, False) ** 2
    n = _project(_project(m, bases, False) / (np.sqrt(v) + eps), bases, True)
    if normalize_grads:
        n = n / (_rms(n) + 1e-30)
    step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) if correct_bias else lr
    param = (param - step_size * n.reshape(param.shape)) * (1 - lr * weight_decay)
    new = {"step": t, "exp_avg": m.reshape(param.shape)}
    if on:
        factors = [
            None if f is None else b_s * f + (1 - b_s) * _factor(g, i)
            for i, f in enumerate(state["GG"])
        ]
        if t % precondition_frequency == 0:
            for i, factor in enumerate(factors):
                if factor is None:
                    continue
                q = bases[i]
                order = np.argsort(-np.diag(q.T @ factor @ q), kind="stable")
                bases[i] = np.linalg.qr(factor @ q[:, order])[0]
                v = np.take(v, order, axis=i)
        new.update(GG=factors, Q=bases)
    new["exp_avg_sq"] = v.reshape(param.shape)
    return param, new
