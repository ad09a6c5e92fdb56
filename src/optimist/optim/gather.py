"""The gathering of a group's tensors for a step: the half of a
:class:`~optimist.optim.engine.RuleOptimizer` between its state and its step.

:class:`Gathering` finds the parameters with a gradient (or an accumulated one), their
gradients and state (made where missing), DTensors replaced by their local shards; its fast
path (:meth:`Gathering._gather_fast`) does the same for the common case in list comprehensions
and lets the C++ engine check the tensors and plan the step in one call.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from itertools import repeat
from operator import is_, is_not
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimist.optim.distributed import local, local_grad
from optimist.optim.native import available, load
from optimist.optim.rule import Rule
from optimist.optim.rule_state import RuleState
from optimist.optim.transforms import ChainConfig

__all__ = ["EMPTY_SCALE", "Gathering", "PLAIN_TYPES", "TrackedState", "overflows_low_precision"]


class Gathering(RuleState):
    """The gathering half of :class:`~optimist.optim.engine.RuleOptimizer` (its base class)."""

    rule: ClassVar[Rule]
    chain: ChainConfig
    stochastic_params: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = TrackedState(self.state)

    def _gradients(self, params: Sequence[Tensor], *, native: bool = False) -> list[Tensor | None]:
        """The gradient each parameter steps with: ``p.grad``, or its accumulator (None: none).

        ``native``: the C++ engine (available: the caller checked) reads the ``p.grad`` of many
        parameters, the same objects, with its cache misses fetched ahead (``grads``)."""
        if self.chain.accumulate > 1:
            state = self.state
            return [state[p].get("accumulated") if p in state else None for p in params]
        if native:
            return load().grads(params)
        return [p.grad for p in params]

    def _gradient(self, p: Tensor) -> Tensor | None:
        return self._gradients((p,))[0]

    def _present(self, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters that have a gradient, and those gradients."""
        grads = self._gradients(params)
        if not all(map(is_not, grads, repeat(None))):
            kept = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
            return [p for p, _ in kept], [g for _, g in kept]
        return params, grads

    def _present_states(
        self, group: dict[str, Any]
    ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        """:meth:`_present` of the group's parameters, and their state dicts (made empty where
        missing)."""
        params, grads = self._present(group["params"])
        optimizer_state = self.state
        return params, grads, [optimizer_state[p] for p in params]

    def _implementation(self, group: dict[str, Any], params: Sequence[Tensor]) -> str:
        """The path that runs the group's step ("fused", "torch" or "single"): the optimizer's."""
        raise NotImplementedError

    def _slots(self, group: dict[str, Any]) -> list[tuple[int, str, str]]:
        """The rule's slots the group uses: (index, state key, int8 scale key)."""
        return [
            (k, slot.key, slot.key + "_absmax")
            for k, slot in enumerate(self.rule.slots)
            if slot.active(group)
        ]

    def _gather(self, group: dict[str, Any], slots: list[tuple[int, str, str]]) -> _Gathered | None:
        """The parameters with a gradient, their gradients and state (made where missing).

        DTensors are replaced by their local shards (``originals`` keeps them); a slot made
        fresh from this step's gradient is returned in ``pending`` (stored once the step ran).
        None: no parameter of the group has a gradient.
        """
        rule, has_step = self.rule, self.rule.has_step
        originals: list[Tensor] = []
        params: list[Tensor] = []  # local shards of DTensors
        grads: list[Tensor] = []
        states: list[dict[str, Any]] = []
        fresh: list[bool] = []
        pending: list[tuple[dict[str, Any], dict[str, Any]]] = []
        columns: list[list[Tensor]] = [[] for _ in rule.slots]
        scales: list[list[Tensor]] = [[] for _ in rule.slots]
        any_int8 = False
        quantized = group.get("state_dtype") == "int8"  # load_state_dict converts to it
        optimizer_state = self.state
        for p, grad in zip(group["params"], self._gradients(group["params"]), strict=True):
            if grad is None:
                continue
            if grad.is_sparse:
                self._check_sparse(grad, type(self).__name__)
            state = optimizer_state[p]
            if not state or (has_step and "step" not in state):
                self._init_state(p, state, group)
            sharded = type(p) not in PLAIN_TYPES  # a DTensor: the step runs on its local shards
            originals.append(p)
            params.append(local(p) if sharded else p)
            grads.append(local_grad(grad, p) if sharded else grad)
            states.append(state)
            is_fresh = False
            for k, key, scale_key in slots:
                source = state
                value = state.get(key)
                if value is None:  # a fresh slot (made from the first gradient)
                    source = {}
                    self._new_slot(p, source, key, self._slot_dtype(p, group))
                    pending.append((state, source))
                    value = source[key]
                    is_fresh = True
                columns[k].append(local(value) if sharded else value)
                if quantized:
                    sc = source.get(scale_key)
                    scales[k].append(EMPTY_SCALE if sc is None else sc)
                    any_int8 |= sc is not None
            fresh.append(is_fresh)
        if not params:
            return None
        if not any_int8:
            scales = [[] for _ in rule.slots]
        if not pending:
            fresh = []
        return originals, params, grads, states, columns, scales, fresh, pending, None

    def _gather_fast(
        self, group: dict[str, Any], slots: list[tuple[int, str, str]]
    ) -> _Gathered | None:
        """:meth:`_gather` for the common case, in list comprehensions: plain CPU tensors the
        C++ engine takes, every state already made, no int8 state. The engine's plan of the step
        (tensors checked, jobs made: one look at each tensor) is returned as the last item.

        None where any of that does not hold: :meth:`_gather` then runs and does everything
        as before (nothing was changed here besides the state dict's empty entries ``_gather``
        makes too).

        Each step reads every gradient and every state entry anew (``zero_grad`` replaces the
        gradients; ``load_state_dict`` or a user's ``opt.state[p]["exp_avg"] = ...`` replace
        state tensors). What is kept between steps (:class:`_Known`) is only which state dict
        belongs to which parameter: the lookups ``opt.state[p]``, valid while the group's
        parameter list holds the same tensors, the same of them have a gradient and the
        optimizer's state mapping is the same object, unchanged (:class:`TrackedState` counts
        every change of it: a parameter's state made, replaced or deleted).
        """
        if group.get("state_dtype") == "int8" or not available():
            return None
        rule, chain = self.rule, self.chain
        group_params = group["params"]
        grads = self._gradients(group_params, native=True)
        missing = (
            []
            if all(map(is_not, grads, repeat(None)))
            else [i for i, g in enumerate(grads) if g is None]
        )
        known = self._known(group_params, missing)
        originals, states = known.originals, known.states
        if missing:
            grads = [g for g in grads if g is not None]
        if not originals:
            return None
        if self._implementation(group, originals) != "fused" or overflows_low_precision(
            group, originals, rule.group_statistics
        ):
            return None
        if not all(states):
            return None
        columns: list[list[Tensor]] = [[] for _ in rule.slots]
        try:
            for k, key, _ in slots:
                columns[k] = [s[key] for s in states]
            steps = [s["step"] for s in states] if rule.has_step else []
            ema = [s["ema"] for s in states] if chain.ema is not None else []
        except KeyError:  # state to make (a fresh slot, a missing step): the general gather
            return None
        plan = load().plan(
            [originals, grads, *columns, ema],
            [],
            [],
            steps,
            group.get("state_dtype") == "bfloat16",
            self.stochastic_params,
            True,
        )
        if plan.unsupported:
            return None
        scales: list[list[Tensor]] = [[] for _ in rule.slots]
        return originals, originals, grads, states, columns, scales, [], [], plan

    def _known(self, group_params: list[Tensor], missing: list[int]) -> _Known:
        """The parameters of ``group_params`` with a gradient (all but the indices ``missing``)
        and their state dicts: remembered from an earlier step while still valid, else looked up
        (state dicts made empty where missing, as ``_gather`` does) and remembered."""
        optimizer_state = self.state
        cache: dict[int, _Known] = self.__dict__.setdefault("_known_states", {})
        known = cache.get(id(group_params))  # (it holds the list: the id stays its own)
        if (
            known is not None
            and known.mapping is optimizer_state
            and known.version == getattr(optimizer_state, "version", None)
            and known.missing == missing
            and len(group_params) == len(known.params)
            and all(map(is_, group_params, known.params))
        ):
            return known
        gone = set(missing)
        originals = [p for i, p in enumerate(group_params) if i not in gone]
        states = [optimizer_state[p] for p in originals]
        known = _Known(
            group_params, tuple(group_params), missing, originals, states, optimizer_state
        )
        if known.version is not None:
            live = {id(g["params"]) for g in self.param_groups}
            for key in [k for k in cache if k not in live]:  # groups no longer there
                del cache[key]
            cache[id(group_params)] = known
        return known

    def __setstate__(self, state: dict[str, Any]) -> None:
        # also called by load_state_dict, with torch's new (plain) state mapping
        super().__setstate__(state)
        self.__dict__["state"] = TrackedState(self.state)
        self.__dict__["_known_states"] = {}


class TrackedState(defaultdict):
    """The optimizer's ``state`` (torch's ``defaultdict(dict)``), counting in :attr:`version`
    every change of which state dict belongs to which parameter (an entry made, replaced or
    deleted), so a step can trust the lookups of an earlier one while the count stands. What
    the per-parameter dicts hold is not tracked (it is read anew every step)."""

    version = 0

    def __init__(self, items: Any = ()) -> None:
        # (copy and pickle rebuild a defaultdict from its factory: that is not an item)
        super().__init__(dict, () if callable(items) else items)

    def _changed(self) -> None:
        self.version += 1

    def __setitem__(self, key: Any, value: Any) -> None:
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: Any) -> None:
        self._changed()
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return super().pop(*args)

    def popitem(self) -> Any:
        self._changed()
        return super().popitem()

    def clear(self) -> None:
        self._changed()
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> TrackedState:
        self._changed()
        return super().__ior__(other)


class _Known:
    """One group's parameters with a gradient and their state dicts, as of :attr:`version`."""

    __slots__ = ("group_params", "params", "missing", "originals", "states", "mapping", "version")

    def __init__(
        self,
        group_params: list[Tensor],
        params: tuple[Tensor, ...],
        missing: list[int],
        originals: list[Tensor],
        states: list[dict[str, Any]],
        mapping: Any,
    ) -> None:
        self.group_params, self.params, self.missing = group_params, params, missing
        self.originals, self.states, self.mapping = originals, states, mapping
        # read after the lookups above (which make missing entries, a change)
        self.version = mapping.version if type(mapping) is TrackedState else None


EMPTY_SCALE = torch.empty(0)
"""The scale entry of a state tensor that has none (not int8)."""
_Gathered = tuple[
    list[Tensor],  # originals: the parameters with a gradient
    list[Tensor],  # params: their local shards (DTensor) or themselves
    list[Tensor],  # grads
    list[dict[str, Any]],  # states
    list[list[Tensor]],  # columns: per slot, its tensors (empty: inactive slot)
    list[list[Tensor]],  # scales: per slot, int8 absmax tensors (empty lists: none)
    list[bool],  # fresh: per parameter, a slot made this step (empty: none)
    list[tuple[dict[str, Any], dict[str, Any]]],  # pending: (state, fresh slots) to store
    Any,  # plan: the engine's plan of the step (None: not made; _gather_fast makes it)
]
PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer)
"""Tensor types stepped as they are; any other (a DTensor) is a subclass stepped by its shards."""


_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def overflows_low_precision(
    group: dict[str, Any], params: Sequence[Tensor], statistics: Sequence[str] = ()
) -> bool:
    """A finite hyperparameter too large for float16 (``lr=1e5``, ``1e300``) with a
    non-float64 param: torch raises converting it for such tensors, so the eager path runs.
    The rule's running ``statistics`` kept in the group are not hyperparameters: skipped."""
    values = [v for k, v in group.items() if type(v) in (int, float) and k not in statistics]
    values += [v for v in group.get("betas", ()) if type(v) in (int, float)]
    if not any(abs(v) > _FLOAT16_MAX and (type(v) is int or math.isfinite(v)) for v in values):
        return False
    return not all(p.dtype in (torch.float64, torch.complex128) for p in params)
