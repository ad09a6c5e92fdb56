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
from optimist.optim.base import ParamsT, as_real, scalar
from optimist.optim.distributed import global_grad_stats, is_dtensor, local, local_grad
from optimist.optim.eager import Batch, TensorScalars, run_eager, run_torch_foreach
from optimist.optim.rule import Rule
from optimist.optim.rule_state import RuleState, float_state_dict
from optimist.optim.transforms import ChainConfig, mask_matches

__all__ = ["RuleOptimizer", "available", "float_state_dict", "grad_stats", "load"]

CSRC = Path(__file__).resolve().parent / "csrc"
# every file the build reads (engine.cpp includes the headers), so that the cache key changes
# with any of them
SOURCES = sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cpp")])
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
    return _build.extension_name(NAME_PREFIX, SOURCES, CFLAGS, LDFLAGS)


def _load_module() -> ModuleType:
    return _build.load_extension(
        NAME_PREFIX, SOURCES, CFLAGS, LDFLAGS, description="C++ optimizer engine"
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

    One read of each gradient. CPU tensors go through the C++ engine (each value widened to
    float64 and summed in vectorized lanes, at memory speed); elsewhere torch's multi-tensor norm
    (in the gradients' precision). "Finite" is judged from the sums, as
    ``torch.nn.utils.clip_grad_norm_(error_if_nonfinite=True)`` judges it from the norm (a NaN
    or inf element makes the sum NaN or inf). With ``clip_value > 0`` the gradients are clamped
    to ``±clip_value`` first, and finiteness is that of the unclamped elements.
    """
    if not grads:
        return torch.zeros(0, dtype=torch.float64), True
    if all(g.is_cpu for g in grads) and available():
        mod = load()
        if not mod.unsupported_indices([list(grads), list(grads)]):
            return mod.grad_stats(list(grads), float(clip_value))
    if clip_value <= 0:
        norms = torch._foreach_norm([as_real(g) for g in grads])
        try:  # one op when the norms share a dtype and device (the usual case)
            sums = torch.stack(norms).double().cpu() ** 2
        except RuntimeError:
            sums = torch.stack([n.double().cpu() for n in norms]) ** 2
        return sums, bool(torch.isfinite(sums).all())
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


# --- the optimizer ------------------------------------------------------------------------------


class RuleOptimizer(RuleState):
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
    state_dtypes = codecs.STATE_DTYPES

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

    def _gradients(self, params: Sequence[Tensor]) -> list[Tensor | None]:
        """The gradient each parameter steps with: ``p.grad``, or its accumulator (None: none)."""
        if self.chain.accumulate > 1:
            state = self.state
            return [state[p].get("accumulated") if p in state else None for p in params]
        return [p.grad for p in params]

    def _gradient(self, p: Tensor) -> Tensor | None:
        return self._gradients((p,))[0]

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
            for g in self._gradients(group["params"])
            if g is not None
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
        if not self._global_pass(grad_scale, multiplier):
            return loss
        updated = False
        for group in self.param_groups:
            updated |= self._step_group(group, grad_scale=grad_scale, lr_multiplier=multiplier)
        self._count += updated
        return loss

    def _global_pass(self, grad_scale: float, lr_multiplier: float) -> bool:
        """A pass over every group before the rule's, for rules with global host scalars.

        Rules whose scalars depend on reductions over all parameters (Prodigy's step size)
        compute them here, from the same prepared gradients the rule sees; False skips the
        step. The default does nothing.
        """
        return True

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
        for p, grad in zip(group["params"], self._gradients(group["params"]), strict=True):
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
            run_torch_foreach(rule, params, grads, columns, states, group)
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
        batch = Batch(params, grads, states, columns, scales, fresh, flags, prologue)
        n = len(params)
        eager: list[int] = list(range(n))
        if implementation == "fused" and _overflows_low_precision(
            group, params, self.rule.group_statistics
        ):
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
            run_eager(
                self.rule,
                group,
                batch.subset([i]),
                ema=self.chain.ema,
                stochastic_params=self.stochastic_params,
                seed=self._seed(),
            )

    def _seed(self) -> int:
        return (self._count * 1_000_003 + 12345) & 0xFFFFFFFF

    def _run_fused(self, group: dict[str, Any], batch: Batch) -> None:
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
            hyper = rule.scalars(group, ti, TensorScalars(state, already_scaled=already))
            self._call_engine(batch.subset([i]), hyper)

    def _call_engine(self, batch: Batch, hyper: Sequence[float]) -> None:
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


_FLOAT16_MAX = float(torch.finfo(torch.float16).max)


def _overflows_low_precision(
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
