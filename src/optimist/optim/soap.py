r"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner.

For a parameter whose (optionally merged) shape has dimensions :math:`d_1, \dots, d_k`, each
dimension :math:`i` with :math:`d_i \le` ``max_precond_dim`` keeps a Shampoo factor
:math:`L_i \in \mathbb{R}^{d_i \times d_i}` (the paper's L and R for a matrix) and its eigenbasis
:math:`Q_i`; :math:`\mathcal{P}(X) = X \times_1 Q_1^\top \cdots \times_k Q_k^\top` projects onto
the eigenbasis, :math:`\mathcal{P}^{-1}(X) = X \times_1 Q_1 \cdots \times_k Q_k` projects back
(identity along the other dimensions). On the first gradient :math:`g_0` only the
preconditioner is built (no update: the projection never uses the gradient it projects):

.. math::

    L_i \leftarrow \beta_s L_i + (1 - \beta_s)\, g_{(i)} g_{(i)}^\top, \qquad
    Q_i \leftarrow \mathrm{eigh}(L_i) \text{ (eigenvectors, eigenvalues descending)}

and on every later gradient, for :math:`t = 1, 2, \dots`:

.. math::

    M_t &\leftarrow \beta_1 M_{t-1} + (1 - \beta_1)\, g_t, \qquad
    V_t \leftarrow \beta_2 V_{t-1} + (1 - \beta_2)\, \mathcal{P}(g_t)^2 \\
    N_t &\leftarrow \mathcal{P}^{-1}\!\big(\mathcal{P}(M_t) / (\sqrt{V_t} + \epsilon)\big),
        \qquad \theta_t \leftarrow \big(\theta_{t-1} - \gamma
        \tfrac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} N_t\big)(1 - \gamma\lambda) \\
    L_i &\leftarrow \beta_s L_i + (1 - \beta_s)\, g_{(i)} g_{(i)}^\top; \quad
        \text{every } f \text{ steps: } Q_i \leftarrow \mathrm{QR}(L_i Q_i^{\sigma})

where :math:`g_{(i)}` is the gradient unfolded along dimension :math:`i`, :math:`\beta_s` is
``shampoo_beta`` (default :math:`\beta_2`), :math:`f` is ``precondition_frequency`` and
:math:`Q_i^{\sigma}` is :math:`Q_i` with its columns sorted by the estimated eigenvalues
:math:`\mathrm{diag}(Q_i^\top L_i Q_i)`, descending (one step of power iteration, then QR;
:math:`V` is permuted the same way along dimension :math:`i`).

Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam" (2024), Algorithm 3 with the
eigenbasis refresh of its Algorithm 4, in the conventions of the authors' code
(github.com/nikhilvyas/SOAP): the same arguments and defaults, Adam's bias correction
(``correct_bias``), weight decay applied after the update, ``merge_dims`` (merge adjacent
dimensions while their product stays <= ``max_precond_dim``), ``precondition_1d`` (a vector
gets one factor :math:`g g^\top`; off by default: plain Adam), ``normalize_grads`` (divide
:math:`N_t` by its RMS). As in the authors' current code, :math:`M` is kept rotated into the
eigenbasis (``exp_avg`` holds :math:`\mathcal{P}(M_t)`, updated with :math:`\mathcal{P}(g_t)`,
which :math:`V` needs anyway) and is rotated to the new basis at each refresh: a step costs
three products per preconditioned dimension (project :math:`g`, project back, the factor)
instead of the paper's four, and equals the paper's in exact arithmetic (the :math:`Q_i` are
orthogonal). A 0-dimensional parameter is never preconditioned. Tested against
``optimist.reference.soap`` (a NumPy port of the paper's algorithm, :math:`M` in the
parameter's space; float64, step by step, 1e-10) and ``pytorch_optimizer.SOAP`` (the same
variant; 1e-12 until its first refresh, which it computes in float32, then 1e-7).

Storage. ``exp_avg`` (:math:`\mathcal{P}(M)`) and ``exp_avg_sq`` (:math:`V`) are
element-wise and stored as ``state_dtype`` asks (None: the parameter's dtype; "float32",
"bfloat16" or block-wise "int8", see :mod:`optimist.optim.codecs`). The preconditioners ``GG``
(the :math:`L_i`) and their bases ``Q`` (lists with one entry per dimension, None where a
dimension is not preconditioned) are kept in float32 for bfloat16/float16 parameters and in
the parameter's dtype otherwise: a :math:`d_1 \times d_2` matrix costs
:math:`2(d_1^2 + d_2^2)` numbers besides :math:`M` and :math:`V`. ``step`` counts the Adam
steps (the first gradient is not one). All matrix work (eigh, QR, projections, the factor
updates) runs batched over the parameters of a group that share a shape and dtype, in the
precision the preconditioners are stored in; between steps their state tensors are views of
one batch tensor, so a step stacks nothing but the gradients.

Distributed. Under DDP and ``ZeroRedundancyOptimizer`` every tensor is whole on its rank and
nothing changes. Under FSDP2 (DTensor parameters sharded by rows) SOAP gathers: each rank
all-gathers the gradient, keeps the whole state (``GG``, ``Q``, ``exp_avg``, ``exp_avg_sq``:
plain tensors, the same on every rank, as one process keeps them), runs the same matrix work
and applies its own rows of the update. The rotated moments :math:`\mathcal{P}(M), V` mix
every row, so they cannot be sharded like the parameter; the state per rank is that of one
process. Same result as one process; one all-gather per parameter and step.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import (
    ParamsT,
    check_unit_interval,
    new_step_tensor,
    scalar,
)
from optimist.optim.distributed import is_dtensor, local, local_grad, shard_of, whole
from optimist.optim.tensorwise import TensorwiseOptimizer, new_slot, read_slot, write_slot

__all__ = ["SOAP", "merged_shape"]


def merged_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """The authors' ``merge_dims``: fuse adjacent dimensions while their product stays
    <= ``max_precond_dim`` (e.g. a (64, 32, 3, 3) convolution kernel with 10000 gives
    (2048, 9))."""
    merged: list[int] = []
    current = 1
    for size in shape:
        if current * size > max_precond_dim:
            if current > 1:
                merged.append(current)
                current = size
            else:
                merged.append(size)
                current = 1
        else:
            current *= size
    if current > 1 or not merged:
        merged.append(current)
    return tuple(merged)


def _unfold(x: Tensor, dim: int) -> Tensor:
    """A batch ``(B, *S)`` as ``(B, prod(S) / S[dim], S[dim])``: dimension ``dim`` last."""
    return x.movedim(dim + 1, -1).reshape(x.shape[0], -1, x.shape[dim + 1])


def _multiply(x: Tensor, qs: list[Tensor | None], back: bool) -> Tensor:
    """Each dimension ``i`` of the batch ``x`` (B, *S) times ``Q_i`` (B, d_i, d_i): the
    projection onto the eigenbases (``back=False``: :math:`X \\times_i Q_i^\\top`) or back."""
    for i, q in enumerate(qs):
        if q is None:
            continue
        moved = x.movedim(i + 1, -1)
        product = _unfold(x, i) @ (q.mT if back else q)
        x = product.reshape(moved.shape).movedim(-1, i + 1)
    return x


def _outer(x: Tensor, dim: int) -> Tensor:
    """:math:`g_{(i)} g_{(i)}^\\top` for every gradient of the batch: (B, d_i, d_i)."""
    unfolded = _unfold(x, dim)
    return unfolded.mT @ unfolded


def _eigenbasis(factor: Tensor) -> Tensor:
    """Eigenvectors of symmetric ``factor`` (B, d, d), columns by eigenvalue descending."""
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    return torch.linalg.eigh(factor + 1e-30 * eye).eigenvectors.flip(-1)  # as the authors


def _batch(tensors: list[Tensor], assign: Callable[[int, Tensor], None]) -> Tensor:
    """The ``(B, ...)`` batch of ``tensors`` to update in place: their common base when they are
    its consecutive views (as after their first batched step), else a stack that becomes that
    base (``assign(k, view)`` hands state ``k`` its view), so later steps copy nothing."""
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    base = tensors[0]._base
    if (
        base is not None
        and base.is_contiguous()
        and base.shape == (len(tensors), *tensors[0].shape)
        and all(
            t._base is base and t.data_ptr() == base[k].data_ptr() for k, t in enumerate(tensors)
        )
    ):
        return base
    stacked = torch.stack(tensors)
    for k in range(len(tensors)):
        assign(k, stacked[k])
    return stacked


def _whole(p: Tensor) -> Tensor:
    """``p`` itself, or for a DTensor a stand-in for its whole tensor with its shape, dtype and
    device (an expanded scalar: no memory), for the whole state SOAP keeps on every rank."""
    return local(p).new_empty(()).expand(p.shape) if is_dtensor(p) else p


def _in_list(states: list[dict[str, Any]], key: str, i: int) -> Callable[[int, Tensor], None]:
    return lambda k, view: states[k][key].__setitem__(i, view)


def _in_state(states: list[dict[str, Any]], key: str) -> Callable[[int, Tensor], None]:
    return lambda k, view: states[k].__setitem__(key, view)


class SOAP(TensorwiseOptimizer):
    """SOAP (Vyas et al. 2024) as the authors' code; see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 3e-3).
        betas: Adam's :math:`(\\beta_1, \\beta_2)` (default (0.95, 0.95)).
        shampoo_beta: :math:`\\beta_s`, the preconditioner factors' EMA (None: :math:`\\beta_2`).
        eps: added to :math:`\\sqrt{V}` (default 1e-8).
        weight_decay: :math:`\\lambda`, decoupled, applied after the update (default 0.01).
        precondition_frequency: :math:`f`, steps between eigenbasis refreshes (default 10).
        max_precond_dim: dimensions larger than this are not preconditioned (default 10000).
        merge_dims: merge adjacent dimensions up to ``max_precond_dim`` (default False).
        precondition_1d: precondition vectors too (default False: Adam for them).
        normalize_grads: divide each update by its RMS (default False).
        correct_bias: Adam's bias correction of the step size (default True).
        maximize: ascend instead of descend.
        state_dtype: storage of ``exp_avg``/``exp_avg_sq`` (None, "float32", "bfloat16",
            "int8"); the preconditioners' storage is described in the module docstring.
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
    """

    raw_state_keys = ("exp_avg", "exp_avg_sq", "GG", "Q")
    nonnegative = ("eps", "weight_decay")
    state_dtypes = codecs.STATE_DTYPES  # the Adam moments go through the engine's codecs

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        correct_bias: bool = True,
        *,
        maximize: bool = False,
        state_dtype: str | None = None,
        skip_nonfinite: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            shampoo_beta=shampoo_beta,
            eps=eps,
            weight_decay=weight_decay,
            precondition_frequency=precondition_frequency,
            max_precond_dim=max_precond_dim,
            merge_dims=merge_dims,
            precondition_1d=precondition_1d,
            normalize_grads=normalize_grads,
            correct_bias=correct_bias,
            maximize=maximize,
            state_dtype=state_dtype,
        )
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)  # lr, betas, nonnegative, the bool flags
        codecs.check_state_dtype(group.get("state_dtype"), self.state_dtypes)
        if group["shampoo_beta"] is not None:
            check_unit_interval("shampoo_beta", group["shampoo_beta"])
        for key in ("precondition_frequency", "max_precond_dim"):
            value = group[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Invalid {key}: {value!r} ({key} must be an integer >= 1)")

    # --- shapes ---------------------------------------------------------------------------

    @staticmethod
    def _layout(p: Tensor, group: dict[str, Any]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        """The shape the matrix work sees and which of its dimensions are preconditioned."""
        limit = group["max_precond_dim"]
        if p.dim() == 0:
            return (1,), (False,)
        shape = tuple(p.shape)
        if p.dim() == 1:
            return shape, (group["precondition_1d"] and shape[0] <= limit,)
        if group["merge_dims"]:
            shape = merged_shape(shape, limit)
        return shape, tuple(size <= limit for size in shape)

    # --- the step -------------------------------------------------------------------------

    def _step_group(self, group: dict[str, Any]) -> None:
        buckets: dict[tuple[Any, ...], list[Tensor]] = defaultdict(list)
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.is_complex() or p.grad.is_sparse:
                raise RuntimeError("SOAP does not support complex parameters or sparse gradients")
            state = self.state[p]
            step = int(state["step"].item()) if "step" in state else -1
            buckets[(p.shape, p.dtype, p.device, step)].append(p)
        for (_, _, _, step), params in buckets.items():
            self._step_bucket(group, params, step + 1)

    def _step_bucket(self, group: dict[str, Any], params: list[Tensor], t: int) -> None:
        """One step of ``params`` (same shape, dtype, device and step ``t``), batched."""
        shape, preconditioned = self._layout(params[0], group)
        low = params[0].dtype in (torch.bfloat16, torch.float16)
        work = torch.float32 if low else params[0].dtype
        # FSDP2: every rank works on the whole gradient and keeps the whole state (module doc)
        grads = [whole(local_grad(p.grad, p), p).reshape(shape) for p in params]
        wholes = [_whole(p) for p in params]
        g = (grads[0].unsqueeze(0) if len(grads) == 1 else torch.stack(grads)).to(work)
        if group["maximize"]:
            g = -g
        beta1, beta2 = (scalar(b) for b in group["betas"])
        shampoo_beta = beta2 if group["shampoo_beta"] is None else scalar(group["shampoo_beta"])
        states = [self.state[p] for p in params]
        dims = [i for i, on in enumerate(preconditioned) if on]
        if t == 0:  # the first gradient builds the preconditioner only
            for p, state in zip(wholes, states, strict=True):
                state["step"] = new_step_tensor()
                for key in ("exp_avg", "exp_avg_sq"):
                    new_slot(p, state, key, group["state_dtype"])
                state["GG"] = [None] * len(shape)
                state["Q"] = [None] * len(shape)
            for i in dims:
                factor = _outer(g, i).mul_(1 - shampoo_beta)  # the EMA from zero
                basis = _eigenbasis(factor)
                for k, state in enumerate(states):
                    state["GG"][i], state["Q"][i] = factor[k], basis[k]
            return

        qs: list[Tensor | None] = [None] * len(shape)
        for i in dims:
            qs[i] = _batch([s["Q"][i] for s in states], _in_list(states, "Q", i))
        (m, m_in_place), (v, v_in_place) = (
            self._slot_batch(group, wholes, states, key, shape, work)
            for key in ("exp_avg", "exp_avg_sq")
        )
        # M is kept in the eigenbasis, as the authors' code: P(M) = beta1 P(M) + (1-beta1) P(G)
        projected = _multiply(g, qs, back=False)
        m.mul_(beta1).add_(projected, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(projected, projected, value=1 - beta2)
        update = _multiply(m / v.sqrt().add_(group["eps"]), qs, back=True)
        if group["normalize_grads"]:
            rms = update.square().mean(dim=tuple(range(1, update.dim())), keepdim=True).sqrt()
            update = update / (rms + 1e-30)  # as the authors (no eps here)
        lr, wd = scalar(group["lr"]), scalar(group["weight_decay"])
        step_size = lr
        if group["correct_bias"]:
            step_size *= math.sqrt(1 - beta2**t) / (1 - beta1**t)
        update = update.to(params[0].dtype)
        # a DTensor's own rows of the update; the writes as one multi-tensor op each
        owns = [shard_of(update[k].reshape(p.shape), p) for k, p in enumerate(params)]
        shards = [local(p) for p in params]
        torch._foreach_add_(shards, owns, alpha=-step_size)
        if wd > 0:
            torch._foreach_mul_(shards, 1 - lr * wd)

        factors = {}
        for i in dims:
            factor = _batch([s["GG"][i] for s in states], _in_list(states, "GG", i))
            factors[i] = factor.lerp_(_outer(g, i), 1 - shampoo_beta)
        if dims and t % group["precondition_frequency"] == 0:
            momentum = _multiply(m, qs, back=True)  # back to the parameter's space
            for i in dims:
                basis, permuted = self._refresh(factors[i], qs[i], v, i)
                qs[i].copy_(basis)
                v.copy_(permuted)
            m.copy_(_multiply(momentum, qs, back=False))  # into the new eigenbasis
        seed = (t * 1_000_003 + 12345) & 0xFFFFFFFF
        for k, (p, state) in enumerate(zip(wholes, states, strict=True)):
            state["step"] += 1
            for slot, (key, value, in_place) in enumerate(
                (("exp_avg", m, m_in_place), ("exp_avg_sq", v, v_in_place))
            ):
                if not in_place:
                    write_slot(
                        state,
                        key,
                        value[k].reshape(p.shape),
                        stochastic=group["state_dtype"] == "bfloat16",
                        seed=codecs.slot_seed(seed, k, slot),
                    )

    @staticmethod
    def _slot_batch(
        group: dict[str, Any],
        params: list[Tensor],
        states: list[dict[str, Any]],
        key: str,
        shape: tuple[int, ...],
        work: torch.dtype,
    ) -> tuple[Tensor, bool]:
        """The batch of an element-wise state in the working precision, and whether it is the
        stored state itself (updated in place) rather than a decoded copy to write back."""
        values = [
            read_slot(p, s, key, group["state_dtype"]) for p, s in zip(params, states, strict=True)
        ]
        if all(x is s[key] and x.dtype == work for x, s in zip(values, states, strict=True)):
            return _batch(values, _in_state(states, key)).view(len(values), *shape), True
        stacked = torch.stack([x.reshape(shape) for x in values])
        return stacked.to(work), False

    @staticmethod
    def _refresh(factor: Tensor, q: Tensor, v: Tensor, dim: int) -> tuple[Tensor, Tensor]:
        """One power iteration and a QR: the new basis, and ``v`` permuted to match it."""
        product = factor @ q
        estimate = (q * product).sum(dim=-2)  # diag(Q^T L Q), per matrix
        order = torch.argsort(estimate, dim=-1, descending=True)
        index = order.view(order.shape[0], *([1] * dim), -1, *([1] * (v.dim() - dim - 2)))
        v = torch.gather(v, dim + 1, index.expand_as(v))
        columns = torch.gather(product, -1, order.unsqueeze(-2).expand_as(product))
        return torch.linalg.qr(columns).Q, v
