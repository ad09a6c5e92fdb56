"""Base of the optimizers whose update needs whole-tensor reductions (norms, factored moments).

Adafactor, LAMB and LARS cannot be element-wise engine rules: each tensor's update depends on
its own norms, known only after a full read. They step one tensor at a time in torch ops; this
class gives them the closure handling and ``skip_nonfinite`` (checked with the engine's pass 0)
that :class:`~optimist.optim.engine.RuleOptimizer` gives the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from optimist.optim.base import Optimizer
from optimist.optim.distributed import global_grad_stats
from optimist.optim.engine import grad_stats

__all__ = ["TensorwiseOptimizer"]


class TensorwiseOptimizer(Optimizer):
    """Subclasses define ``_check_group(group)`` and ``_step_group(group)`` (torch ops)."""

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
            if not global_grad_stats(grads, 0.0, grad_stats)[1]:  # the same on every rank
                self.skipped_steps += 1
                return loss
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
