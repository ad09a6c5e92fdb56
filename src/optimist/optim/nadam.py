r"""NAdam: Adam with Nesterov momentum and a momentum schedule.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \text{ (or decoupled: }
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda)) \\
    \mu_t &\leftarrow \beta_1 (1 - \tfrac12 \, 0.96^{t \psi}), \quad
        \mu_{t+1} \leftarrow \beta_1 (1 - \tfrac12 \, 0.96^{(t+1) \psi}) \\
    P_t &\leftarrow P_{t-1} \mu_t \quad (\text{the product } \textstyle\prod_{i \le t} \mu_i) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    d_t &\leftarrow \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \\
    \theta_t &\leftarrow \theta_{t-1}
        - \gamma \frac{1 - \mu_t}{1 - P_t} \frac{g_t}{d_t}
        - \gamma \frac{\mu_{t+1}}{1 - P_t \mu_{t+1}} \frac{m_t}{d_t}

Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR workshop 2016). State keys as
torch.optim: ``step``, ``mu_product`` (a 0-dim tensor, :math:`P_t`), ``exp_avg``, ``exp_avg_sq``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.nadam import nadam as _torch_nadam

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

__all__ = ["NAdam", "nadam"]


class NAdam(Optimizer):
    """NAdam: a drop-in ``torch.optim.NAdam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 2e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`.
        momentum_decay: :math:`\\psi` of the momentum schedule (default 4e-3).
        decoupled_weight_decay: decay the weights directly (NAdamW) instead of an L2 penalty.
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
        momentum_decay: float = 4e-3,
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
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    _scalar_state_keys = ("step", "mu_product")

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("momentum_decay", group["momentum_decay"])
        check_flag("decoupled_weight_decay", group["decoupled_weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["mu_product"] = torch.ones((), dtype=state["step"].dtype)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        params, grads, (exp_avgs, exp_avg_sqs, mu_products, steps) = self._gather(
            group, "NAdam", init_state, ["exp_avg", "exp_avg_sq", "mu_product", "step"]
        )
        if not params:
            return
        beta1, beta2 = group["betas"]
        nadam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            mu_products,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            beta1=scalar(beta1),
            beta2=scalar(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            maximize=group["maximize"],
        )


def nadam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """Functional NAdam over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        momentum_decay=momentum_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
    lists = (params, grads, exp_avgs, exp_avg_sqs, mu_products, steps)
    if implementation == "fused":
        run_fused(_fused.nadam, _single_tensor_nadam, lists, n_tail=2, **hyper)
    elif implementation == "torch":
        _torch_nadam(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_nadam(*lists, **hyper)


def _single_tensor_nadam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
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

        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_products[i] *= mu  # kept as a tensor (rounded to its dtype), as torch.optim does
        mu_product = mu_products[i].item()
        mu_product_next = mu_product * mu_next

        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = v.div(1 - beta2**t).sqrt().add_(eps)
        param.addcdiv_(grad, denom, value=-lr * (1.0 - mu) / (1.0 - mu_product))
        param.addcdiv_(m, denom, value=-lr * mu_next / (1.0 - mu_product_next))
