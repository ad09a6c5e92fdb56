r"""Adam and AdamW.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})\\
    g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad\text{(Adam: L2 penalty), or}\quad
        \theta_{t-1} \leftarrow \theta_{t-1}(1 - \gamma\lambda) \quad\text{(AdamW: decoupled)}\\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
    \hat v_t &\leftarrow \max(\hat v_{t-1}, v_t) \text{ with AMSGrad, else } v_t \\
    \theta_t &\leftarrow \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}
        \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2014); Loshchilov & Hutter,
"Decoupled Weight Decay Regularization" (2017); Reddi et al., "On the Convergence of Adam and
Beyond" (2018). State keys as torch.optim: ``step``, ``exp_avg``, ``exp_avg_sq``,
``max_exp_avg_sq`` (AMSGrad only).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

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

__all__ = ["Adam", "AdamW", "adam"]


class Adam(Optimizer):
    """Adam (and, with ``decoupled_weight_decay=True``, AdamW): a drop-in ``torch.optim.Adam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment averages.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`; an L2 penalty, or decoupled decay (AdamW).
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad).
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        maximize: ascend instead of descend.
        capturable, differentiable: accepted for signature compatibility; True is not
            supported for either.
        decoupled_weight_decay: AdamW's decay instead of the L2 penalty.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_betas(group["betas"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_flag("amsgrad", group["amsgrad"])
        check_flag("decoupled_weight_decay", group["decoupled_weight_decay"])
        if group.get("foreach") and not group.get("capturable"):
            # as torch.optim.Adam: its multi-tensor kernel takes no tensor hyperparameters
            tensors = [("lr", group["lr"]), ("betas[0]", group["betas"][0])]
            tensors.append(("betas[1]", group["betas"][1]))
            for name, value in tensors:
                if isinstance(value, Tensor):
                    raise ValueError(
                        f"{name} as a Tensor is not supported for capturable=False and foreach=True"
                    )

    def _step_group(self, group: dict[str, Any]) -> None:
        amsgrad = group["amsgrad"]

        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if amsgrad:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        keys = ["exp_avg", "exp_avg_sq", "step"] + (["max_exp_avg_sq"] if amsgrad else [])
        params, grads, columns = self._gather(group, type(self).__name__, init_state, keys)
        if not params:
            return
        exp_avgs, exp_avg_sqs, steps = columns[:3]
        max_exp_avg_sqs = columns[3] if amsgrad else []
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            max_exp_avg_sqs,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            beta1=scalar(beta1),
            beta2=scalar(beta2),
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsgrad=amsgrad,
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default ``weight_decay=1e-2``), as torch.optim."""

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            skip_nonfinite=skip_nonfinite,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool = False,
) -> None:
    """Functional Adam/AdamW over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps)
    if implementation == "fused":
        run_fused(_fused.adam, _single_tensor_adam, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_adam(
            *lists,
            foreach=True,
            has_complex=any(torch.is_complex(p) for p in params),
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            beta1=beta1,
            beta2=beta2,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
        )
    else:
        _single_tensor_adam(*lists, **hyper)


def _single_tensor_adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        param, grad = as_real(param), as_real(grad)
        m, v = as_real(exp_avgs[i]), as_real(exp_avg_sqs[i])
        steps[i] += 1
        t = steps[i].item()

        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)

        m.lerp_(grad, 1 - beta1)  # m = b1 m + (1 - b1) g
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v = b2 v + (1 - b2) g^2
        if amsgrad:
            v_max = as_real(max_exp_avg_sqs[i])
            torch.maximum(v_max, v, out=v_max)
            v = v_max

        step_size = lr / (1 - beta1**t)
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        param.addcdiv_(m, denom, value=-step_size)
