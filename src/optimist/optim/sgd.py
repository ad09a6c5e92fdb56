r"""Stochastic gradient descent, with momentum, dampening, Nesterov momentum and weight decay.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    b_t &\leftarrow g_t \text{ at the first step, else } \mu b_{t-1} + (1 - \tau) g_t \\
    g_t &\leftarrow g_t + \mu b_t \text{ (Nesterov) or } b_t \text{ (momentum } \mu \ne 0) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma g_t

Plain gradient descent, stochastic gradient descent and mini-batch gradient descent are all this
rule: which one you get is the batch of data the gradient was computed on (all of it, one
example, or a few). State key as torch.optim: ``momentum_buffer`` (only when momentum != 0).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.sgd import sgd as _torch_sgd

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_flag,
    check_nonnegative,
    run_fused,
    scalar,
)

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    """SGD: a drop-in ``torch.optim.SGD`` (same arguments, defaults and state keys).

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3, as torch.optim; the registry name
            ``"sgd"`` uses 0.01, as Keras).
        momentum: :math:`\\mu` (default 0).
        dampening: :math:`\\tau`, scales down new gradients in the momentum buffer.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening == 0).
        maximize: ascend instead of descend.
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        differentiable: accepted for signature compatibility; True is not supported.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_nonnegative("momentum", group["momentum"])
        check_nonnegative("dampening", group["dampening"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_flag("nesterov", group["nesterov"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum > 0 and zero dampening, got "
                f"momentum={group['momentum']}, dampening={group['dampening']}"
            )

    def _step_group(self, group: dict[str, Any]) -> None:
        params: list[Tensor] = []
        grads: list[Tensor] = []
        buffers: list[Tensor] = []
        is_new: list[bool] = []
        momentum = group["momentum"]
        new_buffers: list[tuple[dict[str, Any], Tensor]] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            self._check_sparse(p.grad, "SGD")
            params.append(p)
            grads.append(p.grad)
            if momentum != 0:
                state = self.state[p]
                buf = state.get("momentum_buffer")
                is_new.append(buf is None)
                if buf is None:
                    # the first step sets it to the gradient; allocated here so that every
                    # implementation writes into the same tensor
                    buf = torch.empty_like(p, memory_format=torch.preserve_format)
                    new_buffers.append((state, buf))
                buffers.append(buf)
        if not params:
            return
        sgd(
            params,
            grads,
            buffers,
            is_new,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            weight_decay=scalar(group["weight_decay"]),
            momentum=momentum,
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        # stored only once filled, so a step that raised leaves no uninitialised buffer behind
        for state, buf in new_buffers:
            state["momentum_buffer"] = buf


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    is_new_buffer: list[bool],
    *,
    implementation: str = "single",
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """Functional SGD. ``momentum_buffers`` is empty when momentum == 0; ``is_new_buffer[i]``
    marks a buffer allocated this step (set to the gradient rather than updated)."""
    hyper = dict(
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
    )
    lists = (params, grads, momentum_buffers, is_new_buffer)
    if implementation == "fused":
        run_fused(_fused.sgd, _single_tensor_sgd, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        torch_buffers: list[Tensor | None] = [
            None if new else buf for buf, new in zip(momentum_buffers, is_new_buffer, strict=True)
        ]
        _torch_sgd(
            params,
            grads,
            torch_buffers if momentum != 0 else [None] * len(params),
            foreach=True,
            **hyper,
        )
        if momentum != 0:
            for buf, new, result in zip(
                momentum_buffers, is_new_buffer, torch_buffers, strict=True
            ):
                if new:
                    buf.copy_(result)
    else:
        _single_tensor_sgd(*lists, **hyper)


def _single_tensor_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    is_new_buffer: list[bool],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = as_real(momentum_buffers[i])
            if is_new_buffer[i]:
                buf.copy_(grad)  # b_1 = g_1
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)  # b = mu b + (1 - tau) g
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        param.add_(grad, alpha=-lr)
