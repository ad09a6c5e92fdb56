r"""RMSprop: divide the gradient by a running root-mean-square of recent gradients.

.. math::

    g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) \quad (\text{negated if maximize})
        \; + \lambda \theta_{t-1} \\
    v_t &\leftarrow \alpha v_{t-1} + (1 - \alpha) g_t^2 \\
    d_t &\leftarrow \sqrt{v_t - \bar g_t^2} + \epsilon \text{ with }
        \bar g_t = \alpha \bar g_{t-1} + (1 - \alpha) g_t \text{ (centered), else }
        \sqrt{v_t} + \epsilon \\
    b_t &\leftarrow \mu b_{t-1} + g_t / d_t, \quad \theta_t \leftarrow \theta_{t-1} - \gamma b_t
        \quad (\text{momentum } \mu > 0) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma g_t / d_t \quad (\text{otherwise})

Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture 6e (2012); Graves,
"Generating Sequences With Recurrent Neural Networks" (2013) for the centered form. State keys as
torch.optim: ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.rmsprop import rmsprop as _torch_rmsprop

from optimist.optim import fused as _fused
from optimist.optim.base import (
    Optimizer,
    ParamsT,
    as_real,
    check_flag,
    check_nonnegative,
    check_unit_interval,
    new_step_tensor,
    run_fused,
    scalar,
)

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(Optimizer):
    """RMSprop: a drop-in ``torch.optim.RMSprop``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-2).
        alpha: :math:`\\alpha`, the smoothing constant of the squared-gradient average, in [0, 1].
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`, an L2 penalty added to the gradient.
        momentum: :math:`\\mu` (default 0).
        centered: normalise by an estimate of the gradient's variance instead of its second
            moment.
        capturable: accepted for signature compatibility; True is not supported.
        foreach, fused: implementation choice (see :mod:`optimist.optim.base`).
        differentiable: accepted for signature compatibility; True is not supported.
        maximize: ascend instead of descend.
        skip_nonfinite: skip (and count) steps whose gradients hold NaN or inf.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_unit_interval("alpha", group["alpha"], closed=True)
        check_nonnegative("eps", group["eps"])
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("momentum", group["momentum"])
        check_flag("centered", group["centered"])

    def _step_group(self, group: dict[str, Any]) -> None:
        momentum, centered = group["momentum"], group["centered"]

        def init_state(p: Tensor, state: dict[str, Any]) -> None:
            state["step"] = new_step_tensor()
            state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if momentum > 0:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if centered:
                state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

        keys = ["square_avg", "step"]
        keys += ["grad_avg"] if centered else []
        keys += ["momentum_buffer"] if momentum > 0 else []
        params, grads, columns = self._gather(group, "RMSprop", init_state, keys)
        if not params:
            return
        square_avgs, steps = columns[0], columns[1]
        grad_avgs = columns[2] if centered else []
        momentum_buffers = columns[-1] if momentum > 0 else []
        rmsprop(
            params,
            grads,
            square_avgs,
            grad_avgs,
            momentum_buffers,
            steps,
            implementation=self._implementation(group, params),
            lr=scalar(group["lr"]),
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=momentum,
            centered=centered,
            maximize=group["maximize"],
        )


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    steps: list[Tensor],
    *,
    implementation: str = "single",
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """Functional RMSprop; ``grad_avgs`` empty unless centered, ``momentum_buffers`` empty
    unless momentum > 0."""
    hyper = dict(
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    )
    lists = (params, grads, square_avgs, grad_avgs, momentum_buffers, steps)
    if implementation == "fused":
        run_fused(_fused.rmsprop, _single_tensor_rmsprop, lists, n_tail=1, **hyper)
    elif implementation == "torch":
        _torch_rmsprop(
            *lists, foreach=True, has_complex=any(torch.is_complex(p) for p in params), **hyper
        )
    else:
        _single_tensor_rmsprop(*lists, **hyper)


def _single_tensor_rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    for i, param in enumerate(params):
        param = as_real(param)
        grad = as_real(-grads[i] if maximize else grads[i])
        v = as_real(square_avgs[i])
        steps[i] += 1
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        v.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)  # v = a v + (1 - a) g^2
        if centered:
            g_avg = as_real(grad_avgs[i])
            g_avg.lerp_(grad, 1 - alpha)  # g_avg = a g_avg + (1 - a) g
            denom = v.addcmul(g_avg, g_avg, value=-1).sqrt_().add_(eps)
        else:
            denom = v.sqrt().add_(eps)
        if momentum > 0:
            buf = as_real(momentum_buffers[i])
            buf.mul_(momentum).addcdiv_(grad, denom)  # b = mu b + g / d
            param.add_(buf, alpha=-lr)
        else:
            param.addcdiv_(grad, denom, value=-lr)
