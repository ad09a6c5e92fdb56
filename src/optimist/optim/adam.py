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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.adam import adam as _torch_adam

from optimist.optim.base import (
    ParamsT,
    call_arguments,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADAM", "Adam", "AdamW"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    step_size = scalar(group["lr"]) / (1 - beta1**t)
    bias_correction2_sqrt = (1 - beta2**t) ** 0.5
    return (1 - beta1, beta2, 1 - beta2, bias_correction2_sqrt, group["eps"], -step_size)


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    w1, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step_size = h
    m, v, v_max = s
    m.lerp_(g, w1)  # m = b1 m + (1 - b1) g
    v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)  # v = b2 v + (1 - b2) g^2
    if flags[0]:  # AMSGrad
        torch.maximum(v_max, v, out=v_max)
        v = v_max
    p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=neg_step_size)


ADAM = Rule(
    name="adam",
    slots=(
        Slot("exp_avg"),
        Slot("exp_avg_sq"),
        Slot("max_exp_avg_sq", when=lambda g: g["amsgrad"]),
    ),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (bool(g["amsgrad"]),),
    decoupled=lambda g: bool(g["decoupled_weight_decay"]),
    torch_foreach=_torch_adam,
)


class Adam(RuleOptimizer):
    """Adam (and, with ``decoupled_weight_decay=True``, AdamW): a drop-in ``torch.optim.Adam``.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`, decay rates of the moment averages.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`; an L2 penalty, or decoupled decay (AdamW).
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad).
        maximize, foreach, fused, capturable, differentiable, skip_nonfinite, state_dtype,
            stochastic_params, chain: see :class:`~optimist.optim.Optimizer`.
        decoupled_weight_decay: AdamW's decay instead of the L2 penalty.
    """

    rule = ADAM
    nonnegative = ("eps", "weight_decay")
    examples = ({"lr": 0.01, "amsgrad": True, "weight_decay": 0.01},)

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
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        if group.get("foreach") and not group.get("capturable"):
            # as torch.optim.Adam: its multi-tensor kernel takes no tensor hyperparameters
            tensors = [("lr", group["lr"]), ("betas[0]", group["betas"][0])]
            tensors.append(("betas[1]", group["betas"][1]))
            for name, value in tensors:
                if isinstance(value, Tensor):
                    raise ValueError(
                        f"{name} as a Tensor is not supported for capturable=False and foreach=True"
                    )


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default ``weight_decay=1e-2``), as torch.optim."""

    examples = ({"lr": 0.01},)

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
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**call_arguments(locals()), decoupled_weight_decay=True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
