"""Base of the optimizers whose update needs whole-tensor work (norms, factored moments, matrices).

Adafactor, LAMB, LARS and SOAP cannot be element-wise engine rules: each tensor's update depends
on its own norms or matrix products, known only after a full read. They step in torch ops; this
module gives them the closure handling and ``skip_nonfinite`` (checked with the engine's pass 0)
that :class:`~optimist.optim.engine.RuleOptimizer` gives the rules, and the engine's storage
formats (``state_dtype``, :mod:`optimist.optim.codecs`) for their element-wise state through
:func:`new_slot`, :func:`read_slot` and :func:`write_slot` (Muon's momentum uses them too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import Optimizer, ParamsT
from optimist.optim.distributed import global_grad_stats
from optimist.optim.native import grad_total

__all__ = ["TensorwiseOptimizer", "compute_dtype", "new_slot", "read_slot", "write_slot"]


def new_slot(p: Tensor, state: dict[str, Any], key: str, state_dtype: str | None) -> None:
    """Create the zero state tensor ``state[key]`` for ``p`` stored as ``state_dtype`` asks
    (with its float32 block scales under ``key + "_absmax"`` for int8)."""
    dtype = codecs.storage_dtype(state_dtype, p)
    state[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
    if dtype == torch.int8:
        blocks = -(-p.numel() // codecs.QUANT_BLOCK)
        state[key + "_absmax"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
    else:
        state.pop(key + "_absmax", None)


def compute_dtype(p: Tensor, stored: Tensor) -> torch.dtype:
    """The precision a state tensor is updated in: its own if it is the parameter's (torch's
    behaviour), else float32 (float64 for float64 parameters)."""
    if stored.dtype == p.dtype:
        return p.dtype
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def read_slot(p: Tensor, state: dict[str, Any], key: str, state_dtype: str | None) -> Tensor:
    """``state[key]`` in its compute precision: the stored tensor itself when that is already
    the compute precision (update it in place), else a decoded copy (then call
    :func:`write_slot`). A tensor stored otherwise than ``state_dtype`` asks (a checkpoint of
    another setting) is first converted to it."""
    stored = state[key]
    scale = state.get(key + "_absmax")
    if stored.dtype != codecs.storage_dtype(state_dtype, p):
        value = codecs.decode(stored, scale, torch.float64).reshape(p.shape)
        new_slot(p, state, key, state_dtype)
        codecs.encode(value, state[key], state.get(key + "_absmax"), stochastic=False, seed=0)
        stored, scale = state[key], state.get(key + "_absmax")
    dtype = compute_dtype(p, stored)
    if stored.dtype == dtype:
        return stored
    return codecs.decode(stored, scale, dtype).reshape(p.shape)


def write_slot(
    state: dict[str, Any], key: str, value: Tensor, *, stochastic: bool, seed: int
) -> None:
    """Store ``value`` into ``state[key]`` (int8 block-wise; bfloat16 rounded stochastically
    with ``stochastic``, i.e. for ``state_dtype="bfloat16"``, as the engine); nothing to do
    when ``value`` is the stored tensor itself."""
    stored = state[key]
    if value.data_ptr() == stored.data_ptr() and value.dtype == stored.dtype:
        return
    codecs.encode(value, stored, state.get(key + "_absmax"), stochastic=stochastic, seed=seed)


class TensorwiseOptimizer(Optimizer):
    """Subclasses define ``_check_group(group)`` and ``_step_group(group)`` (torch ops).

    ``state_dtype`` is taken for a uniform signature and checked; its only value here is None
    (the state in the parameter's dtype), unless a subclass widens :attr:`state_dtypes`.

    ``raw_state_keys`` names state entries (tensors or lists of tensors) that
    ``load_state_dict`` keeps in their saved dtype instead of casting them to the parameter's
    (torch's rule), e.g. int8 codes and float32 preconditioners of bfloat16 parameters.
    """

    raw_state_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params: ParamsT,
        defaults: dict[str, Any],
        *,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
    ) -> None:
        codecs.check_state_dtype(state_dtype, self.state_dtypes, type(self).__name__)
        if state_dtype is not None:  # per group, as the rules keep it
            defaults = {**defaults, "state_dtype": state_dtype}
        super().__init__(params, defaults, skip_nonfinite=skip_nonfinite)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: optional; re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.skip_nonfinite:
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            if not global_grad_stats(grads, 0.0, grad_total)[1]:  # the same on every rank
                self.skipped_steps += 1
                return loss
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        raw = set(self.raw_state_keys) | {key + "_absmax" for key in self.raw_state_keys}
        kept = {
            pid: {key: value for key, value in pstate.items() if key in raw}
            for pid, pstate in state_dict.get("state", {}).items()
        }
        super().load_state_dict(state_dict)
        ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(ids, params, strict=False):
            for key, value in kept.get(pid, {}).items():
                self.state[p][key] = _to_device(value, p.device)


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device=device, copy=True)  # never share the caller's tensors
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value
