"""State of a :class:`~optimist.optim.engine.RuleOptimizer`: creation, storage codecs, checkpoints.

* state is created lazily from the rule's slots, stored as the group's ``state_dtype`` asks
  (:mod:`optimist.optim.codecs`);
* ``load_state_dict`` converts whatever format a checkpoint holds (torch.optim's float state into
  an int8 optimizer and back); :func:`float_state_dict` makes a torch.optim-loadable copy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import Optimizer, new_step_tensor
from optimist.optim.distributed import like, local
from optimist.optim.rule import Rule
from optimist.optim.transforms import ChainConfig

__all__ = ["RuleState", "float_state_dict"]


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


class RuleState(Optimizer):
    """The state half of :class:`~optimist.optim.engine.RuleOptimizer` (its base class)."""

    rule: ClassVar[Rule]
    # state tensors outside the rule's slots that a subclass stores through the codecs (Muon's
    # momentum buffer): load_state_dict keeps them as saved instead of casting them
    extra_state_keys: ClassVar[tuple[str, ...]] = ()
    chain: ChainConfig
    _count: int
    _micro: int

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
        super().load_state_dict(state_dict)  # (keeps this optimizer's state_dtype, base.py)
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

    @staticmethod
    def _fill_slot(p: Tensor, state: dict[str, Any], key: str, value: float) -> None:
        """Set every element of slot ``key`` to ``value`` (in its storage format; a complex
        parameter's real and imaginary parts both)."""
        if value == 0:
            return
        slot = state[key]
        if slot.dtype == torch.int8:
            shard = local(p)
            full = torch.full(shard.shape, float(value), device=shard.device)
            codecs.encode(full, local(slot), state[key + "_absmax"], stochastic=False, seed=0)
        else:
            slot.fill_(complex(value, value) if torch.is_complex(p) else value)

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
                if slot.initial is not None:
                    self._fill_slot(p, state, slot.key, group[slot.initial])
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
