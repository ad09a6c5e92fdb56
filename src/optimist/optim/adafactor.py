r"""Adafactor: second moments factored into row and column statistics, relative step sizes.

For a parameter of rank >= 2 (factored over its last two dimensions; a vector keeps a full
second moment), with :math:`\hat\beta_{2,t} = 1 - t^{c}` (``beta2_decay`` :math:`c = -0.8`):

.. math::

    R_t &\leftarrow \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,\mathrm{mean}_{-1}(g_t^2) \\
    C_t &\leftarrow \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,\mathrm{mean}_{-2}(g_t^2) \\
    \hat V_t &\leftarrow R_t C_t / \max(\mathrm{mean}(R_t), \epsilon_1) \\
    U_t &\leftarrow g_t / \sqrt{\max(\hat V_t, \epsilon_1^2)}, \quad
    \rho_t = \min(\gamma, t^{-1/2}), \quad
    \alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\,\rho_t \\
    \theta_t &\leftarrow \theta_{t-1}(1 - \gamma\lambda)
        - \alpha_t\, U_t / \max(1, \mathrm{RMS}(U_t) / d)

Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost" (2018),
Algorithms 4 and 5 with update clipping (sec. 5), in ``torch.optim.Adafactor``'s form (torch
2.13): same arguments, defaults, state keys (``step``, ``row_var``, ``col_var``, ``variance``)
and results, tested bit for bit, and against ``optimist.reference.adafactor`` (float64, step
by step). Like torch's it has no first moment. The factored moments are
stored in the parameter's dtype (a rank-r parameter of shape ``(..., n, m)`` keeps ``n + m``
values per trailing matrix instead of ``n m``); ``state_dtype`` does not apply. It is torch ops
per tensor (whole-tensor norms rule out the element-wise engine).

Distributed: under ``ZeroRedundancyOptimizer`` each tensor is whole on one rank. Under FSDP2
(DTensor parameters) every rank all-gathers the gradient, keeps the factored moments of the
whole gradient (``n + m`` values: replicated, plain tensors; a vector's full ``variance`` too),
computes the whole update and applies its own shard of it; the parameter RMS comes from
all-reduced sums of squares (:mod:`optimist.optim.distributed`). Same result as one process;
one all-gather per tensor per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from optimist.optim.base import ParamsT, check_nonnegative, new_step_tensor, scalar
from optimist.optim.distributed import global_norms, local, local_grad, shard_of, whole
from optimist.optim.tensorwise import TensorwiseOptimizer

__all__ = ["Adafactor"]


class Adafactor(TensorwiseOptimizer):
    """Adafactor (Shazeer & Stern 2018) as ``torch.optim.Adafactor``; see the module docstring.

    Args:
        params: parameters or param groups.
        lr: the relative step size's cap :math:`\\gamma` (default 1e-2).
        beta2_decay: :math:`c` in :math:`\\hat\\beta_{2,t} = 1 - t^c` (default -0.8).
        eps: :math:`(\\epsilon_1, \\epsilon_2)`: the floor of the second moment (None: the
            parameter dtype's machine epsilon) and of the parameter RMS (default 1e-3).
        d: the update clipping threshold, >= 1 (default 1).
        weight_decay: :math:`\\lambda`, decoupled (scaled by ``lr``).
        foreach: accepted for signature compatibility (one implementation here).
        maximize: ascend instead of descend.
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        if not scalar(group["beta2_decay"]) <= 0:
            raise ValueError(f"Invalid beta2_decay: {group['beta2_decay']} (must be <= 0)")
        eps = group["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"Invalid eps: {eps!r} (a pair (eps1 or None, eps2))")
        if eps[0] is not None:
            check_nonnegative("eps[0]", eps[0])
        check_nonnegative("eps[1]", eps[1])
        if not scalar(group["d"]) >= 1.0:
            raise ValueError(f"Invalid d: {group['d']} (the clipping threshold must be >= 1)")
        check_nonnegative("weight_decay", group["weight_decay"])

    def _step_group(self, group: dict[str, Any]) -> None:
        lr, wd, d = scalar(group["lr"]), scalar(group["weight_decay"]), scalar(group["d"])
        eps1_given, eps2 = group["eps"]
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.is_complex() or p.grad.is_sparse:
                raise RuntimeError("Adafactor does not support complex parameters or sparse grads")
            g = -p.grad if group["maximize"] else p.grad
            shard = local(p)
            g = whole(local_grad(g, p), p)  # FSDP2: the whole gradient (module docstring)
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor()
                if g.dim() > 1:
                    state["row_var"] = g.new_zeros((*g.shape[:-1], 1))
                    state["col_var"] = g.new_zeros((*g.shape[:-2], 1, g.shape[-1]))
                else:
                    state["variance"] = torch.zeros_like(g, memory_format=torch.preserve_format)
            eps1 = torch.finfo(p.dtype).eps if eps1_given is None else eps1_given
            state["step"] += 1
            t = state["step"].item()
            w = t ** scalar(group["beta2_decay"])  # 1 - beta2_t
            (p_norm,) = global_norms([shard], p)
            alpha = max(eps2, p_norm / p.numel() ** 0.5) * min(lr, 1 / t**0.5)
            if wd != 0:
                shard.mul_(1 - lr * wd)
            if g.dim() > 1:
                row, col = state["row_var"], state["col_var"]
                row.lerp_(torch.norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1)), w)
                col.lerp_(torch.norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2)), w)
                estimate = row @ col
                estimate.div_(row.mean(dim=-2, keepdim=True).clamp_(min=eps1))
            else:
                state["variance"].lerp_(g * g, w)
                estimate = state["variance"].clone()
            update = estimate.clamp_(min=eps1 * eps1).rsqrt_().mul_(g)
            denom = max(1.0, update.norm(2).item() / (update.numel() ** 0.5 * d))
            shard.add_(shard_of(update, p), alpha=-alpha / denom)
