r"""RAdam: Adam whose adaptive step is switched on only once the variance estimate is reliable.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \text{ (or decoupled: }
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda)) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    \hat m_t &\leftarrow m_t / (1 - \beta_1^t) \\
    \rho_\infty &= 2 / (1 - \beta_2) - 1, \quad
        \rho_t = \rho_\infty - 2 t \beta_2^t / (1 - \beta_2^t) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \hat m_t \, r_t
        \frac{\sqrt{1 - \beta_2^t}}{\sqrt{v_t} + \epsilon}, \quad
        r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}
                         {(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}
        \quad \text{if } \rho_t > 5 \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma \hat m_t \quad \text{otherwise (SGD with momentum)}

Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020). State keys
as torch.optim: ``step``, ``exp_avg``, ``exp_avg_sq``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.radam import radam as _torch_radam

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_betas,
    check_flag,
    check_nonnegative,
    new_step_tensor,
    run_fused,
    scalar,
)

__all__ = ["RAdam", "radam"]


class RAdam(Optimizer):
    """RAdam: a drop-in ``torch.optim.RAdam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`.
        decoupled_weight_decay: decay the weights directly (RAdamW) instead of an L2 penalty.
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        differentiable: accepted for signature compatibility; True is not supported.
        capturable: accepted for signature compatibility; True is not supported.
        maximize: ascend instead of descend.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_flag("decoupled_weight_decay", group["decoupled_weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        params, grads, (exp_avgs, exp_avg_sqs, steps) = self._gather(
            group, "RAdam", init_state, ["exp_avg", "exp_avg_sq", "step"]
        )
        if not params:
            return
        beta1, beta2 = group["betas"]
        radam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            beta1=scalar(beta1),
            beta2=scalar(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )


def radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """Functional RAdam over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    lists = (params, grads, exp_avgs, exp_avg_sqs, steps)
    if implementation == "fused":
        run_fused(_fused.radam, _single_tensor_radam, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_radam(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_radam(*lists, **hyper)


def _single_tensor_radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    rho_inf = 2 / (1 - beta2) - 1
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        m, v = as_real(exp_avgs[i]), as_real(exp_avg_sqs[i])
        steps[i] += 1
        t = steps[i].item()
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        m_hat = m / bias_correction1
        rho_t = rho_inf - 2 * t * beta2**t / bias_correction2
        if rho_t > 5.0:
            rect = math.sqrt(
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            )
            adaptive = math.sqrt(bias_correction2) / v.sqrt().add_(eps)
            param.add_(m_hat * lr * adaptive * rect, alpha=-1.0)
        else:
            param.add_(m_hat * lr, alpha=-1.0)
