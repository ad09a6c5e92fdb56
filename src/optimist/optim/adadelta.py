r"""Adadelta: step sizes from the ratio of running RMS of updates and of gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    v_t &\leftarrow \rho v_{t-1} + (1 - \rho) g_t^2 \\
    \Delta_t &\leftarrow \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t \\
    u_t &\leftarrow \rho u_{t-1} + (1 - \rho) \Delta_t^2 \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \Delta_t

Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012). State keys as torch.optim:
``step``, ``square_avg`` (:math:`v`), ``acc_delta`` (:math:`u`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adadelta import adadelta as _torch_adadelta

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_nonnegative,
    check_unit_interval,
    new_step_tensor,
    run_fused,
    scalar,
)

__all__ = ["Adadelta", "adadelta"]


class Adadelta(Optimizer):
    """Adadelta: a drop-in ``torch.optim.Adadelta``.

    Args:
        params: parameters or param groups.
        lr: :math:`\\gamma`, scales the update (default 1.0, as the paper).
        rho: :math:`\\rho`, decay rate of both running averages, in [0, 1].
        eps: :math:`\\epsilon` inside both square roots.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        differentiable: accepted for signature compatibility; True is not supported.
        capturable: accepted for signature compatibility; True is not supported.
        maximize: ascend instead of descend.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_unit_interval("rho", group["rho"], closed=True)
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        params, grads, (square_avgs, acc_deltas, steps) = self._gather(
            group, "Adadelta", init_state, ["square_avg", "acc_delta", "step"]
        )
        if not params:
            return
        adadelta(
            params,
            grads,
            square_avgs,
            acc_deltas,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Functional Adadelta over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
    lists = (params, grads, square_avgs, acc_deltas, steps)
    if implementation == "fused":
        run_fused(_fused.adadelta, _single_tensor_adadelta, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_adadelta(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_adadelta(*lists, **hyper)


def _single_tensor_adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        v, u = as_real(square_avgs[i]), as_real(acc_deltas[i])
        steps[i] += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        v.mul_(rho).addcmul_(grad, grad, value=1 - rho)  # v = rho v + (1 - rho) g^2
        std = v.add(eps).sqrt_()
        delta = u.add(eps).sqrt_().div_(std).mul_(grad)  # delta = sqrt(u + eps) / sqrt(v + eps) g
        u.mul_(rho).addcmul_(delta, delta, value=1 - rho)  # u = rho u + (1 - rho) delta^2
        param.add_(delta, alpha=-lr)
