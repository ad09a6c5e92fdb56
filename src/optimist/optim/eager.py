"""The eager (per-tensor) path of the engine: a rule's torch-ops function on one parameter.

It runs where the C++ engine does not (other devices, non-contiguous or aliased tensors, tensor
subclasses, ``foreach=False``) with the same prologue, epilogue and storage codecs, so that the
two paths agree (bitwise in float64; the codecs' random bits are the same).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import as_real, scalar
from optimist.optim.distributed import local
from optimist.optim.rule import Rule

__all__ = [
    "Batch",
    "TensorScalars",
    "prepare_gradient",
    "run_eager",
    "run_torch_foreach",
    "torch_fused_available",
    "with_fresh",
]


class Batch:
    """The tensors of one engine call (index-aligned lists) and their step settings."""

    def __init__(
        self, params, grads, states, columns, scales, fresh, flags, prologue, index=None
    ) -> None:  # noqa: ANN001
        self.params, self.grads, self.states = params, grads, states
        self.columns, self.scales, self.fresh = columns, scales, fresh
        self.flags, self.prologue = flags, prologue
        self.index = index if index is not None else range(len(params))
        self.state_stochastic = bool(prologue.get("state_stochastic", False))

    def subset(self, idx: list[int]) -> Batch:
        def pick(xs: list) -> list:
            return [xs[i] for i in idx] if xs else []

        pro = dict(self.prologue, l2=pick(self.prologue["l2"]), decay=pick(self.prologue["decay"]))
        return Batch(
            pick(self.params), pick(self.grads), pick(self.states),
            [pick(c) for c in self.columns], [pick(c) for c in self.scales], pick(self.fresh),
            self.flags, pro, [self.index[i] for i in idx],
        )  # fmt: skip


# torch's functional arguments that choose its implementation: set here, never from the group
_TORCH_IMPLEMENTATION_ARGS = frozenset(
    {"foreach", "fused", "capturable", "differentiable", "grad_scale", "found_inf",
     "has_sparse_grad", "has_complex"}
)  # fmt: skip


# torch's dispatch key of a device type, for the fused-kernel check
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA", "xpu": "XPU", "mps": "MPS", "hpu": "HPU"}


def torch_fused_available(rule: Rule, device: torch.device) -> bool:
    """Whether torch has a fused kernel for ``rule`` on ``device``: its functional
    (``rule.torch_foreach``) takes ``fused``, the device type is one torch.optim runs fused
    kernels on, and the op ``aten::_fused_<name>_`` (``_fused_adam_``, ``_fused_sgd_``,
    ``_fused_adagrad_``) has a kernel registered for the device in this build of torch."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    fn = rule.torch_foreach
    if fn is None or "fused" not in inspect.signature(fn).parameters:
        return False
    if device.type not in _get_fused_kernels_supported_devices():
        return False
    key = _DISPATCH_KEYS.get(device.type)
    op = f"aten::_fused_{fn.__name__}_"
    if key is None or not torch._C._dispatch_has_kernel_for_dispatch_key(op, key):
        return False
    return _twin_takes_fused(fn, device.type)


@functools.cache
def _twin_takes_fused(fn: Any, device_type: str) -> bool:
    """Whether torch.optim's own class for the functional ``fn`` accepts ``fused=True`` on
    ``device_type``: a kernel can be registered where the class still refuses it (torch 2.11's
    ``Adagrad`` takes ``fused=True`` on the CPU only); optimist refuses where torch does."""
    module = inspect.getmodule(fn)
    classes = [
        c
        for c in vars(module).values()
        if inspect.isclass(c)
        and issubclass(c, torch.optim.Optimizer)
        and c.__module__ == fn.__module__
    ]
    if len(classes) != 1:
        return False
    probe = torch.zeros(1, device=device_type, requires_grad=True)
    try:
        classes[0]([probe], fused=True)
    except (RuntimeError, ValueError):
        return False
    return True


def run_torch_foreach(
    rule: Rule,
    params: list[Tensor],
    grads: list[Tensor],
    columns: list[list[Tensor]],
    states: list[dict[str, Any]],
    group: dict[str, Any],
    *,
    fused: bool = False,
) -> None:
    """One step of a classic rule through torch's own multi-tensor kernel (accelerators), or
    with ``fused=True`` through torch's fused kernel (see :func:`torch_fused_available`).

    ``rule.torch_foreach`` is torch's functional (``torch.optim.adam.adam``, ...). Its call is
    derived from the rule and that function's signature: the tensor lists are the parameters,
    the gradients, one list per state slot in :attr:`Rule.slots` order (for a ``fresh`` slot the
    stored tensors or None, which torch's kernel creates and which are stored back), the scalar
    state (:attr:`Rule.scalar_state`) and the steps; the keyword arguments are the group's
    hyperparameters (``betas`` split into ``beta1``/``beta2``, ``lr`` as a Python number), with
    ``foreach=True`` or ``fused=True``. torch's fused kernels read ``step`` on the parameter's
    device, as float32 (where ``torch.optim.Adam(fused=True)`` keeps it): a step stored on the
    CPU moves there once.
    """
    fn = rule.torch_foreach
    assert fn is not None
    signature = inspect.signature(fn)
    if fused and rule.has_step:
        for p, state in zip(params, states, strict=True):
            step = state["step"]
            if step.device != p.device or step.dtype != torch.float32:
                state["step"] = step.to(device=p.device, dtype=torch.float32)
    lists: list[list[Any]] = [params, grads]
    for k, slot in enumerate(rule.slots):
        lists.append([s.get(slot.key) for s in states] if slot.fresh else columns[k])
    lists += [[s[key] for s in states] for key, _ in rule.scalar_state]
    if rule.has_step:
        lists.append([s["step"] for s in states])
    required = [
        name for name, par in signature.parameters.items()
        if par.default is inspect.Parameter.empty and par.kind != par.KEYWORD_ONLY
    ]  # fmt: skip
    if len(required) != len(lists):
        raise TypeError(
            f"{fn.__qualname__} takes {required}, rule {rule.name!r} gives {len(lists)} lists"
        )
    kwargs: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    if "has_complex" in signature.parameters:
        kwargs["has_complex"] = any(torch.is_complex(p) for p in params)
    for name in signature.parameters:
        if name in required or name in _TORCH_IMPLEMENTATION_ARGS:
            continue
        if name in ("beta1", "beta2"):
            kwargs[name] = scalar(group["betas"][name == "beta2"])
        elif name == "lr":
            kwargs[name] = scalar(group["lr"])
        elif name in group:
            kwargs[name] = group[name]
    fn(*lists, **kwargs)
    for k, slot in enumerate(rule.slots):
        if slot.fresh and slot.active(group):
            for state, made in zip(states, lists[2 + k], strict=True):
                state[slot.key] = made


def with_fresh(flags: tuple[bool, ...], index: int, fresh: bool) -> tuple[bool, ...]:
    if index < 0:
        return flags
    out = list(flags) + [False] * max(0, index + 1 - len(flags))
    out[index] = fresh
    return tuple(out)


class TensorScalars:
    """Scalar state of one parameter (``state[key] *= factor`` in the tensor's precision)."""

    def __init__(self, state: dict[str, Any], already_scaled: bool = False) -> None:
        self.state = state
        self.already_scaled = already_scaled

    def scale(self, key: str, factor: float) -> float:
        value = self.state[key]
        if not self.already_scaled:
            value *= factor
        return float(value.item())


def prepare_gradient(
    g: Tensor,
    param: Tensor,
    grad_scale: float,
    clip_value: float,
    clip_first: bool,
    maximize: bool,
    l2: float,
) -> Tensor:
    """The gradient a rule sees, in torch ops (the engine's prologue, ``prologue()`` in
    ``csrc/engine.cpp``): clipped to ``±clip_value`` (when > 0) before or after the scale,
    scaled, negated to maximize, then ``l2 * param`` added (torch's order of operations).
    ``g`` itself when nothing applies; never modified in place."""
    if clip_value and clip_first:
        g = g.clamp(-clip_value, clip_value)
    if grad_scale != 1.0:
        g = g * grad_scale
    if clip_value and not clip_first:
        g = g.clamp(-clip_value, clip_value)
    if maximize:
        g = -g
    if l2 != 0.0:
        g = g.add(param, alpha=l2)
    return g


def run_eager(
    rule: Rule,
    group: dict[str, Any],
    batch: Batch,
    *,
    ema: float | None,
    stochastic_params: bool,
    seed: int,
) -> None:
    """The rule's eager function on one parameter (``batch`` holds just that one).

    Args:
        rule: the optimizer's rule.
        group: its param group (hyperparameters).
        batch: the parameter, gradient, state and prologue settings.
        ema: the decay of the EMA of parameters (None: no EMA).
        stochastic_params: round bfloat16 parameters stochastically.
        seed: the step's seed for stochastic rounding (as the fused path's).
    """
    (state,) = batch.states
    if rule.has_step:
        state["step"] += 1
        t = float(state["step"].item())
    else:
        t = 0.0
    hyper = rule.scalars(group, t, TensorScalars(state))
    (p,) = batch.params
    pro = batch.prologue
    grad = as_real(batch.grads[0])
    param = as_real(p)
    slots = [c[0] if c else None for c in batch.columns]
    native = all(s is None or s.dtype == p.dtype for s in slots) and not (
        stochastic_params and p.dtype in (torch.bfloat16, torch.float16)
    )
    if native or p.is_complex():
        compute = param.dtype
    else:
        compute = torch.float64 if p.dtype == torch.float64 else torch.float32
    work = param if compute == param.dtype else param.to(compute)
    g = grad if grad.dtype == compute else grad.to(compute)
    decay = pro["decay"][0] if pro["decay"] else pro["decay_all"]
    if decay != 1.0:
        work.mul_(decay)
    l2 = pro["l2"][0] if pro["l2"] else pro["l2_all"]
    g = prepare_gradient(
        g, work, pro["grad_scale"], pro["clip_value"], pro["clip_first"], pro["maximize"], l2
    )
    index = batch.index[0]
    views: list[Tensor | None] = []
    for k, s in enumerate(slots):
        if s is None:
            views.append(None)
        elif as_real(s).dtype == compute:
            views.append(as_real(s))
        else:
            sc = batch.scales[k][0] if batch.scales[k] else None
            views.append(codecs.decode(s, sc, compute).reshape(p.shape))
    fresh = bool(batch.fresh[0]) if batch.fresh else False
    rule.eager(work, g, views, hyper, with_fresh(batch.flags, rule.fresh_flag, fresh))
    if ema is not None:
        e = as_real(local(state["ema"]))
        d = ema
        e.mul_(d).add_(work.to(e.dtype), alpha=1 - d)
    for k, s in enumerate(slots):
        view = views[k]
        if s is None or view is None or view.data_ptr() == as_real(s).data_ptr():
            continue
        sc = batch.scales[k][0] if batch.scales[k] else None
        codecs.encode(
            view,
            s,
            sc,
            stochastic=batch.state_stochastic,
            seed=codecs.slot_seed(seed, index, k),
        )
    if work is not param:
        if stochastic_params and p.dtype == torch.bfloat16:
            param.copy_(codecs.bf16_stochastic(work, codecs.slot_seed(seed, index, None)))
        else:
            param.copy_(work)
