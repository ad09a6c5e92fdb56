r"""Adagrad: per-coordinate learning rates from the sum of squared gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    \tilde\gamma_t &\leftarrow \gamma / (1 + (t - 1)\eta) \\
    s_t &\leftarrow s_{t-1} + g_t^2 \\
    \theta_t &\leftarrow \theta_{t-1} - \tilde\gamma_t \, g_t / (\sqrt{s_t} + \epsilon)

Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
Optimization" (JMLR 2011). State keys as torch.optim: ``step``, ``sum``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.adagrad import adagrad as _torch_adagrad

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_nonnegative,
    new_step_tensor,
    run_fused,
    scalar,
)

__all__ = ["Adagrad", "adagrad"]


class Adagrad(Optimizer):
    """Adagrad: a drop-in ``torch.optim.Adagrad`` (dense gradients only).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-2).
        lr_decay: :math:`\\eta`, the learning rate decays as :math:`1 / (1 + (t-1)\\eta)`.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        initial_accumulator_value: the starting value of the sum :math:`s_0`.
        eps: :math:`\\epsilon` added to the denominator.
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        differentiable: accepted for signature compatibility; True is not supported.
        maximize: ascend instead of descend.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)
        # torch.optim.Adagrad creates its state eagerly; so do we, so state_dicts line up
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group["initial_accumulator_value"])

    @staticmethod
    def _init_state(p: Tensor, state: dict[str, Any], initial: float) -> None:
        if state:
            return
        state["step"] = new_step_tensor()
        value = complex(initial, initial) if torch.is_complex(p) else initial
        state["sum"] = torch.full_like(p, value, memory_format=torch.preserve_format)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_nonnegative("lr_decay", group["lr_decay"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("initial_accumulator_value", group["initial_accumulator_value"])
        check_nonnegative("eps", group["eps"])

    def _step_group(self, group: dict[str, Any]) -> None:
        initial = group["initial_accumulator_value"]
        params, grads, (sums, steps) = self._gather(
            group, "Adagrad", lambda p, s: self._init_state(p, s, initial), ["sum", "step"]
        )
        if not params:
            return
        adagrad(
            params,
            grads,
            sums,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            weight_decay=group["weight_decay"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Functional Adagrad over index-aligned tensor lists (see the module docstring)."""
    hyper = dict(lr=lr, weight_decay=weight_decay, lr_decay=lr_decay, eps=eps, maximize=maximize)
    lists = (params, grads, state_sums, steps)
    if implementation == "fused":
        run_fused(_fused.adagrad, _single_tensor_adagrad, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_adagrad(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_adagrad(*lists, **hyper)


def _single_tensor_adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        s = as_real(state_sums[i])
        steps[i] += 1
        t = steps[i].item()
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        clr = lr / (1 + (t - 1) * lr_decay)
        s.addcmul_(grad, grad, value=1)  # s = s + g^2
        param.addcdiv_(grad, s.sqrt().add_(eps), value=-clr)
