"""The engine: one optimizer class machinery and one C++ loop for every element-wise rule.

:class:`RuleOptimizer` is the base of every optimizer in :mod:`optimist.optim`. A subclass sets
``rule`` (a :class:`~optimist.optim.rule.Rule`) and an explicit ``__init__`` with torch.optim's
arguments; everything else is here, written once:

* **state**: created lazily from the rule's slots, stored as ``state_dtype`` asks
  (:mod:`optimist.optim.codecs`), converted on ``load_state_dict`` from whatever format the
  checkpoint holds (torch.optim's float state into an int8 optimizer and back);
* **pass 0**: one read of all gradients giving per-tensor sums of squares and finiteness, for
  ``clip_by_global_norm`` and ``skip_nonfinite`` (all-reduced under ``torch.distributed`` so
  every rank decides alike);
* **prologue / epilogue** around the rule: gradient scaling (clipping by norm, accumulation),
  clipping by value, maximize, L2 penalty, decoupled weight decay with per-parameter masks,
  EMA of parameters;
* **dispatch**: the C++ engine (``csrc/engine.cpp``) on CPU, one Python -> C++ call per group
  and step; the rule's eager per-tensor function elsewhere (other devices, other tensor
  subclasses, non-contiguous or aliased tensors); torch's own multi-tensor kernel for the
  classic rules with ``foreach=True``;
* **sharded parameters** (DTensor, e.g. FSDP2's ``fully_shard``): every rule here is
  element-wise, so the step runs on the local shards (``to_local()``) of the parameter, its
  gradient and its state, which stay DTensors sharded like the parameter (int8 block scales are
  per local shard, see :func:`float_state_dict`).
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimist.optim import _build, codecs
from optimist.optim.base import Optimizer, ParamsT, as_real, new_step_tensor, scalar
from optimist.optim.distributed import global_grad_stats, is_dtensor, like, local, local_grad
from optimist.optim.rule import Rule
from optimist.optim.transforms import ChainConfig, mask_matches

__all__ = ["RuleOptimizer", "available", "float_state_dict", "grad_stats", "load"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "engine.cpp"
CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]

_module: ModuleType | None = None
_failure: str | None = None
_lock = threading.Lock()


# --- building and loading the C++ engine --------------------------------------------------------


NAME_PREFIX = "optimist_engine"


def _disabled() -> bool:
    value = os.environ.get("OPTIMIST_DISABLE_FUSED", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def extension_name() -> str:
    """Name of the compiled engine: changes with the source, flags, torch, Python and the CPU."""
    return _build.extension_name(NAME_PREFIX, [SOURCE], CFLAGS, LDFLAGS)


def _load_module() -> ModuleType:
    return _build.load_extension(
        NAME_PREFIX, [SOURCE], CFLAGS, LDFLAGS, description="C++ optimizer engine"
    )


def load() -> ModuleType:
    """The compiled engine, built on first use (RuntimeError with the reason if it cannot be)."""
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            if _failure is not None:
                raise RuntimeError(_failure)
            try:
                _module = _load_module()
            except Exception as exc:
                _failure = str(exc)
                raise RuntimeError(_failure) from exc
    return _module


def available() -> bool:
    """True if the C++ engine can be used (builds it on first call; warns once if it cannot)."""
    if _disabled():
        return False
    if _module is not None:
        return True
    if _failure is not None:
        return False
    try:
        load()
    except Exception as exc:
        warnings.warn(
            "optimist: the C++ optimizer engine is unavailable, using the per-tensor PyTorch "
            f"path: {str(exc).removeprefix('optimist: ')}",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def grad_stats(grads: Sequence[Tensor], clip_value: float = 0.0) -> tuple[Tensor, bool]:
    """Pass 0: per-tensor sums of squares (float64) and whether all gradients are finite.

    One read of each gradient. Without clipping by value this is torch's multi-tensor norm
    (vectorized and threaded), and "finite" is judged from the norms as
    ``torch.nn.utils.clip_grad_norm_(error_if_nonfinite=True)`` judges it (a NaN or inf
    element makes its norm NaN or inf). With ``clip_value > 0`` the gradients are clamped to
    ``±clip_value`` first, in the C++ engine for CPU tensors it takes, else in torch ops.
    """
    if not grads:
        return torch.zeros(0, dtype=torch.float64), True
    if clip_value <= 0:
        norms = torch._foreach_norm([as_real(g) for g in grads])
        try:  # one op when the norms share a dtype and device (the usual case)
            sums = torch.stack(norms).double().cpu() ** 2
        except RuntimeError:
            sums = torch.stack([n.double().cpu() for n in norms]) ** 2
        return sums, bool(torch.isfinite(sums).all())
    if all(g.is_cpu for g in grads) and available():
        mod = load()
        if not mod.unsupported_indices([list(grads), list(grads)]):
            return mod.grad_stats(list(grads), float(clip_value))
    sums, finite = [], []
    for g in grads:  # on the gradients' devices; one host transfer at the end
        r = as_real(g).clamp(-clip_value, clip_value)
        sums.append(r.double().square().sum())
        finite.append(torch.isfinite(as_real(g)).all())
    by_device: dict[torch.device, list[int]] = {}
    for i, s in enumerate(sums):
        by_device.setdefault(s.device, []).append(i)
    out = torch.zeros(len(grads), dtype=torch.float64)
    all_finite = True
    for idx in by_device.values():
        out[idx] = torch.stack([sums[i] for i in idx]).cpu()
        all_finite &= bool(torch.stack([finite[i] for i in idx]).all())
    return out, all_finite


def float_state_dict(state_dict: dict[str, Any], *, widen_bfloat16: bool = True) -> dict[str, Any]:
    """A copy of an optimizer ``state_dict`` with float32 state, loadable by torch.optim.

    int8 state (codes plus ``<key>_absmax`` scales) is decoded (a DTensor's per local shard, into
    a float32 DTensor laid out alike) and bfloat16 state widened unless ``widen_bfloat16`` is
    False; the groups' ``state_dtype`` is dropped, so loading keeps the optimizer's own choice
    (and re-encodes: int8 codes come back bit for bit on the same layout).
    """
    out = {key: value for key, value in state_dict.items() if key != "optimist"}
    out["param_groups"] = [
        {k: v for k, v in g.items() if k != "state_dtype"} for g in state_dict["param_groups"]
    ]
    states = {}
    for pid, pstate in state_dict["state"].items():
        new = {}
        for key, value in pstate.items():
            if key.endswith("_absmax"):
                continue
            scale = pstate.get(key + "_absmax")
            if isinstance(value, Tensor) and value.dtype == torch.int8 and scale is not None:
                value = like(value, codecs.int8_decode(local(value), scale))
            elif widen_bfloat16 and isinstance(value, Tensor) and value.dtype == torch.bfloat16:
                value = value.float()
            new[key] = value
        states[pid] = new
    out["state"] = states
    return out


# --- scalar state -------------------------------------------------------------------------------


class _NotCommon(Exception):
    pass


class _ListScalars:
    """Scalar state of many parameters that hold one common value (the fast path)."""

    def __init__(self, columns: dict[str, list[Tensor]]) -> None:
        self.columns = columns

    def scale(self, key: str, factor: float) -> float:
        value = load().scale_scalars(self.columns[key], float(factor))
        if math.isnan(value):
            raise _NotCommon(key)
        return value


class _TensorScalars:
    """Scalar state of one parameter (``state[key] *= factor`` in the tensor's precision)."""

    def __init__(self, state: dict[str, Any], already_scaled: bool = False) -> None:
        self.state = state
        self.already_scaled = already_scaled

    def scale(self, key: str, factor: float) -> float:
        value = self.state[key]
        if not self.already_scaled:
            value *= factor
        return float(value.item())


# --- the optimizer ------------------------------------------------------------------------------


class RuleOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` driven by a :class:`~optimist.optim.rule.Rule`.

    Subclasses set :attr:`rule` and call ``super().__init__(params, defaults, ...)`` from an
    explicit torch-style ``__init__``. Extra keyword arguments every optimizer accepts:

    Args:
        state_dtype: storage of the element-wise state: None (the parameter's dtype, as
            torch.optim), ``"float32"``, ``"bfloat16"`` (stochastic rounding) or ``"int8"``
            (block-wise); see :mod:`optimist.optim.codecs`.
        skip_nonfinite: skip (and count in :attr:`skipped_steps`) every step whose gradients
            hold a NaN or inf.
        stochastic_params: round bfloat16/float16 parameters stochastically when the update is
            written (pure low-precision training without a float32 master copy).
    """

    rule: ClassVar[Rule]
    # state tensors outside the rule's slots that a subclass stores through the codecs (Muon's
    # momentum buffer): load_state_dict keeps them as saved instead of casting them
    extra_state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        codecs.check_state_dtype(state_dtype)
        if state_dtype is not None:
            defaults["state_dtype"] = state_dtype
        if not isinstance(stochastic_params, bool):
            raise ValueError(f"Invalid stochastic_params: {stochastic_params!r} (True or False)")
        self.chain = chain if chain is not None else ChainConfig()
        self.stochastic_params = stochastic_params
        self._count = 0  # real (applied) steps
        self._micro = 0  # calls since the last real step (gradient accumulation)
        self._mask_cache: dict[tuple[int, int], bool] = {}
        self._warned_subclass = False
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    # --- checks and persistence --------------------------------------------------------------

    def _check_common(self, group: dict[str, Any]) -> None:
        super()._check_common(group)
        codecs.check_state_dtype(group.get("state_dtype"))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("chain", "stochastic_params", "_count", "_micro"):
            if key in self.__dict__:
                state[key] = self.__dict__[key]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("chain", ChainConfig())
        self.__dict__.setdefault("stochastic_params", False)
        self.__dict__.setdefault("_count", 0)
        self.__dict__.setdefault("_micro", 0)
        self.__dict__["_mask_cache"] = {}
        self.__dict__.setdefault("_warned_subclass", False)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.setdefault("optimist", {}).update(count=self._count, micro=self._micro)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = dict(state_dict.get("optimist") or {})
        # torch casts every state tensor to its parameter's dtype; keep the encoded ones as they
        # are (int8 codes, their scales, float32 state of low-precision params) and convert after
        kept: dict[Any, dict[str, Tensor]] = {}
        encoded = {slot.key for slot in self.rule.slots} | set(self.extra_state_keys)
        encoded |= {key + "_absmax" for key in encoded}
        for pid, pstate in state_dict.get("state", {}).items():
            for key, value in pstate.items():
                if isinstance(value, Tensor) and key in encoded:
                    kept.setdefault(pid, {})[key] = value
        own_storage = [g.get("state_dtype") for g in self.param_groups]
        super().load_state_dict(state_dict)
        # a checkpoint that does not say how to store the state (torch.optim's) keeps this
        # optimizer's choice: a torch.optim checkpoint loads into an int8 optimizer
        for group, saved, own in zip(
            self.param_groups, state_dict["param_groups"], own_storage, strict=False
        ):
            if "state_dtype" not in saved:
                group["state_dtype"] = own
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        by_id = dict(zip(ids, params, strict=False))
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        for pid, values in kept.items():
            p = by_id.get(pid)
            if p is None:
                continue
            state = self.state[p]
            for key, value in values.items():
                state[key] = value.to(device=p.device)
            self._conform_state(p, state, groups[id(p)])
        self._count = int(extra.get("count", 0))
        self._micro = int(extra.get("micro", 0))

    # --- state ------------------------------------------------------------------------------

    def _slot_dtype(self, p: Tensor, group: dict[str, Any]) -> torch.dtype:
        return codecs.storage_dtype(group.get("state_dtype"), p)

    def _new_slot(self, p: Tensor, state: dict[str, Any], key: str, dtype: torch.dtype) -> None:
        state[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        if dtype == torch.int8:
            blocks = -(-local(p).numel() // codecs.QUANT_BLOCK)  # per shard for a DTensor
            state[key + "_absmax"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
        else:
            state.pop(key + "_absmax", None)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        rule = self.rule
        if rule.has_step and "step" not in state:
            state["step"] = new_step_tensor()
        for key, initial in rule.scalar_state:
            if key not in state:
                state[key] = torch.tensor(initial, dtype=new_step_tensor().dtype)
        dtype = self._slot_dtype(p, group)
        for slot in rule.slots:
            if slot.active(group) and not slot.fresh and slot.key not in state:
                self._new_slot(p, state, slot.key, dtype)
        if self.chain.ema is not None and "ema" not in state:
            state["ema"] = p.detach().clone(memory_format=torch.preserve_format)

    def _conform_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Convert every slot of ``state`` to the storage format the group asks for."""
        target = self._slot_dtype(p, group)
        shard = local(p)
        compute = torch.float64 if p.dtype in (torch.float64, torch.complex128) else torch.float32
        for slot in self.rule.slots:
            value = state.get(slot.key)
            if value is None:
                continue
            scale = state.get(slot.key + "_absmax")
            is_int8 = (
                scale is not None and value.dtype != torch.float32 or value.dtype == torch.int8
            )
            if is_int8 and value.dtype != torch.int8:  # torch cast the codes to float
                value = value.to(torch.int8)
            if value.dtype == target and (target != torch.int8 or scale is not None):
                state[slot.key] = value
                continue
            if p.is_complex():
                decoded = local(value).to(p.dtype)
            else:
                decoded = codecs.decode(local(value), scale, compute).reshape(shard.shape)
            self._new_slot(p, state, slot.key, target)
            codecs.encode(
                decoded,
                local(state[slot.key]),
                state.get(slot.key + "_absmax"),
                stochastic=False,
                seed=0,
            )

    def _gradient(self, p: Tensor) -> Tensor | None:
        if self.chain.accumulate > 1:
            return self.state[p].get("accumulated") if p in self.state else None
        return p.grad

    # --- masks --------------------------------------------------------------------------------

    def _masked(self, which: int, mask: Any, p: Tensor, name: str | None) -> bool:
        key = (which, id(p))
        hit = self._mask_cache.get(key)
        if hit is None:
            hit = mask_matches(mask, p, name)
            self._mask_cache[key] = hit
        return hit

    # --- the step -----------------------------------------------------------------------------

    def _accumulate(self) -> bool:
        """Add this call's gradients to the accumulators; True on every k-th call."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                acc = state.get("accumulated")
                if acc is None or self._micro == 0:
                    state["accumulated"] = p.grad.detach().clone()
                else:
                    acc.add_(p.grad)
        self._micro += 1
        if self._micro < self.chain.accumulate:
            return False
        self._micro = 0
        return True

    def _all_grads(self) -> list[Tensor]:
        return [
            g
            for group in self.param_groups
            for p in group["params"]
            if (g := self._gradient(p)) is not None
        ]

    def _pass0(self) -> tuple[float, bool]:
        chain = self.chain
        clip_first = chain.clip_value is not None and chain.clip_first
        clip = chain.clip_value if clip_first else 0.0
        return global_grad_stats(self._all_grads(), clip or 0.0, grad_stats)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step (with accumulation, one every ``k`` calls).

        Args:
            closure: optional; re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        chain = self.chain
        if chain.accumulate > 1 and not self._accumulate():
            return loss
        grad_scale = 1.0 / chain.accumulate
        if self.skip_nonfinite or chain.clip_norm is not None:
            total_sq, finite = self._pass0()
            if self.skip_nonfinite and not finite:
                self.skipped_steps += 1
                return loss
            if chain.clip_norm is not None:
                norm = math.sqrt(total_sq) * grad_scale
                grad_scale *= min(1.0, chain.clip_norm / (norm + 1e-6))
        multiplier = 1.0 if chain.schedule is None else float(chain.schedule(self._count))
        updated = False
        for group in self.param_groups:
            updated |= self._step_group(group, grad_scale=grad_scale, lr_multiplier=multiplier)
        self._count += updated
        return loss

    def _implementation(self, group: dict[str, Any], params: Sequence[Tensor]) -> str:
        # the first and last parameter decide; a stray tensor elsewhere on another device is
        # routed to the eager path by the engine's own per-tensor check
        on_cpu = not params or (params[0].is_cpu and params[-1].is_cpu)
        if group.get("fused"):
            if not on_cpu:
                raise RuntimeError(
                    "fused=True runs optimist's CPU engine, but some parameters are not on the "
                    "CPU; use fused=None (the eager path runs on accelerators)"
                )
            if not available():
                raise RuntimeError(
                    "fused=True, but optimist's C++ engine could not be built here (see the "
                    "warning above, or set fused=None to use the per-tensor path)"
                )
            return "fused"
        if group.get("foreach"):
            return "torch" if self._torch_path_applies(group) else "single"
        if group.get("foreach") is False or group.get("fused") is False or not params:
            return "single"
        if on_cpu:
            return "fused" if available() else "single"
        return "torch" if self._torch_path_applies(group) else "single"

    def _torch_path_applies(self, group: dict[str, Any]) -> bool:
        return (
            self.rule.torch_foreach is not None
            and group.get("state_dtype") is None
            and self.chain.is_empty()
            and not self.stochastic_params
        )

    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        """Update one param group; False if none of its parameters had a gradient."""
        rule, chain = self.rule, self.chain
        if lr_multiplier != 1.0:
            group = {**group, "lr": scalar(group["lr"]) * lr_multiplier}
        slots = [
            (k, slot.key, slot.key + "_absmax")
            for k, slot in enumerate(rule.slots)
            if slot.active(group)
        ]
        accumulating = chain.accumulate > 1
        has_step = rule.has_step
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
        for p in group["params"]:
            if accumulating:
                grad = optimizer_state[p].get("accumulated") if p in optimizer_state else None
            else:
                grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                self._check_sparse(grad, type(self).__name__)
            state = optimizer_state[p]
            if not state or (has_step and "step" not in state):
                self._init_state(p, state, group)
            sharded = type(p) not in _PLAIN  # a DTensor: the step runs on its local shards
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
                    scales[k].append(_EMPTY if sc is None else sc)
                    any_int8 |= sc is not None
            fresh.append(is_fresh)
        if not params:
            return False
        if not any_int8:
            scales = [[] for _ in rule.slots]
        if not pending:
            fresh = []
        lr = scalar(group["lr"])
        wd = scalar(group.get("weight_decay", 0.0)) if rule.engine_decay(group) else 0.0
        decoupled = rule.decoupled(group)
        l2: list[float] = []
        decay: list[float] = []
        if chain.decay_before or chain.decay_after:
            names = group.get("param_names")
            pindex = {id(p): i for i, p in enumerate(group["params"])}
            l2 = [0.0 if decoupled else wd] * len(params)
            decay = [1.0 - lr * wd if decoupled else 1.0] * len(params)
            for i, p in enumerate(originals):
                name = names[pindex[id(p)]] if names else None
                for j, (rate, mask) in enumerate(chain.decay_before):
                    if self._masked(2 * j, mask, p, name):
                        l2[i] += rate
                for j, (rate, mask) in enumerate(chain.decay_after):
                    if self._masked(2 * j + 1, mask, p, name):
                        decay[i] -= lr * rate
        flags = rule.flags(group)
        implementation = self._implementation(group, params)
        if implementation == "torch" and (is_dtensor(originals[0]) or is_dtensor(originals[-1])):
            implementation = "single"  # torch's kernel would store local shards as the state
        prologue = dict(
            grad_scale=grad_scale,
            clip_value=chain.clip_value or 0.0,
            clip_first=chain.clip_first,
            maximize=bool(group.get("maximize", False)),
            l2=l2,
            decay=decay,
            state_stochastic=group.get("state_dtype") == "bfloat16",
            l2_all=0.0 if decoupled else wd,
            decay_all=1.0 - lr * wd if decoupled else 1.0,
        )
        if implementation == "torch":
            # torch's kernel makes (and the rule's adapter stores) fresh state itself
            rule.torch_foreach(params, grads, columns, states, group)
            return True
        self._run(
            implementation, group, params, grads, states, columns, scales, fresh, flags, prologue
        )
        # stored only once filled, so a step that raised leaves no uninitialised buffer behind
        for state, made in pending:
            state.update(made)
        return True

    def _run(
        self,
        implementation: str,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        columns: list[list[Tensor]],
        scales: list[list[Tensor]],
        fresh: list[bool],
        flags: tuple[bool, ...],
        prologue: dict[str, Any],
    ) -> None:
        batch = _Batch(params, grads, states, columns, scales, fresh, flags, prologue)
        n = len(params)
        eager: list[int] = list(range(n))
        if implementation == "fused" and _overflows_low_precision(group, params):
            implementation = "single"  # torch raises there; the eager path makes its calls
        if implementation == "fused":
            ema = [local(s["ema"]) for s in states] if self.chain.ema is not None else []
            # (tensor subclasses other than DTensor, now local shards, are among its indices)
            slow = load().unsupported_indices([params, grads, *columns, ema])
            eager = list(slow)
            if slow and not self._warned_subclass:
                kinds = {type(params[i]).__name__ for i in slow} - {"Tensor", "Parameter"}
                if kinds:
                    self._warned_subclass = True
                    warnings.warn(
                        f"optimist: parameters of tensor subclass {', '.join(sorted(kinds))} use "
                        "the per-tensor PyTorch path (the C++ engine takes plain CPU tensors)",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            if not slow:
                self._run_fused(group, batch)
            elif len(slow) < n:
                gone = set(slow)
                self._run_fused(group, batch.subset([i for i in range(n) if i not in gone]))
        for i in eager:
            self._run_eager(group, batch.subset([i]))

    def _seed(self) -> int:
        return (self._count * 1_000_003 + 12345) & 0xFFFFFFFF

    def _run_fused(self, group: dict[str, Any], batch: _Batch) -> None:
        rule = self.rule
        mod = load()
        steps = [s["step"] for s in batch.states] if rule.has_step else []
        t = mod.advance_steps(steps) if rule.has_step else 0.0
        hypers = None
        if not math.isnan(t):
            scalar_cols = {k: [s[k] for s in batch.states] for k, _ in rule.scalar_state}
            try:
                hypers = rule.scalars(group, t, _ListScalars(scalar_cols))
            except _NotCommon:
                hypers = None
        if hypers is not None:
            self._call_engine(batch, hypers)
            return
        # scalar state differs between parameters (e.g. some joined later): one call each
        already = not math.isnan(t)
        for i, state in enumerate(batch.states):
            ti = float(state["step"].item()) if rule.has_step else 0.0
            hyper = rule.scalars(group, ti, _TensorScalars(state, already_scaled=already))
            self._call_engine(batch.subset([i]), hyper)

    def _call_engine(self, batch: _Batch, hyper: Sequence[float]) -> None:
        rule, ema, pro = self.rule, self.chain.ema, batch.prologue
        load().step(
            rule.name,
            list(batch.flags),
            rule.fresh_flag,
            [float(h) for h in hyper],
            batch.params,
            batch.grads,
            batch.columns,
            batch.scales,
            batch.fresh,
            float(pro["grad_scale"]),
            float(pro["clip_value"]),
            bool(pro["clip_first"]),
            bool(pro["maximize"]),
            pro["l2"],
            pro["decay"],
            float(pro["l2_all"]),
            float(pro["decay_all"]),
            [local(s["ema"]) for s in batch.states] if ema is not None else [],
            [],
            float(ema or 0.0),
            batch.state_stochastic,
            self.stochastic_params,
            self._seed(),
        )

    def _run_eager(self, group: dict[str, Any], batch: _Batch) -> None:
        """The rule's eager function on one parameter (``batch`` holds just that one)."""
        rule = self.rule
        (state,) = batch.states
        if rule.has_step:
            state["step"] += 1
            t = float(state["step"].item())
        else:
            t = 0.0
        hyper = rule.scalars(group, t, _TensorScalars(state))
        (p,) = batch.params
        pro = batch.prologue
        grad = as_real(batch.grads[0])
        param = as_real(p)
        slots = [c[0] if c else None for c in batch.columns]
        native = all(s is None or s.dtype == p.dtype for s in slots) and not (
            self.stochastic_params and p.dtype in (torch.bfloat16, torch.float16)
        )
        if native or p.is_complex():
            compute = param.dtype
        else:
            compute = torch.float64 if p.dtype == torch.float64 else torch.float32
        work = param if compute == param.dtype else param.to(compute)
        g = grad if grad.dtype == compute else grad.to(compute)
        if pro["clip_value"] and pro["clip_first"]:
            g = g.clamp(-pro["clip_value"], pro["clip_value"])
        if pro["grad_scale"] != 1.0:
            g = g * pro["grad_scale"]
        if pro["clip_value"] and not pro["clip_first"]:
            g = g.clamp(-pro["clip_value"], pro["clip_value"])
        if pro["maximize"]:
            g = -g
        decay = pro["decay"][0] if pro["decay"] else pro["decay_all"]
        l2 = pro["l2"][0] if pro["l2"] else pro["l2_all"]
        if decay != 1.0:
            work.mul_(decay)
        if l2 != 0.0:
            g = g.add(work, alpha=l2)
        seed = self._seed()
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
        rule.eager(work, g, views, hyper, _with_fresh(batch.flags, rule.fresh_flag, fresh))
        if self.chain.ema is not None:
            e = as_real(local(state["ema"]))
            d = self.chain.ema
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
            if self.stochastic_params and p.dtype == torch.bfloat16:
                param.copy_(codecs.bf16_stochastic(work, codecs.slot_seed(seed, index, None)))
            else:
                param.copy_(work)

    # --- EMA of parameters --------------------------------------------------------------------

    @contextmanager
    def swap_ema(self) -> Iterable[None]:
        """Within the block the parameters hold their EMA (``ema(decay)`` in the chain)."""
        if self.chain.ema is None:
            raise RuntimeError("swap_ema() needs an optimizer built with an ema(...) transform")
        swapped = []
        for group in self.param_groups:
            for p in group["params"]:
                e = self.state.get(p, {}).get("ema")
                if e is not None:
                    tmp = p.detach().clone()
                    p.data.copy_(e)
                    e.copy_(tmp)
                    swapped.append((p, e))
        try:
            yield
        finally:
            for p, e in swapped:
                tmp = p.detach().clone()
                p.data.copy_(e)
                e.copy_(tmp)


_EMPTY = torch.empty(0)
_PLAIN = (torch.Tensor, torch.nn.Parameter, torch.nn.Buffer)


class _Batch:
    """The tensors of one engine call (index-aligned lists) and their step settings."""

    def __init__(
        self, params, grads, states, columns, scales, fresh, flags, prologue, index=None
    ) -> None:  # noqa: ANN001
        self.params, self.grads, self.states = params, grads, states
        self.columns, self.scales, self.fresh = columns, scales, fresh
        self.flags, self.prologue = flags, prologue
        self.index = index if index is not None else range(len(params))
        self.state_stochastic = bool(prologue.get("state_stochastic", False))

    def subset(self, idx: list[int]) -> _Batch:
        def pick(xs: list) -> list:
            return [xs[i] for i in idx] if xs else []

        pro = dict(self.prologue, l2=pick(self.prologue["l2"]), decay=pick(self.prologue["decay"]))
        return _Batch(
            pick(self.params), pick(self.grads), pick(self.states),
            [pick(c) for c in self.columns], [pick(c) for c in self.scales], pick(self.fresh),
            self.flags, pro, [self.index[i] for i in idx],
        )  # fmt: skip


def _with_fresh(flags: tuple[bool, ...], index: int, fresh: bool) -> tuple[bool, ...]:
    if index < 0:
        return flags
    out = list(flags) + [False] * max(0, index + 1 - len(flags))
    out[index] = fresh
    return tuple(out)


_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def _overflows_low_precision(group: dict[str, Any], params: Sequence[Tensor]) -> bool:
    """A finite hyperparameter too large for float16 (``lr=1e5``, ``1e300``) with a
    non-float64 param: torch raises converting it for such tensors, so the eager path runs."""
    values = [v for v in group.values() if type(v) in (int, float)]
    values += [v for v in group.get("betas", ()) if type(v) in (int, float)]
    if not any(abs(v) > _FLOAT16_MAX and (type(v) is int or math.isfinite(v)) for v in values):
        return False
    return not all(p.dtype in (torch.float64, torch.complex128) for p in params)
