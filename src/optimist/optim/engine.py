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

Two parts live in their own modules and are importable from here: building, loading and the
availability of the C++ engine, with pass 0 (:func:`load`, :func:`available`,
:func:`grad_stats`), in :mod:`optimist.optim.native`; the gathering of a group's tensors for a
step (the base class :class:`~optimist.optim.gather.Gathering`) in :mod:`optimist.optim.gather`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import ParamsT, scalar
from optimist.optim.bucket import run_bucketed
from optimist.optim.distributed import global_grad_stats, is_dtensor, local
from optimist.optim.eager import (
    Batch,
    TensorScalars,
    run_eager,
    run_torch_foreach,
    torch_fused_available,
)
from optimist.optim.gather import Gathering, overflows_low_precision
from optimist.optim.native import available, grad_stats, grad_total, load
from optimist.optim.rule import Rule
from optimist.optim.rule_state import float_state_dict
from optimist.optim.transforms import ChainConfig, mask_matches

__all__ = [
    "RuleOptimizer",
    "available",
    "float_state_dict",
    "grad_stats",
    "grad_total",
    "load",
]


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


def _plus(start: float, rates: tuple[float, ...]) -> float:
    for rate in rates:  # one add per rate, in order (a sum first would round differently)
        start += rate
    return start


def _minus_lr(start: float, lr: float, rates: tuple[float, ...]) -> float:
    for rate in rates:
        start -= lr * rate
    return start


class RuleOptimizer(Gathering):
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
    extra_state: ClassVar[tuple[str, ...]] = ()
    """Per-parameter tensors that :meth:`_init_state` adds besides the rule's slots (Prodigy's
    ``p0``): the functional form passes each as a list of its own."""

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
        self._mask_cache: dict[tuple[int, tuple[int, ...]], tuple[list, list]] = {}
        self._warned_subclass = False
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    # --- masks --------------------------------------------------------------------------------

    def _decay_rates(
        self, group: dict[str, Any], originals: list[Tensor]
    ) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
        """Per parameter of ``originals``, the rates of the chain's ``add_decayed_weights``
        whose mask takes it: those before the rule (an L2 term) and after it (decoupled), each
        in chain order. A mask is a function of the parameter and its name, so the lists are
        made once per parameter list and its names (not per group dict: a scheduled step runs
        on a copy of the group)."""
        key = (id(group.get("param_names")), tuple(map(id, originals)))
        hit = self._mask_cache.get(key)
        if hit is None:
            chain = self.chain
            names = group.get("param_names")
            pindex = {id(p): i for i, p in enumerate(group["params"])}
            before, after = [], []
            for p in originals:
                name = names[pindex[id(p)]] if names else None
                before.append(
                    tuple(r for r, mask in chain.decay_before if mask_matches(mask, p, name))
                )
                after.append(
                    tuple(r for r, mask in chain.decay_after if mask_matches(mask, p, name))
                )
            if len(self._mask_cache) >= 64:  # parameter lists that change step by step
                self._mask_cache.clear()
            hit = self._mask_cache[key] = (before, after)
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
        return global_grad_stats(self._all_grads(), clip or 0.0, grad_total)

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
        """The path of a group's step: "fused" (optimist's C++ engine, CPU), "torch" (torch's
        foreach kernel), "torch_fused" (torch's fused kernel, ``fused=True`` on an
        accelerator) or "single" (the rule's per-tensor eager function)."""
        # the first and last parameter decide; a stray tensor elsewhere on another device is
        # routed to the eager path by the engine's own per-tensor check
        on_cpu = not params or (params[0].is_cpu and params[-1].is_cpu)
        if group.get("fused"):
            if not on_cpu:
                return self._torch_fused(group, params[0].device)
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

    def _torch_fused(self, group: dict[str, Any], device: torch.device) -> str:
        """``fused=True`` off the CPU: torch's fused kernel where it has one for the rule (Adam,
        AdamW, SGD, Adagrad), else a one-line error naming what runs instead."""
        name = type(self).__name__
        if not torch_fused_available(self.rule, device):
            instead = (
                "fused=None (torch's foreach kernel) or foreach=False (the per-tensor path)"
                if self.rule.torch_foreach
                else "fused=None (the eager path)"
            )
            raise RuntimeError(
                f"fused=True: {name} has no fused kernel on {device.type} (torch.optim runs "
                "fused=True only for Adam, AdamW, SGD and Adagrad, each on the devices its class "
                f"accepts; optimist's own fused engine is for the CPU); use {instead}"
            )
        if not self._torch_path_applies(group):
            raise RuntimeError(
                f"fused=True on {device.type} runs torch's fused {name} kernel, which has no "
                "state_dtype, chain transforms or stochastic_params; drop them, or use "
                "fused=None (the eager path runs them)"
            )
        return "torch_fused"

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
        slots = self._slots(group)
        gathered = self._gather_fast(group, slots)
        if gathered is None:
            gathered = self._gather(group, slots)
        if gathered is None:
            return False
        originals, params, grads, states, columns, scales, fresh, pending, plan = gathered
        lr = scalar(group["lr"])
        wd = scalar(group.get("weight_decay", 0.0)) if rule.engine_decay(group) else 0.0
        decoupled = rule.decoupled(group)
        l2: list[float] = []
        decay: list[float] = []
        if chain.decay_before or chain.decay_after:
            before, after = self._decay_rates(group, originals)
            l2 = [_plus(0.0 if decoupled else wd, rates) for rates in before]
            decay = [_minus_lr(1.0 - lr * wd if decoupled else 1.0, lr, rates) for rates in after]
        flags = rule.flags(group)
        # (a plan: the fast gather found the group on the engine's path)
        implementation = "fused" if plan is not None else self._implementation(group, params)
        torch_kernel = implementation in ("torch", "torch_fused")
        if torch_kernel and (is_dtensor(originals[0]) or is_dtensor(originals[-1])):
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
        if implementation in ("torch", "torch_fused"):
            # torch's kernel makes (and the rule's adapter stores) fresh state itself
            fused = implementation == "torch_fused"
            run_torch_foreach(rule, params, grads, columns, states, group, fused=fused)
            return True
        self._run(
            implementation,
            group,
            params,
            grads,
            states,
            columns,
            scales,
            fresh,
            flags,
            prologue,
            plan=plan,
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
        *,
        plan: Any = None,
    ) -> None:
        """Run the step: the C++ engine where it applies, else the eager path: bucketed
        (:mod:`optimist.optim.bucket`) where :meth:`_bucketed` says so, else per tensor.

        ``plan``: the engine's plan of the whole batch (from :meth:`_gather_fast`), if made.
        """
        batch = Batch(params, grads, states, columns, scales, fresh, flags, prologue)
        n = len(params)
        eager: list[int] = list(range(n))
        if plan is not None:
            self._run_fused(group, batch, plan)
            return
        if implementation == "single" and self._bucketed(group, params):
            run_bucketed(
                self.rule,
                group,
                batch,
                ema=self.chain.ema,
                stochastic_params=self.stochastic_params,
                seed=self._seed(),
            )
            return
        if implementation == "fused" and overflows_low_precision(
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

    @staticmethod
    def _bucketed(group: dict[str, Any], params: Sequence[Tensor]) -> bool:
        """Whether the eager path runs in buckets: ``foreach=True`` (any device: how the tests
        take this path on the CPU), or by default (``foreach=None``) on accelerators; never
        with ``foreach=False`` (one call per tensor, as torch.optim's ``foreach=False``)."""
        foreach = group.get("foreach")
        if foreach is not None:
            return bool(foreach)
        return bool(params) and not params[0].is_cpu

    def _seed(self) -> int:
        return (self._count * 1_000_003 + 12345) & 0xFFFFFFFF

    def _run_fused(self, group: dict[str, Any], batch: Batch, plan: Any = None) -> None:
        """The batch through the C++ engine: one call if the step count and the scalar state
        are common to all parameters (the usual case), else one call per parameter."""
        rule = self.rule
        mod = load()
        if plan is not None and rule.has_step and math.isnan(plan.step):
            plan = None  # the step counts differ: advanced below, one call per parameter
        if plan is not None:
            t = plan.step if rule.has_step else 0.0  # stored by plan's run
        elif rule.has_step:
            t = mod.advance_steps([s["step"] for s in batch.states])
        else:
            t = 0.0
        hypers = None
        if not math.isnan(t):
            scalar_cols = {k: [s[k] for s in batch.states] for k, _ in rule.scalar_state}
            try:
                hypers = rule.scalars(group, t, _ListScalars(scalar_cols))
            except _NotCommon:
                hypers = None
        if hypers is not None:
            self._call_engine(batch, hypers, plan)
            return
        if plan is not None and rule.has_step:
            mod.advance_steps([s["step"] for s in batch.states])  # (the unused plan would have)
        # scalar state differs between parameters (e.g. some joined later): one call each
        already = not math.isnan(t)
        for i, state in enumerate(batch.states):
            ti = float(state["step"].item()) if rule.has_step else 0.0
            hyper = rule.scalars(group, ti, TensorScalars(state, already_scaled=already))
            self._call_engine(batch.subset([i]), hyper)

    def _call_engine(self, batch: Batch, hyper: Sequence[float], plan: Any = None) -> None:
        """One engine call over ``batch`` (planned here unless ``plan`` is the batch's)."""
        rule, ema, pro = self.rule, self.chain.ema, batch.prologue
        mod = load()
        if plan is None:
            emas = [local(s["ema"]) for s in batch.states] if ema is not None else []
            lists = [batch.params, batch.grads, *batch.columns, emas]
            plan = mod.plan(
                lists, batch.scales, [], [], batch.state_stochastic, self.stochastic_params, False
            )
        mod.run(
            plan,
            rule.name,
            list(batch.flags),
            rule.fresh_flag,
            [float(h) for h in hyper],
            batch.fresh,
            float(pro["grad_scale"]),
            float(pro["clip_value"]),
            bool(pro["clip_first"]),
            bool(pro["maximize"]),
            pro["l2"],
            pro["decay"],
            float(pro["l2_all"]),
            float(pro["decay_all"]),
            float(ema or 0.0),
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
