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
(whole-tensor norms rule out the element-wise engine): parameters of one shape stacked and
vectors concatenated, a few batched ops per shape and no host read per tensor
(:meth:`Adafactor._foreach_step`), or per tensor as torch's for-loop with ``foreach=False``.

**Where epsilon_1 sits** (``eps1_form``). torch and the paper disagree:

* ``eps1_form="clamp"`` (the default; ``torch.optim.Adafactor``, as above): :math:`\epsilon_1`
  floors ``mean(R)`` and the estimate (at :math:`\epsilon_1^2`);
* ``eps1_form="add"`` (the paper, Algorithms 4-5; Keras 3's ``Adafactor``): :math:`\epsilon_1`
  is added to :math:`g_t^2` before the row and column means (and for vectors), with no floor:

  .. math::

      R_t \leftarrow \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,
      \mathrm{mean}_{-1}(g_t^2 + \epsilon_1), \quad
      \hat V_t \leftarrow (R_t / \mathrm{mean}(R_t))\, C_t, \quad
      U_t \leftarrow g_t / \sqrt{\hat V_t}

  (``C_t`` and a vector's ``V_t`` alike). They differ visibly only where :math:`g^2` is near
  :math:`\epsilon_1` or below it, and there in kind: at Keras' :math:`\epsilon_1 = 10^{-30}`
  torch's floor :math:`10^{-60}` is 0 in float32, so a zero gradient entry (a dead ReLU unit,
  an unused embedding row) whose estimate is 0 gives :math:`0/0` = NaN, where the paper's
  :math:`\epsilon_1` keeps the estimate positive and the entry's update 0. :math:`\hat V_t^{-1/2}`
  is formed as the outer product of :math:`(R_t / \mathrm{mean}(R_t))^{-1/2}` and
  :math:`C_t^{-1/2}`: :math:`\hat V_t` itself is :math:`\epsilon_1^2/\mathrm{mean}(R_t)`, 0 in
  float32, where a row and a column of :math:`g` are both all zero (Keras 3.15 forms it and
  gives NaN for the whole tensor there; this gives those entries no update).

Distributed: under ``ZeroRedundancyOptimizer`` each tensor is whole on one rank. Under FSDP2
(DTensor parameters) every rank all-gathers the gradient, keeps the factored moments of the
whole gradient (``n + m`` values: replicated, plain tensors; a vector's full ``variance`` too),
computes the whole update and applies its own shard of it; the parameter RMS comes from
all-reduced sums of squares (:mod:`optimist.optim.distributed`). Same result as one process;
one all-gather per tensor per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim import bucket
from optimist.optim.base import (
    ParamsT,
    check_choice,
    check_nonnegative,
    init_arguments,
    new_step_tensor,
    scalar,
)
from optimist.optim.distributed import global_norms, local, local_grad, shard_of, whole
from optimist.optim.gather import PLAIN_TYPES
from optimist.optim.tensorwise import TensorwiseOptimizer

__all__ = ["EPS1_FORMS", "Adafactor"]

#: The accepted ``eps1_form`` values: torch's floors of the estimate, or the paper's (and Keras')
#: epsilon_1 added to the squared gradient (module docstring).
EPS1_FORMS = ("clamp", "add")


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
        foreach: None or True (default): same-shape parameters stacked, vectors flat
            (:meth:`_foreach_step`; bitwise the per-tensor path on the CPU); False: per tensor.
        maximize: ascend instead of descend.
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
        state_dtype: None only (the factored moments are in the parameter's dtype).
        eps1_form: where :math:`\\epsilon_1` sits: ``"clamp"`` (default, torch's floors) or
            ``"add"`` (the paper's and Keras': added to :math:`g^2`); module docstring. With
            ``"add"`` give eps1 too (the paper's is 1e-30): None adds the machine epsilon.
    """

    nonnegative = ("weight_decay",)
    examples = (
        {"lr": 0.05, "weight_decay": 0.1, "d": 2.0},
        {"lr": 0.01, "beta2_decay": -0.5, "eps": (1e-20, 1e-2), "maximize": True},
        {"lr": 0.05, "eps": (1e-30, 1e-3), "weight_decay": 0.1, "eps1_form": "add"},
    )

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
        state_dtype: str | None = None,
        eps1_form: str = "clamp",
    ) -> None:
        super().__init__(**init_arguments(locals()))

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
        why = ": torch's floors of the estimate, or eps1 added to g^2 as the paper and Keras"
        check_choice("eps1_form", group.get("eps1_form", "clamp"), EPS1_FORMS, why)

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if p.is_complex() or p.grad.is_sparse:
                raise RuntimeError("Adafactor does not support complex parameters or sparse grads")
            state = self.state[p]
            if not state:
                _init_state(p, state)
        if self._implementation(group, params) == "foreach":
            params = self._foreach_step(group, params)
        for p in params:
            self._tensor_step(group, p)

    def _implementation(self, group: dict[str, Any], params: Sequence[Tensor]) -> str:
        """ "foreach" (:meth:`_foreach_step`: the default, on every device; on the CPU too it
        is bitwise the per-tensor path and faster, README "Speed on CUDA") or "single"
        (:meth:`_tensor_step` for every tensor: ``foreach=False``)."""
        return "single" if group.get("foreach") is False else "foreach"

    def _tensor_step(self, group: dict[str, Any], p: Tensor) -> None:
        """One parameter's step in torch ops, as ``torch.optim.Adafactor``'s for-loop."""
        lr, wd, d = scalar(group["lr"]), scalar(group["weight_decay"]), scalar(group["d"])
        eps1_given, eps2 = group["eps"]
        g = -p.grad if group["maximize"] else p.grad
        shard = local(p)
        g = whole(local_grad(g, p), p)  # FSDP2: the whole gradient (module docstring)
        state = self.state[p]
        eps1 = torch.finfo(p.dtype).eps if eps1_given is None else eps1_given
        state["step"] += 1
        t = state["step"].item()
        w = t ** scalar(group["beta2_decay"])  # 1 - beta2_t
        (p_norm,) = global_norms([shard], p)
        alpha = max(eps2, p_norm / p.numel() ** 0.5) * min(lr, 1 / t**0.5)
        if wd != 0:
            shard.mul_(1 - lr * wd)
        add = _adds(group)
        if g.dim() > 1:
            inverse_root = _factored_inverse_root(
                g, state["row_var"], state["col_var"], w, eps1, add
            )
        else:
            state["variance"].lerp_(_squared(g, eps1, add), w)
            inverse_root = _inverse_root(state["variance"], eps1, add)
        update = inverse_root.mul_(g)
        denom = max(1.0, update.norm(2).item() / (update.numel() ** 0.5 * d))
        shard.add_(shard_of(update, p), alpha=-alpha / denom)

    def _foreach_step(self, group: dict[str, Any], params: list[Tensor]) -> list[Tensor]:
        """The default step (every device; ``foreach=False`` turns it off): the parameters that
        share a shape, device, dtype and step count are stacked, so their factored statistics,
        estimates and updates are a few batched ops per shape; the vectors (and 0-dim
        parameters) of a device, dtype and step count are concatenated flat instead. The
        parameter and update norms of a stack are one ``torch._foreach_norm``, and the
        step sizes (alpha / max(1, RMS(U) / d)) are computed on the device in float64 as the
        host does: no host read per tensor. Bitwise
        :meth:`_tensor_step` on the CPU (the same ops, each slice reduced as alone). Returns
        the parameters left to :meth:`_tensor_step`: DTensors, other dtypes than float32 and
        float64, tensors above :func:`bucket.tensor_max` elements (:data:`CPU_STACK_MAX` on the
        CPU), and shapes met once."""
        alone: list[Tensor] = []
        keyed: dict[tuple, list[Tensor]] = {}
        steps = bucket.host_values([self.state[p]["step"] for p in params])
        for p, step in zip(params, steps, strict=True):
            if (
                type(p) not in PLAIN_TYPES
                or p.dtype not in (torch.float32, torch.float64)
                or p.grad.dtype != p.dtype
                or p.numel() > _stack_max(p.device)
            ):
                alone.append(p)
                continue
            shape = p.shape if p.dim() > 1 else None  # vectors: one flat bucket
            keyed.setdefault((shape, p.device, p.dtype, step), []).append(p)
        for (shape, *_), members in keyed.items():
            singles, stacks = bucket.split([members], Tensor.numel)  # at most BUCKET_MAX too
            alone += singles
            for chunk in stacks:
                if shape is None:
                    self._flat_step(group, chunk)
                else:
                    self._stacked_step(group, chunk)
        return alone

    def _scales(
        self, group: dict[str, Any], params: list[Tensor], t: float, sizes: list[int]
    ) -> Any:
        """What every step of :meth:`_foreach_step` needs before the update: the step count
        ``t``'s weight ``w``, eps1, and a function of the updates' norms giving each tensor's
        ``-alpha / denom`` (float64, on the device)."""
        lr, d = scalar(group["lr"]), scalar(group["d"])
        eps1_given, eps2 = group["eps"]
        eps1 = torch.finfo(params[0].dtype).eps if eps1_given is None else eps1_given
        w = t ** scalar(group["beta2_decay"])
        rho = min(lr, 1 / t**0.5)
        device = params[0].device
        roots = bucket.device_values(tuple(n**0.5 for n in sizes), torch.float64, device)
        p_norm = torch.stack(torch._foreach_norm(params)).double()
        # fmax, not clamp: a NaN norm gives the floor, as the host's max(floor, nan) does
        alpha = torch.fmax(p_norm / roots, _host(eps2)).mul_(rho)

        def scale(update_norms: list[Tensor]) -> Tensor:
            u_norm = torch.stack(update_norms).double()
            return alpha.neg().div_(torch.fmax(u_norm / (roots * d), _host(1.0)))

        return w, eps1, scale

    def _decay(self, group: dict[str, Any], work: Tensor) -> None:
        lr, wd = scalar(group["lr"]), scalar(group["weight_decay"])
        if wd != 0:
            work.mul_(1 - lr * wd)

    def _stacked_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Parameters of one shape (rank >= 2), one step count: stacked."""
        states = [self.state[p] for p in params]
        t = bucket.advance([s["step"] for s in states])
        w, eps1, scale = self._scales(group, params, t, [p.numel() for p in params])
        g = torch.stack([p.grad for p in params])
        if group["maximize"]:
            g.neg_()
        rows, cols = [s["row_var"] for s in states], [s["col_var"] for s in states]
        row, col = torch.stack(rows), torch.stack(cols)
        inverse_root = _factored_inverse_root(g, row, col, w, eps1, _adds(group))
        torch._foreach_copy_(rows + cols, [*row.unbind(), *col.unbind()])
        update = inverse_root.mul_(g)
        factors = scale(torch._foreach_norm(list(update.unbind())))
        work = torch.stack(params)
        self._decay(group, work)
        work.addcmul_(update, factors.to(work.dtype).view(-1, *[1] * (work.dim() - 1)))
        torch._foreach_copy_(params, list(work.unbind()))

    def _flat_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Vectors and 0-dim parameters of one step count: concatenated flat."""
        states = [self.state[p] for p in params]
        t = bucket.advance([s["step"] for s in states])
        layout = bucket.Layout(params)
        w, eps1, scale = self._scales(group, params, t, layout.sizes)
        g = layout.flat([p.grad for p in params])
        if group["maximize"]:
            g.neg_()
        variances = [s["variance"] for s in states]
        variance = layout.flat(variances)
        add = _adds(group)
        variance.lerp_(_squared(g, eps1, add), w)
        layout.write(variances, variance)
        update = _inverse_root(variance, eps1, add).mul_(g)
        factors = scale(torch._foreach_norm(list(update.split(layout.sizes))))
        work = layout.flat(params)
        self._decay(group, work)
        work.addcmul_(update, layout.spread(factors, work.dtype))
        layout.write(params, work)


CPU_STACK_MAX = 1 << 14
"""On the CPU, larger tensors step alone: stacking them costs more copies than the calls save
(README "Speed on CUDA": 256x256 weights ran 0.89x torch's for-loop stacked)."""


def _host(value: float) -> Tensor:
    """A float64 0-dim CPU tensor: an operand of device ops that needs no copy to the device."""
    return torch.tensor(value, dtype=torch.float64)


def _stack_max(device: torch.device) -> int:
    """The most elements of a tensor that :meth:`Adafactor._foreach_step` stacks."""
    return CPU_STACK_MAX if device.type == "cpu" else bucket.tensor_max(device)


def _init_state(p: Tensor, state: dict[str, Any]) -> None:
    """torch's state of ``p``: the step, and the row and column statistics (rank >= 2, of the
    whole tensor under FSDP2) or a full second moment (vectors)."""
    shape = p.shape  # a DTensor's is the whole tensor's
    state["step"] = new_step_tensor()
    device, dtype = local(p).device, p.grad.dtype
    if len(shape) > 1:
        state["row_var"] = torch.zeros((*shape[:-1], 1), device=device, dtype=dtype)
        state["col_var"] = torch.zeros((*shape[:-2], 1, shape[-1]), device=device, dtype=dtype)
    else:
        state["variance"] = torch.zeros(shape, device=device, dtype=dtype)


def _adds(group: dict[str, Any]) -> bool:
    """Whether ``group`` adds eps1 to g^2 (the paper's ``eps1_form="add"``) instead of
    flooring the estimate (torch's ``"clamp"``; also a torch checkpoint's groups, which lack
    the key)."""
    return group.get("eps1_form", "clamp") == "add"


def _squared(g: Tensor, eps1: float, add: bool) -> Tensor:
    """``g^2``, plus eps1 with ``add``."""
    square = g * g
    return square.add_(eps1) if add else square


def _inverse_root(variance: Tensor, eps1: float, add: bool) -> Tensor:
    """A vector's ``1 / sqrt(variance)``, a new tensor: torch floors the variance at eps1^2
    first; the paper's already holds eps1."""
    return variance.rsqrt() if add else variance.clamp(min=eps1 * eps1).rsqrt_()


def _factored_inverse_root(
    g: Tensor, row: Tensor, col: Tensor, w: float, eps1: float, add: bool = False
) -> Tensor:
    """Update the row and column statistics of ``g`` (its last two dimensions) in place and
    return ``1 / sqrt(V)`` of the estimate ``V``: torch's ``row @ col / max(mean(row), eps1)``
    floored at eps1^2, or with ``add`` the paper's ``(row / mean(row)) @ col`` over the means of
    ``g^2 + eps1``, as the outer product of the two factors' inverse roots (``V`` itself would
    underflow to 0 in float32 where a row and a column of ``g`` are all zero: ``eps1^2``). One
    tensor, or a stack of them (a leading dimension) alike."""
    if add:
        # the paper's means of g^2 + eps1, as Keras computes them (torch's column norm below,
        # kept for bitwise torch, is a strided reduction 8x slower than this at 1024 x 1024)
        regulated = g.square().add_(eps1)
        row.lerp_(regulated.mean(dim=-1, keepdim=True), w)
        col.lerp_(regulated.mean(dim=-2, keepdim=True), w)
        return (row / row.mean(dim=-2, keepdim=True)).rsqrt_() * col.rsqrt()  # outer product
    row_mean = torch.norm(g, dim=-1, keepdim=True).square_().div_(g.size(-1))
    col_mean = torch.norm(g, dim=-2, keepdim=True).square_().div_(g.size(-2))
    row.lerp_(row_mean, w)
    col.lerp_(col_mean, w)
    estimate = (row @ col).div_(row.mean(dim=-2, keepdim=True).clamp_(min=eps1))
    return estimate.clamp_(min=eps1 * eps1).rsqrt_()
