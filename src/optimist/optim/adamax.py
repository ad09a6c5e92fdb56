r"""Adamax: Adam with the infinity norm in place of the second moment.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    u_t &\leftarrow \max(\beta_2 u_{t-1}, |g_t| + \epsilon) \\
    \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t} \frac{m_t}{u_t}

Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014), section 7. State keys as
torch.optim: ``step``, ``exp_avg``, ``exp_inf``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adamax import adamax as _torch_adamax

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_betas,
    check_nonnegative,
    new_step_tensor,
    run_fused,
    scalar,
)

__all__ = ["Adamax", "adamax"]


class Adamax(Optimizer):
    """Adamax: a drop-in ``torch.optim.Adamax``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 2e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to :math:`|g_t|`.
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
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        params, grads, (exp_avgs, exp_infs, steps) = self._gather(
            group, "Adamax", init_state, ["exp_avg", "exp_inf", "step"]
        )
        if not params:
            return
        beta1, beta2 = group["betas"]
        adamax(
            params,
            grads,
            exp_avgs,
            exp_infs,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            beta1=scalar(beta1),
            beta2=scalar(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
        )


def adamax(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Functional Adamax over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(
        lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, maximize=maximize
    )
    lists = (params, grads, exp_avgs, exp_infs, steps)
    if implementation == "fused":
        run_fused(_fused.adamax, _single_tensor_adamax, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_adamax(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_adamax(*lists, **hyper)


def _single_tensor_adamax(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        m, u = as_real(exp_avgs[i]), as_real(exp_infs[i])
        steps[i] += 1
        t = steps[i].item()
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        m.lerp_(grad, 1 - beta1)  # m = b1 m + (1 - b1) g
        torch.maximum(u.mul_(beta2), grad.abs().add_(eps), out=u)  # u = max(b2 u, |g| + eps)
        param.addcdiv_(m, u, value=-lr / (1 - beta1**t))
