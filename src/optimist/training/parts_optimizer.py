"""The ``torch.optim.Optimizer`` of an optimizer that wraps others (Keras' LossScaleOptimizer
and MultiOptimizer, :mod:`optimist.training.keras_wrappers`): made of the wrapped optimizers'
own torch optimizers, so that ``model.optimizer`` stays a torch optimizer whose ``state_dict``
holds everything a checkpoint needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import torch

__all__ = ["PartsOptimizer", "StateOwner"]


class StateOwner(Protocol):
    """The wrapper that owns a :class:`PartsOptimizer`: its own counters, saved with the
    parts' state."""

    def _state(self) -> dict[str, Any]: ...

    def _load_state(self, state: dict[str, Any]) -> None: ...


class _JoinedState(Mapping[torch.Tensor, Any]):
    """The parts' ``state`` as one read-only mapping, read live (``load_state_dict`` replaces a
    part's ``state`` dict)."""

    def __init__(self, parts: list[torch.optim.Optimizer]) -> None:
        self._parts = parts

    def __getitem__(self, param: torch.Tensor) -> Any:
        for part in self._parts:
            if param in part.state or any(
                param is p for g in part.param_groups for p in g["params"]
            ):
                return part.state[param]
        raise KeyError(param)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for part in self._parts:
            yield from part.state

    def __len__(self) -> int:
        return sum(len(part.state) for part in self._parts)


class PartsOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` made of others (a wrapper's ``model.optimizer``):
    ``param_groups`` are the parts' own group dicts (setting a rate there sets the part's),
    ``state`` reads the parts' states, ``step()`` steps every part in order and
    ``state_dict()`` is ``{"parts": [each part's state_dict], "wrapper": the Keras wrapper's
    counters}``."""

    def __init__(self, parts: Iterable[torch.optim.Optimizer], owner: StateOwner) -> None:
        self.parts = list(parts)
        super().__init__(
            [p for part in self.parts for g in part.param_groups for p in g["params"]], {}
        )
        self.keras_optimizer = owner
        self._join()

    def _join(self) -> None:
        self.param_groups = [g for part in self.parts for g in part.param_groups]
        self.state = _JoinedState(self.parts)  # type: ignore[assignment]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for part in self.parts:
            part.step()
        return loss

    def train(self) -> None:
        """Train mode for the parts that have one (Schedule-Free's; ``fit`` switches it)."""
        self._mode("train")

    def eval(self) -> None:
        """Eval mode (the averaged weights) for the parts that have one."""
        self._mode("eval")

    def _mode(self, which: str) -> None:
        other = "eval" if which == "train" else "train"
        for part in self.parts:
            if callable(getattr(part, which, None)) and callable(getattr(part, other, None)):
                getattr(part, which)()

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        owner: StateOwner = self.__dict__["keras_optimizer"]
        return {"parts": [part.state_dict() for part in self.parts], "wrapper": owner._state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        parts = state_dict.get("parts") if isinstance(state_dict, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.parts):
            got = len(parts) if isinstance(parts, list) else "no"
            raise ValueError(f"the state holds {got} parts, this optimizer has {len(self.parts)}")
        for part, state in zip(self.parts, parts, strict=True):
            part.load_state_dict(state)
        self._join()
        owner: StateOwner = self.__dict__["keras_optimizer"]
        owner._load_state(state_dict.get("wrapper") or {})
