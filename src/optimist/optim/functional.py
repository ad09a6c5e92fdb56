"""The functional form of every element-wise and trust-ratio optimizer, derived from its class
(torch.optim's style).

torch.optim pairs each class with a function that takes the state as lists and updates it in
place: ``torch.optim.adam.adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
state_steps, *, lr, beta1, ...)``. Here nothing of the kind is written per optimizer:

* :func:`step` runs one step of the optimizer registered under a name over lists of tensors. It
  builds that optimizer's class over the parameters (its checks and defaults apply), lends it
  the caller's state tensors and gradients, and calls the class's own ``step``: the same
  dispatch (C++ engine, or torch ops per tensor), bit for bit the same result.
* :func:`init_state` / :func:`init_states` make the state exactly as the class does lazily
  (the class's slots with torch.optim's keys, in the storage format ``state_dtype`` asks).
* a named function per registered name (``functional.adam``, ``functional.lion``, ...) is
  generated from the class's state layout (:func:`state_layout`) and signature: positional
  lists (the parameters, the gradients, one list per state slot, per scalar state, then the
  steps; named as torch's twin names them where one exists), then the class's hyperparameters
  as keyword arguments with its defaults (``betas`` split into ``beta1``/``beta2`` where
  torch's twin does).

The classes with one: the element-wise rules (:class:`RuleOptimizer` subclasses taking
``fused``) and the trust-ratio classes (LAMB, LARS: :class:`TrustRatioOptimizer`, whose state
is element-wise too; only the update is scaled per tensor). Adafactor, SOAP and Muon keep or
update whole matrices, and Lookahead wraps another optimizer: they have none.

Rules that keep statistics in their param group (Schedule-Free's ``k`` and ``weight_sum``,
Prodigy's ``d``) read and update them in a ``group_state`` dict the caller keeps between steps.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from optimist.optim import registry
from optimist.optim.base import Optimizer
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Slot
from optimist.optim.trust_ratio import TrustRatioOptimizer

__all__ = [
    "StateLayout",
    "functions",
    "init_state",
    "init_states",
    "signature_of",
    "state_layout",
    "step",
]

# constructor arguments that are not hyperparameters of a functional step
_NOT_HYPER = frozenset({"params", "chain"})


@functools.cache
def _arguments(factory: Callable[..., Any]) -> tuple[str, ...]:
    """The constructor's argument names (``inspect.signature`` once per class)."""
    return tuple(inspect.signature(factory).parameters)


@dataclass(frozen=True)
class StateLayout:
    """A class's per-parameter state as the functional form passes it, in list order."""

    slots: tuple[str, ...]
    """The state tensors shaped like the parameter (one positional list each)."""
    extra: tuple[str, ...] = ()
    """Tensors the class keeps per parameter besides its rule's slots (Prodigy's ``p0``), one
    positional list each, after the slots."""
    scalar_state: tuple[str, ...] = ()
    """0-dim state tensors besides ``step`` (NAdam's ``mu_product``)."""
    has_step: bool = True
    """A ``step`` count per parameter (torch's ``state_steps``)."""
    group_statistics: tuple[str, ...] = ()
    """Param-group entries the step updates (kept in ``group_state`` where not arguments)."""
    fresh: tuple[Slot, ...] = ()
    """Slots made from the first gradient (SGD's ``momentum_buffer``)."""
    torch_twin: Callable[..., None] | None = None
    """torch's functional of the same optimizer, whose argument names the lists take."""

    def fresh_keys(self, group: dict[str, Any]) -> list[str]:
        """The fresh slots this group's settings use."""
        return [s.key for s in self.fresh if s.active(group)]


def _why_none(factory: Any) -> str | None:
    """None for a class with a functional form, else why it has none (a few words)."""
    if not isinstance(factory, type):
        return "it wraps another optimizer (use the inner one's functional form)"
    if issubclass(factory, TrustRatioOptimizer):
        return None
    if issubclass(factory, RuleOptimizer) and "fused" in _arguments(factory):
        return None  # an element-wise rule (``fused``: the engine's implementation choice)
    return "its state or update is per matrix, not element-wise lists"


@functools.cache
def state_layout(cls: type[Optimizer]) -> StateLayout:
    """The state layout of a class with a functional form, from the class: a rule's slots and
    scalar state, or a trust-ratio class's ``slot_keys`` and ``has_step``.

    Raises:
        ValueError: a class without a functional form (saying why).
    """
    why = _why_none(cls)
    if why is not None:
        raise ValueError(f"{getattr(cls, '__name__', cls)!r} has no functional form: {why}")
    if issubclass(cls, TrustRatioOptimizer):
        return StateLayout(cls.slot_keys, has_step=cls.has_step)
    rule = cls.rule  # type: ignore[attr-defined]
    return StateLayout(
        slots=tuple(s.key for s in rule.slots),
        extra=cls.extra_state,  # type: ignore[attr-defined]
        scalar_state=tuple(k for k, _ in rule.scalar_state),
        has_step=rule.has_step,
        group_statistics=rule.group_statistics,
        fresh=tuple(s for s in rule.slots if s.fresh),
        torch_twin=rule.torch_foreach,
    )


def _spec(name: str) -> registry.OptimizerSpec:
    entry = registry.spec(name)
    why = _why_none(entry.factory)
    if why is not None:
        known = ", ".join(functions())
        raise ValueError(f"{name!r} has no functional form: {why}; functional forms: {known}")
    return entry


def _layout_of(opt: Optimizer) -> StateLayout:
    return state_layout(type(opt))


def functions() -> list[str]:
    """The registered names that have a functional form (element-wise rules, trust-ratio
    classes), sorted."""
    return [n for n in registry.optimizers() if _why_none(registry.spec(n).factory) is None]


def _hyper_names(cls: type) -> list[str]:
    return [n for n in _arguments(cls) if n not in _NOT_HYPER]


def _carried(cls: type[Optimizer]) -> tuple[str, ...]:
    """Group statistics the step updates (not constructor arguments): kept in ``group_state``."""
    return tuple(k for k in state_layout(cls).group_statistics if k not in _arguments(cls))


def _build(name: str, params: Sequence[Tensor], hyper: dict[str, Any]) -> Optimizer:
    entry = _spec(name)
    cls = entry.factory
    allowed = set(_hyper_names(cls))
    unknown = sorted(set(hyper) - allowed)
    if unknown:
        raise TypeError(
            f"functional {name!r} got unexpected hyperparameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
    # aliases of the caller's tensors (same storage): the caller's .grad stays untouched
    return cls([p.detach() for p in params], **{**entry.defaults, **hyper})


def _keys_for(opt: Optimizer, p: Tensor) -> tuple[list[str], list[str]]:
    """The state keys a step of ``opt`` needs for a parameter like ``p``, besides ``step``:
    those it creates before the first step (the class's own ``_init_state``, run on a meta
    stand-in, so nothing is allocated), and those it makes from the first gradient (``fresh``
    slots, and their int8 block scales)."""
    group = opt.param_groups[0]
    stand_in = torch.empty(p.shape, dtype=p.dtype, device="meta")
    made: dict[str, Any] = {}
    opt._init_state(stand_in, made, group)  # type: ignore[attr-defined]
    fresh = _fresh(opt)
    return [k for k in made if k != "step"], [*fresh, *(f"{k}_absmax" for k in fresh)]


def _fresh(opt: Optimizer) -> list[str]:
    """The slots this group makes from the first gradient (SGD's ``momentum_buffer``)."""
    return _layout_of(opt).fresh_keys(opt.param_groups[0])


def init_state(name: str, param: Tensor, **hyper: Any) -> dict[str, Tensor | None]:
    """The state of one parameter before its first step, as the class creates it.

    Keys are torch.optim's (``step``, ``exp_avg``, ...); a slot the rule makes from the first
    gradient (SGD's ``momentum_buffer``) is None and filled by the first :func:`step`.
    """
    opt = _build(name, [param], hyper)
    group = opt.param_groups[0]
    state: dict[str, Any] = {}
    opt._init_state(group["params"][0], state, group)  # type: ignore[attr-defined]
    return {**state, **dict.fromkeys(_fresh(opt))}


def init_states(
    name: str, params: Sequence[Tensor], **hyper: Any
) -> tuple[dict[str, list[Tensor | None]], list[Tensor]]:
    """:func:`init_state` for every parameter, as the lists :func:`step` takes:
    ``(states, steps)`` with ``states[key][i]`` the slot ``key`` of ``params[i]``, None where
    that parameter has no such entry (an int8 slot's ``<key>_absmax`` block scales exist only
    for tensors large enough to be quantized); ``steps`` is empty for rules without a step
    count."""
    per = [init_state(name, p, **hyper) for p in params]
    keys = list(dict.fromkeys(k for s in per for k in s if k != "step"))
    states = {k: [s.get(k) for s in per] for k in keys}
    steps = [s["step"] for s in per if "step" in s]
    return states, steps


def _unused(column: Sequence[Tensor | None]) -> bool:
    """A list that holds no tensor (torch passes ``[]`` for a slot the settings leave out)."""
    return all(v is None for v in column)


def _check_lists(
    name: str,
    opt: Optimizer,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: dict[str, list[Tensor | None]],
    steps: Sequence[Tensor] | None,
) -> list[str]:
    """One clear error for lists that do not fit; the state keys the step keeps."""
    n = len(params)
    where = f"functional {name!r}"
    if len(grads) != n:
        raise ValueError(f"{where}: {n} params but {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if not isinstance(g, Tensor):
            raise ValueError(f"{where}: grads[{i}] is {type(g).__name__}, not a Tensor")
        if g.shape != p.shape:
            raise ValueError(
                f"{where}: grads[{i}] has shape {tuple(g.shape)}, params[{i}] {tuple(p.shape)}"
            )
    has_step = _layout_of(opt).has_step
    if has_step and (steps is None or len(steps) != n):
        got = "no" if steps is None else len(steps)
        raise ValueError(f"{where}: {n} params but {got} steps (make them with init_states)")
    if not has_step and steps:
        raise ValueError(f"{where} keeps no step count; pass steps=None")
    if not n:
        return []
    layouts = {}
    for p in params:
        key = (tuple(p.shape), p.dtype)
        if key not in layouts:
            layouts[key] = _keys_for(opt, p)
    required = list(dict.fromkeys(k for r, _ in layouts.values() for k in r))
    optional = list(dict.fromkeys(k for _, o in layouts.values() for k in o))
    missing = [k for k in required if k not in states]
    if missing:
        raise ValueError(
            f"{where}: states lacks {', '.join(repr(k) for k in missing)} (make the state with "
            f"optimist.optim.functional.init_states({name!r}, params, ...))"
        )
    known = set(required) | set(optional)
    extra = sorted(k for k, column in states.items() if k not in known and not _unused(column))
    if extra:
        raise ValueError(
            f"{where}: unexpected state {', '.join(repr(k) for k in extra)} for these settings; "
            f"it keeps {', '.join(repr(k) for k in [*required, *optional]) or 'none'}"
        )
    for key in [*required, *optional]:
        column = states.get(key)
        if column is not None and len(column) != n:
            raise ValueError(f"{where}: {n} params but {len(column)} states[{key!r}]")
    for i, p in enumerate(params):
        for key in layouts[(tuple(p.shape), p.dtype)][0]:
            if states[key][i] is None:
                raise ValueError(f"{where}: states[{key!r}][{i}] is None")
    return [*required, *optional]


def step(
    name: str,
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: dict[str, list[Tensor | None]],
    steps: Sequence[Tensor] | None = None,
    *,
    group_state: dict[str, Any] | None = None,
    **hyper: Any,
) -> None:
    """One step of the optimizer registered as ``name`` over lists, updating all in place.

    Args:
        name: a registered name with a functional form (:func:`functions`).
        params: the parameters (updated in place; their ``.grad`` is neither read nor set).
        grads: one gradient per parameter.
        states: ``states[key][i]``: the state slot ``key`` of ``params[i]``, torch.optim's keys
            (from :func:`init_states`). A slot the rule makes from the first gradient may hold
            None: the entry is replaced by the new tensor (as torch's ``sgd`` fills
            ``momentum_buffer_list``).
        steps: one step-count tensor per parameter (0-dim, incremented in place), torch's
            ``state_steps``; None for rules without one (SGD, Lion).
        group_state: a dict the caller keeps between steps (start with ``{}``), read and
            updated in place: the per-group statistics of the rules that keep some
            (Schedule-Free's ``k``, Prodigy's ``d``: required there) and the count of steps
            (``count``) that seeds stochastic rounding (bfloat16 state, ``stochastic_params``;
            without it the first step count is used).
        hyper: the class's constructor arguments (``lr``, ``betas``, ``foreach``, ``fused``,
            ``state_dtype``, ...), defaulting as the registered name does.

    Raises:
        ValueError: unknown name, lists of different lengths, a missing state slot.
    """
    opt = _build(name, params, hyper)
    carried = _carried(type(opt))
    if carried and group_state is None:
        raise ValueError(
            f"functional {name!r} keeps per-group statistics ({', '.join(carried)}): pass "
            "group_state={} on the first step and the same dict on every later step"
        )
    keys = _check_lists(name, opt, params, grads, states, steps)
    group = opt.param_groups[0]
    for key in carried:
        if group_state and key in group_state:
            group[key] = group_state[key]
    has_step = _layout_of(opt).has_step
    # the seed of stochastic rounding (trust-ratio classes have no stochastic_params)
    if group.get("state_dtype") == "bfloat16" or getattr(opt, "stochastic_params", False):
        opt._count = _count(opt, steps, group_state)  # type: ignore[attr-defined]
    aliases = group["params"]
    for i, alias in enumerate(aliases):
        state = opt.state[alias]
        if has_step:
            state["step"] = steps[i]  # type: ignore[index]
        for key in keys:
            value = states[key][i] if key in states else None
            if value is not None:
                state[key] = value
        alias.grad = grads[i]
    opt.step()
    for i, alias in enumerate(aliases):
        state = opt.state[alias]
        if has_step and state["step"] is not steps[i]:  # type: ignore[index]
            steps[i] = state["step"]  # type: ignore[index]  # moved (torch's fused kernels)
        for key in keys:
            value = state.get(key)
            if value is not None:
                states.setdefault(key, [None] * len(aliases))[i] = value
    if group_state is not None:
        group_state.update({k: group[k] for k in carried})
        group_state["count"] = opt._count  # type: ignore[attr-defined]


def _count(
    opt: Optimizer, steps: Sequence[Tensor] | None, group_state: dict[str, Any] | None
) -> int:
    """The optimizer's count of applied steps, which seeds stochastic rounding: kept in
    ``group_state`` when one is passed, else the first parameter's step count (a class whose
    parameters all step together has the same), else 0."""
    if group_state is not None and "count" in group_state:
        return int(group_state["count"])
    if _layout_of(opt).has_step and steps:
        return int(steps[0].item())
    return 0


# --- the named functions ------------------------------------------------------------------------


def _torch_twin(name: str) -> Callable[..., Any] | None:
    return state_layout(_spec(name).factory).torch_twin


def _list_names(name: str) -> list[tuple[str, str | None]]:
    """``(argument name, key)`` of the positional lists: the parameters and the gradients (keys
    "params", "grads"), one per slot, per extra state tensor, per scalar state, and the steps
    (key None); named as torch's twin names them where it has one (``d_p_list`` for SGD's
    gradients)."""
    layout = state_layout(_spec(name).factory)
    keys: list[str | None] = [*layout.slots, *layout.extra, *layout.scalar_state]
    if layout.has_step:
        keys.append(None)
    twin = _torch_twin(name)
    if twin is not None:
        required = [
            n for n, par in inspect.signature(twin).parameters.items()
            if par.default is inspect.Parameter.empty and par.kind != par.KEYWORD_ONLY
        ]  # fmt: skip
        if len(required) == len(keys) + 2:
            return list(zip(required, ["params", "grads", *keys], strict=True))
    names = [_plural(k) if k is not None else "state_steps" for k in keys]
    return list(zip(["params", "grads", *names], ["params", "grads", *keys], strict=True))


def _plural(key: str) -> str:
    """A list's name for slot ``key`` without a torch twin: ``exp_avgs``, ``z_list``."""
    return f"{key}s" if len(key) > 1 and not key.endswith("s") else f"{key}_list"


def _splits_betas(name: str) -> bool:
    """Whether ``betas`` becomes ``beta1``/``beta2`` (as in torch's twin)."""
    twin = _torch_twin(name)
    return (
        twin is not None
        and "beta1" in inspect.signature(twin).parameters
        and "betas" in _arguments(_spec(name).factory)
    )


def signature_of(name: str) -> inspect.Signature:
    """The signature of the named functional ``name``, derived from its class."""
    entry = _spec(name)
    cls = entry.factory
    P = inspect.Parameter
    params = []
    for arg, _ in _list_names(name):
        params.append(P(arg, P.POSITIONAL_OR_KEYWORD, annotation=list[Tensor]))
    split = _splits_betas(name)
    for hp, par in inspect.signature(cls).parameters.items():
        if hp in _NOT_HYPER:
            continue
        default = entry.defaults.get(hp, par.default)
        if hp == "betas" and split:
            for i, beta in enumerate(("beta1", "beta2")):
                params.append(P(beta, P.KEYWORD_ONLY, default=default[i], annotation=float))
        else:
            params.append(P(hp, P.KEYWORD_ONLY, default=default, annotation=par.annotation))
    params.append(P("group_state", P.KEYWORD_ONLY, default=None, annotation=dict[str, Any]))
    return inspect.Signature(params, return_annotation=None)


def _make(name: str) -> Callable[..., None]:
    sig = signature_of(name)
    lists = _list_names(name)
    split = _splits_betas(name)

    def functional(*args: Any, **kwargs: Any) -> None:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        columns = {key: values.pop(arg) for arg, key in lists}
        params, grads, steps = columns.pop("params"), columns.pop("grads"), columns.pop(None, None)
        states: dict[str, list[Tensor | None]] = columns  # type: ignore[assignment]
        if split:
            values["betas"] = (values.pop("beta1"), values.pop("beta2"))
        if values.get("state_dtype") == "int8":
            raise ValueError(
                f"functional.{name} takes no int8 state (its block scales have no list here); "
                f"use optimist.optim.functional.step({name!r}, ...) with a states dict"
            )
        step(name, params, grads, states, steps, **values)

    functional.__name__ = functional.__qualname__ = name
    functional.__module__ = __name__
    functional.__signature__ = sig  # type: ignore[attr-defined]
    cls = _spec(name).factory
    functional.__doc__ = (
        f"Functional {cls.__name__} (registered as {name!r}), generated from its class: the "
        f"lists are updated in place, as by :func:`optimist.optim.functional.step`; the keyword "
        f"arguments are {cls.__name__}'s."
    )
    return functional


def __getattr__(attr: str) -> Callable[..., None]:
    """``functional.<registered name>``: the named function, generated on first use."""
    if attr.startswith("_") or attr not in functions():
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
    made = _make(attr)
    globals()[attr] = made
    return made


def __dir__() -> list[str]:
    return sorted([*__all__, *functions()])
