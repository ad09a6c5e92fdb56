r"""Layer-wise trust ratios :math:`\lVert\theta\rVert / \lVert u\rVert` per tensor: what LAMB
(:mod:`optimist.optim.lamb`) and LARS (:mod:`optimist.optim.lars`) share.

Each tensor's update direction :math:`u_t` is scaled by :math:`r_t = \lVert\theta_{t-1}\rVert /
(\lVert u_t\rVert + \epsilon_r)`, and 1 where either norm is 0 (as ``optax.lamb`` and
``optax.lars``). The trust ratio needs the norm of the whole update before any element is written,
so each tensor is read twice, in the C++ engine's per-tensor norm pass (contiguous float32/float64
CPU tensors): phase A updates what needs no norm (LAMB's moments) and sums
:math:`\lVert\theta\rVert^2` and :math:`\lVert u\rVert^2` in float64; the engine computes each
tensor's ratio; phase B recomputes :math:`u` (from the new moments for LAMB, so nothing but the
norms is kept between the phases) and writes. One engine call per step (``trust_step``,
``csrc/trust.h``): tensor by tensor (small ones in groups), so that phase B's second read comes from
the caches, each tensor whole on one thread (only one of more than half a thread's share split among
them), unless the norms must be all-reduced between the phases
(:meth:`TrustRatioOptimizer._reduction`). Traffic per float32 parameter: LAMB 40 bytes (A: read g,
m, v, θ, write m, v; B: read m, v, θ, write θ), LARS 28 (A: read g, θ; B: read g, θ, b, write θ, b),
of which memory sees 28 and 20 where B's reads hit the caches. Elsewhere (other devices,
bfloat16/float16 parameters, non-contiguous tensors) the same steps run in torch ops per tensor, the
readable specification of the C++ functors (``csrc/rules.h``: ``Lamb``, ``Lars``). State: LAMB
``step``, ``exp_avg``, ``exp_avg_sq``; LARS ``momentum_buffer``, stored as ``state_dtype`` asks
(:mod:`optimist.optim.codecs`; not for DTensor parameters): the engine decodes each block, and
stores it back after phase A and after phase B; phase B reads the moments as stored, so LAMB's
update direction there is that of the stored (rounded) moments, on the torch-ops path as on the
engine. Weight decay is excluded from nothing by default; mask biases and norms with per-group
``weight_decay=0``.

Distributed: under ``ZeroRedundancyOptimizer`` each tensor is whole on one rank. Under FSDP2
(DTensor parameters) the moments are sharded like the parameter and updated on the local
shards; the two norms of each trust ratio are those of the whole tensors, from local sums of
squares all-reduced: in one collective per layout for all of a group's tensors on the engine
(:func:`optimist.optim.distributed.tensor_sums`), one per tensor in torch ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import is_not
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimist.optim import bucket, codecs, engine
from optimist.optim.base import ParamsT
from optimist.optim.distributed import global_norms, is_dtensor, local, local_grad, tensor_sums
from optimist.optim.gather import EMPTY_SCALE, PLAIN_TYPES
from optimist.optim.tensorwise import TensorwiseOptimizer, new_slot, read_slot, write_slot

__all__ = ["TrustRatioOptimizer", "trust_ratio"]

_ENGINE_DTYPES = (torch.float32, torch.float64)


def _ratio(
    p_norm: float, u_norm: float, coefficient: float, eps: float, norm_decay: float = 0.0
) -> float:
    """``coefficient ||p|| / (||u|| + eps)``, 1 where a norm is 0; with ``norm_decay`` > 0 (LARS
    as its paper) ``coefficient ||p|| / (||u|| + norm_decay ||p|| + eps)``, 1 where ``||p||``
    or the denominator is 0 (the engine's trust_scalar, csrc/trust.h)."""
    if norm_decay == 0.0:
        if p_norm == 0.0 or u_norm == 0.0:
            return 1.0
        return coefficient * p_norm / (u_norm + eps)
    denominator = u_norm + norm_decay * p_norm + eps
    if p_norm == 0.0 or denominator == 0.0:
        return 1.0
    return coefficient * p_norm / denominator


def _trust_ratios(
    flat: Tensor, update: Tensor, sizes: list[int], coefficient: float, eps: float,
    norm_decay: float = 0.0,
) -> Tensor:  # fmt: skip
    """:func:`trust_ratio` of each segment (``sizes``) of the flat ``flat`` and ``update``, as
    a float64 tensor on their device: both norms of every segment in one
    ``torch._foreach_norm``, the ratios in float64 as the host computes them (:func:`_ratio`)."""
    norms = torch._foreach_norm([*flat.split(sizes), *update.split(sizes)])
    p_norm, u_norm = torch.stack(norms).double().view(2, -1)
    if norm_decay == 0.0:
        ratio = (coefficient * p_norm) / (u_norm + eps)
        return torch.where((p_norm == 0) | (u_norm == 0), 1.0, ratio)
    denominator = u_norm + norm_decay * p_norm + eps
    ratio = (coefficient * p_norm) / denominator
    return torch.where((p_norm == 0) | (denominator == 0), 1.0, ratio)


def trust_ratio(
    param: Tensor,
    update: Tensor,
    coefficient: float = 1.0,
    eps: float = 0.0,
    layout: Tensor | None = None,
    norm_decay: float = 0.0,
) -> float:
    """``coefficient * ||param|| / (||update|| + eps)``, or 1 if either norm is 0 (as Optax);
    with ``norm_decay`` the denominator also adds ``norm_decay * ||param||`` (:func:`_ratio`).

    ``layout``: the DTensor parameter whose local shards ``param`` and ``update`` are; the
    norms are then those of the whole tensors (all-reduced, the same on every rank).
    """
    p_norm, u_norm = global_norms([param, update], param if layout is None else layout)
    return _ratio(p_norm, u_norm, coefficient, eps, norm_decay)


class TrustRatioOptimizer(TensorwiseOptimizer):
    """A rule whose update is scaled per tensor by the norms of the parameter and of its update
    direction: the engine's norm pass (module docstring) where the tensors allow, else
    :meth:`_eager_step` per tensor. A subclass sets :attr:`functor` (its C++ functor in
    ``csrc/rules.h``), :attr:`slot_keys` and :attr:`grad_in_update`, and defines the host
    scalars of both phases (:meth:`_hyper`, :meth:`_ratio_terms`).

    Arguments every subclass takes:
        maximize: ascend instead of descend.
        foreach: None (default): the C++ engine on the CPU, flat buckets of small tensors in
            torch ops on accelerators; True: the buckets on any device; False: torch ops per
            tensor (see :meth:`_foreach_step`).
        skip_nonfinite: see :class:`~optimist.optim.base.Optimizer`.
        state_dtype: storage of the state in :attr:`slot_keys` (LAMB's moments, LARS's momentum
            buffer): None (the parameter's dtype), "float32", "bfloat16" (stochastic rounding)
            or "int8" (block-wise; tensors under 4096 elements stay float32): see
            :mod:`optimist.optim.codecs`. Not for DTensor parameters.
    """

    functor: ClassVar[str]
    slot_keys: ClassVar[tuple[str, ...]]
    has_step: ClassVar[bool] = False
    """A ``step`` count in each tensor's state (LAMB's bias corrections)."""
    grad_in_update: ClassVar[bool] = True
    """Phase B reads the gradient (LARS); False: the state and the parameter only (LAMB)."""
    state_dtypes = codecs.STATE_DTYPES

    def __init__(self, params: ParamsT, defaults: dict[str, Any], **options: Any) -> None:
        self._count = 0  # group steps taken: the seed of stochastic rounding (bfloat16 state)
        super().__init__(params, defaults, **options)
        self.raw_state_keys = self.slot_keys  # int8/bfloat16 state loads as saved

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        state_dtype = group.get("state_dtype")
        codecs.check_state_dtype(state_dtype, self.state_dtypes)
        if state_dtype is not None and any(is_dtensor(p) for p in group.get("params", ())):
            raise ValueError(
                f"{type(self).__name__}: state_dtype={state_dtype!r} is not supported for "
                "DTensor (FSDP2) parameters; their state stays in the parameter's dtype "
                "(state_dtype=None)"
            )

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        state_dtype = group.get("state_dtype")
        for key in self.slot_keys:  # sharded like p under FSDP2
            if state_dtype is None:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                new_slot(p, state, key, state_dtype)

    def _seed(self) -> int:
        return (self._count * 1_000_003 + 12345) & 0xFFFFFFFF

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["optimist"]["count"] = self._count  # a resumed run rounds as the original
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # the state converted at the next step (_coded)
        self._count = int((state_dict.get("optimist") or {}).get("count", 0))

    def _coded(self, p: Tensor, group: dict[str, Any]) -> bool:
        """Whether ``p``'s state is stored otherwise than in ``p``'s dtype (a codec), after
        converting state loaded from a checkpoint of another ``state_dtype`` (int8 and
        bfloat16 state load as saved) to the group's."""
        state_dtype, state = group.get("state_dtype"), self.state[p]
        stored = p.dtype if state_dtype is None else codecs.storage_dtype(state_dtype, p)
        for key in self.slot_keys:
            if state[key].dtype != stored:
                read_slot(p, state, key, state_dtype)  # re-stored as the group asks
        return stored != p.dtype

    def _direction(
        self, group: dict[str, Any], shard: Tensor, slots: list[Tensor], t: float
    ) -> Tensor:
        """Phase B's update direction from the stored state (rules whose phase B reads no
        gradient, :attr:`grad_in_update` False): the same ops as :meth:`_update`'s end."""
        raise NotImplementedError

    def _flags(self, group: dict[str, Any]) -> list[bool]:
        return []

    def _hyper(self, group: dict[str, Any], t: float) -> list[float]:
        """The host scalars phase A and B share, at step count ``t`` (0 without a step)."""
        raise NotImplementedError

    def _ratio_terms(self, group: dict[str, Any]) -> tuple[float, float, float]:
        """(scale, coefficient, eps): phase B's own scalar of each tensor is
        ``scale * trust_ratio(p, u, coefficient, eps)``."""
        raise NotImplementedError

    def _norm_decay(self, group: dict[str, Any]) -> float:
        """The ``norm_decay`` of :func:`trust_ratio` (0: the norm of the update itself)."""
        return 0.0

    def _normed(self, group: dict[str, Any], g: Tensor, update: Tensor) -> Tensor:
        """The tensor whose norm is the ratio's denominator: the update, unless the rule takes
        the gradient's (with :meth:`_norm_decay`)."""
        return update

    def _update(
        self, group: dict[str, Any], g: Tensor, shard: Tensor, slots: list[Tensor], t: float
    ) -> Tensor:
        """Phase A in torch ops: the update direction :math:`u` of ``shard`` (a new tensor; the
        moments in ``slots`` updated in place) at step count ``t``. Element-wise, so it serves
        one tensor and a flat bucket alike."""
        raise NotImplementedError

    def _apply(
        self, group: dict[str, Any], shard: Tensor, update: Tensor, slots: list[Tensor],
        scale: float | Tensor,
    ) -> None:  # fmt: skip
        """Phase B in torch ops: write ``shard`` (and ``slots``) given ``scale``, the phase's
        own scalar (:meth:`_ratio_terms`): a number for one tensor, for a flat bucket a tensor
        holding each element's tensor's value."""
        raise NotImplementedError

    def _eager_step(self, group: dict[str, Any], p: Tensor, index: int = 0) -> None:
        """One parameter's step in torch ops (the specification of the C++ functor); ``index``:
        its place in the group's step (the stochastic-rounding seed of its state, as the
        engine's tensor index).

        State stored in another format (``state_dtype``) is decoded, updated in the compute
        precision and stored back where the engine stores it: after phase A, and after phase B
        (where LARS's buffer changes). Phase B reads the stored state, so LAMB's direction is
        recomputed from the stored moments there, as the engine's functor does."""
        g, shard, state = _grad(p, group), local(p), self.state[p]
        t = 0.0
        if self.has_step:
            state["step"] += 1
            t = state["step"].item()
        state_dtype = group.get("state_dtype")
        coded = self._coded(p, group)
        if coded:
            slots = [read_slot(p, state, key, state_dtype) for key in self.slot_keys]
        else:
            slots = [local(state[key]) for key in self.slot_keys]
        update = self._update(group, g, shard, slots, t)
        scale, coefficient, eps = self._ratio_terms(group)
        normed = self._normed(group, g, update)
        ratio = trust_ratio(shard, normed, coefficient, eps, p, self._norm_decay(group))
        if coded:
            self._store(group, state, slots, index)
            slots = [read_slot(p, state, key, state_dtype) for key in self.slot_keys]
            if not self.grad_in_update:
                update = self._direction(group, shard, slots, t)
        self._apply(group, shard, update, slots, scale * ratio)
        if coded:
            self._store(group, state, slots, index)

    def _store(
        self, group: dict[str, Any], state: dict[str, Any], slots: list[Tensor], index: int
    ) -> None:
        """Encode the decoded ``slots`` into the state with the engine's seeds."""
        stochastic = group.get("state_dtype") == "bfloat16"
        for k, (key, value) in enumerate(zip(self.slot_keys, slots, strict=True)):
            seed = codecs.slot_seed(self._seed(), index, k)
            write_slot(state, key, value, stochastic=stochastic, seed=seed)

    def _foreach_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The step of ``params`` (state made) in flat buckets: plain float32/float64 tensors of
        one device, dtype and step count, each at most :func:`bucket.tensor_max` elements,
        concatenated per list (at most :data:`bucket.BUCKET_MAX` elements a bucket); phase A
        once on the flat tensors, every tensor's two norms in one ``torch._foreach_norm``, the
        trust ratios on the device (no host read) and phase B once with each element scaled
        by its tensor's ratio. Bitwise :meth:`_eager_step` tensor by tensor (the same
        element-wise ops; float64 ratios as the host's). The rest steps per tensor."""
        alone: list[Tensor] = []
        groups: dict[tuple, list[Tensor]] = {}
        states = self.state
        index = _indices(group)
        # one bucket per step count (host scalars: no device read)
        steps = bucket.host_values([states[p]["step"] for p in params]) if self.has_step else []
        for i, p in enumerate(params):
            state = states[p]
            slots = [state[key] for key in self.slot_keys]
            if (
                type(p) in PLAIN_TYPES
                and p.dtype in _ENGINE_DTYPES
                and p.grad.dtype == p.dtype
                and p.numel() <= bucket.tensor_max(p.device)
                and all(type(s) in PLAIN_TYPES and s.dtype == p.dtype for s in slots)
            ):
                key = (p.device, p.dtype, steps[i] if steps else None)
                groups.setdefault(key, []).append(p)
            else:
                alone.append(p)
        singles, buckets = bucket.split(groups.values(), Tensor.numel)
        for members in buckets:
            self._flat_step(group, members)
        for p in alone + singles:
            self._eager_step(group, p, index[id(p)])

    def _flat_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """One bucket of :meth:`_foreach_step`."""
        states = [self.state[p] for p in params]
        t = bucket.advance([s["step"] for s in states]) if self.has_step else 0.0
        layout = bucket.Layout(params)
        work = layout.flat(params)
        g = layout.flat([p.grad for p in params])  # a new tensor: negated in place
        if group["maximize"]:
            g.neg_()
        columns = [[s[key] for s in states] for key in self.slot_keys]
        slots = [layout.flat(column) for column in columns]
        update = self._update(group, g, work, slots, t)
        scale, coefficient, eps = self._ratio_terms(group)
        normed = self._normed(group, g, update)
        decay = self._norm_decay(group)
        ratios = _trust_ratios(work, normed, layout.sizes, coefficient, eps, decay)
        self._apply(group, work, update, slots, layout.spread(ratios * scale, work.dtype))
        for column, slot in zip(columns, slots, strict=True):
            layout.write(column, slot)
        layout.write(params, work)

    def _implementation(self, group: dict[str, Any], params: Sequence[Tensor]) -> str:
        """ "fused" (the engine's norm pass, for the tensors it takes: contiguous float32/float64
        CPU tensors or local shards, their gradients and state alike), "foreach" (torch ops on
        flat buckets of small tensors, :meth:`_foreach_step`: the default on accelerators, and
        with ``foreach=True`` anywhere) or "single" (torch ops per tensor: ``foreach=False``,
        or the CPU without the engine), as :meth:`RuleOptimizer._implementation` says it."""
        foreach = group.get("foreach")
        if foreach is not None:
            return "foreach" if foreach else "single"
        on_cpu = not params or (params[0].is_cpu and params[-1].is_cpu)
        if on_cpu:
            return "fused" if engine.available() else "single"
        return "foreach"

    def _step_group(self, group: dict[str, Any]) -> None:
        self._count += 1
        implementation = self._implementation(group, group["params"])
        fused = implementation == "fused"
        if fused and self._fast_step(group):
            return
        state_of, keys = self.state, self.slot_keys
        state_dtype = group.get("state_dtype")
        batch = _EngineBatch([], [], [], [], [[] for _ in keys], [[] for _ in keys])
        params, shards, grads, states, slots = batch.lists()
        eager = []
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = state_of[p]
            if not state:
                self._init_state(p, state, group)
            if not fused:
                eager.append(p)
                continue
            plain = type(p) in PLAIN_TYPES
            if plain:
                shard = p
            else:  # a DTensor: its local shards
                shard, grad, batch.sharded = local(p), local_grad(grad, p), True
            dtype = shard.dtype  # complex parameters and sparse gradients: the eager path raises
            if dtype not in _ENGINE_DTYPES or grad.dtype != dtype:
                eager.append(p)
                continue
            self._coded(p, group)  # (a checkpoint of another state_dtype: converted first)
            stored = dtype if state_dtype is None else codecs.storage_dtype(state_dtype, p)
            ok = True
            for column, scales, key in zip(slots, batch.scales, keys, strict=True):
                value = state[key] if plain else local(state[key])
                ok &= value.dtype == stored
                column.append(value)
                scale = state.get(key + "_absmax")
                scales.append(EMPTY_SCALE if scale is None else scale)
            if not ok:  # state of another dtype (set by hand): the eager path
                for column, scales in zip(slots, batch.scales, strict=True):
                    column.pop()
                    scales.pop()
                eager.append(p)
                continue
            params.append(p)
            shards.append(shard)
            grads.append(grad)
            states.append(state)
        if batch.params:
            slow = engine.load().unsupported_indices([batch.shards, batch.grads, *batch.slots])
            if slow:
                eager += [batch.params[i] for i in slow]
                batch = batch.without(set(slow))
        for p in eager:
            if p.is_complex() or p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support complex parameters or sparse gradients"
                )
        if implementation == "foreach":
            self._foreach_step(group, eager)
        else:
            index = _indices(group)
            for p in eager:
                self._eager_step(group, p, index[id(p)])
        if batch.params:
            self._engine_step(group, batch)

    def _fast_step(self, group: dict[str, Any]) -> bool:
        """The common case in list comprehensions and one C++ call: plain CPU tensors of one
        float dtype that the engine takes, every state made (as :meth:`RuleOptimizer._gather_fast`
        for the element-wise rules), the state in the parameters' dtype (``state_dtype``
        None). False (nothing done) where that does not hold."""
        if group.get("state_dtype") is not None:  # codecs, conversions: the general path
            return False
        params, grads = group["params"], engine.load().grads(group["params"])  # (fetched ahead)
        if not all(map(is_not, grads, repeat(None))):
            kept = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
            params, grads = [p for p, _ in kept], [g for _, g in kept]
        if not params:
            return True
        states = [self.state[p] for p in params]
        if not all(states):
            return False
        try:
            slots = [[s[key] for s in states] for key in self.slot_keys]
            steps = [s["step"] for s in states] if self.has_step else []
        except KeyError:
            return False
        dtypes = {p.dtype for p in params}
        dtypes.update(t.dtype for column in slots for t in column)
        if len(dtypes) != 1 or dtypes.pop() not in _ENGINE_DTYPES:
            return False
        plan = engine.load().plan([params, grads, *slots, []], [], [], steps, False, False, True)
        if plan.unsupported:  # DTensors, non-contiguous, aliased...: the general path
            return False
        batch = _EngineBatch(params, params, grads, states, slots, [[] for _ in slots])
        self._engine_step(group, batch, plan)
        return True

    def _engine_step(self, group: dict[str, Any], batch: _EngineBatch, plan: Any = None) -> None:
        """One :func:`trust_step` engine call over ``batch`` (one per step count where the
        tensors' step counts differ); ``plan``: the batch's, if made."""
        mod = engine.load()
        steps = [s["step"] for s in batch.states] if self.has_step else []
        if plan is None:
            lists = [batch.shards, batch.grads, *batch.slots, []]
            int8 = any(sc.numel() for c in batch.scales for sc in c)
            scales = batch.scales if int8 else []
            stochastic = group.get("state_dtype") == "bfloat16"
            plan = mod.plan(lists, scales, [], steps, stochastic, False, False)
        if steps and math.isnan(plan.step):  # tensors that joined at different steps
            by_step: dict[float, list[int]] = {}
            for i, s in enumerate(batch.states):
                by_step.setdefault(float(s["step"]), []).append(i)
            for idx in by_step.values():
                self._engine_step(group, batch.subset(idx))
            return
        mod.trust_step(
            plan, self.functor, self._flags(group), self._hyper(group, plan.step),
            bool(group["maximize"]), self.grad_in_update, *self._ratio_terms(group),
            self._seed(), self._reduction(batch), self._norm_decay(group),
        )  # fmt: skip

    def _reduction(self, batch: _EngineBatch) -> Callable[[Tensor], Tensor] | None:
        """What makes the rows of sums of squares rank-wide where the tensors are sharded
        (DTensor local shards: :func:`tensor_sums`, one collective per layout), so that the
        engine runs every tensor's norm pass before any update; None: each tensor is whole
        here, and the engine updates tensor by tensor (its second read from the caches)."""
        if not batch.sharded:
            return None
        params = batch.params
        return lambda sums: tensor_sums(sums, params)


@dataclass
class _EngineBatch:
    """The tensors of one engine call (index-aligned): parameters, their local shards,
    gradients, states and state slots (one list per slot key)."""

    params: list[Tensor]
    shards: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    slots: list[list[Tensor]]
    scales: list[list[Tensor]]
    """Per slot key, each slot's float32 int8 block scales (``EMPTY_SCALE`` where not int8)."""
    sharded: bool = False

    def lists(self) -> tuple[list, ...]:
        return self.params, self.shards, self.grads, self.states, self.slots

    def subset(self, idx: Sequence[int]) -> _EngineBatch:
        def pick(xs: list) -> list:
            return [xs[i] for i in idx]

        return _EngineBatch(
            pick(self.params), pick(self.shards), pick(self.grads), pick(self.states),
            [pick(c) for c in self.slots],
            [pick(c) if c else c for c in self.scales], self.sharded,
        )  # fmt: skip

    def without(self, drop: set[int]) -> _EngineBatch:
        return self.subset([i for i in range(len(self.params)) if i not in drop])


def _indices(group: dict[str, Any]) -> dict[int, int]:
    """Each parameter's index among the group's parameters with a gradient (by ``id``): its
    tensor index in the step's engine call, the seed of its state's stochastic rounding."""
    with_grad = (p for p in group["params"] if p.grad is not None)
    return {id(p): i for i, p in enumerate(with_grad)}


def _grad(p: Tensor, group: dict[str, Any]) -> Tensor:
    """``p``'s gradient (negated to maximize), its local shard for a DTensor ``p``."""
    g = local_grad(p.grad, p)
    return -g if group["maximize"] else g
