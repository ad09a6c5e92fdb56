r"""ADOPT: Adam with the current gradient left out of its own normalisation.

.. math::

    v_0 &\leftarrow g_0^2 \quad\text{(first step: no update)}\\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\,
        \operatorname{clip}\Bigl(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)}, c_t\Bigr) \\
    \theta_t &\leftarrow \theta_{t-1} - \gamma m_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2) g_t^2

Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any :math:`\beta_2` with the Optimal
Rate" (NeurIPS 2024), Algorithm 2 (the clipped form of arXiv v3, :math:`c_t = t^{1/4}` for the
``t``-th update; ``clip_exponent=None`` gives Algorithm 1, unclipped). Conventions follow the
authors' code (``torch-adopt`` 0.1.0, which the tests compare against): epsilon clamps
:math:`\sqrt{v}` from below (not added), defaults ``lr=1e-3, betas=(0.9, 0.9999), eps=1e-6``, an
L2 penalty by default and decoupled decay (their ``decouple=True``) with
``decoupled_weight_decay=True``. One difference: optimist's engine applies decoupled decay on
every step, the first (initialisation) step included; the authors' code skips it there. State
keys as theirs: ``step`` (the first step counts), ``exp_avg``, ``exp_avg_sq``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim.base import (
    ParamsT,
    check_nonnegative,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["ADOPT", "ADOPT_RULE"]


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    exponent = group["clip_exponent"]
    clip = math.inf if exponent is None else (t - 1) ** exponent
    first = 1.0 if t == 1 else 0.0
    return (first, clip, 1 - beta1, beta2, 1 - beta2, group["eps"], -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    first, clip, w1, beta2, one_minus_beta2, eps, neg_lr = h
    m, v = s
    if first:
        v.addcmul_(g, g)  # v_0 = g_0^2
        return
    normed = g.div(torch.clamp(v.sqrt(), min=eps)).clamp_(-clip, clip)
    m.lerp_(normed, w1)
    p.add_(m, alpha=neg_lr)
    v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)


ADOPT_RULE = Rule(
    name="adopt",
    slots=(Slot("exp_avg"), Slot("exp_avg_sq")),
    scalars=_scalars,
    eager=_eager,
    decoupled=lambda g: bool(g["decoupled_weight_decay"]),
)


class ADOPT(RuleOptimizer):
    """ADOPT (Taniguchi et al. 2024), clipped by default; see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)`.
        eps: :math:`\\epsilon`, the floor of :math:`\\sqrt{v}` (default 1e-6).
        clip_exponent: the normalised gradient is clipped to :math:`\\pm k^{e}` on the
            ``k``-th update (default 0.25, the paper's); None: no clipping.
        weight_decay: :math:`\\lambda`, an L2 penalty or (``decoupled_weight_decay``) decoupled.
        decoupled_weight_decay: AdamW-style decay (the authors' ``decouple=True``).
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    rule = ADOPT_RULE
    nonnegative = ("eps", "weight_decay")
    examples = (
        {"lr": 0.01, "weight_decay": 0.01},
        {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
        {"lr": 0.01, "clip_exponent": None, "betas": (0.8, 0.99), "eps": 1e-2},
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_exponent: float | None = 0.25,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        if group["clip_exponent"] is not None:
            check_nonnegative("clip_exponent", group["clip_exponent"])
