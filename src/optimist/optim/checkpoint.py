"""Distributed checkpoints of a model and an optimist optimizer (``torch.distributed.checkpoint``).

>>> import torch.distributed.checkpoint as dcp
>>> from optimist.optim.checkpoint import TrainState
>>> dcp.save({"train": TrainState(model, opt)}, checkpoint_id="ckpt/epoch3")   # every rank
>>> dcp.load({"train": TrainState(model, opt)}, checkpoint_id="ckpt/epoch3")   # any number of ranks

:class:`TrainState` is a DCP ``Stateful``: it goes through torch's ``get_state_dict`` /
``set_state_dict`` (FSDP2 DTensors, DDP, or a plain model in one process), so a checkpoint saved
on N processes loads on M. Element-wise optimizer state stays a DTensor sharded like its
parameter; int8 state is written decoded to float32 (its block scales belong to one sharding;
loading re-encodes per local shard, giving back the same codes on the same layout) and bfloat16
state as it is. The optimizer's step count (stochastic-rounding seeds, schedules) travels with it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.stateful import Stateful

from optimist.optim.engine import RuleOptimizer, float_state_dict

__all__ = ["TrainState"]


class TrainState(Stateful):
    """A model and its optimizer as one ``torch.distributed.checkpoint`` entry.

    Args:
        model: the module (plain, DDP-wrapped or ``fully_shard``-ed).
        optimizer: any ``torch.optim.Optimizer`` over ``model``'s parameters.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model = model
        self.optimizer = optimizer

    def state_dict(self) -> dict[str, Any]:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        count = 0
        if isinstance(self.optimizer, RuleOptimizer):
            optim_state = float_state_dict(optim_state, widen_bfloat16=False)
            count = self.optimizer._count
        return {"model": model_state, "optim": optim_state, "count": count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state_dict["model"],
            optim_state_dict=state_dict["optim"],
        )
        if isinstance(self.optimizer, RuleOptimizer):
            self.optimizer._count = int(state_dict.get("count", 0))
