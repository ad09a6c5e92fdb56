"""``model.optimizer`` as Keras code reads it, while it stays the ``torch.optim.Optimizer``.

After ``compile`` (whatever the optimizer was given as: a Keras name, a Keras-style object, a
registry name, a ``torch.optim.Optimizer`` or a factory), ``model.optimizer`` is the torch
optimizer that runs the updates -- ``param_groups``, ``state_dict``, ``step``, torch LR
schedulers and hooks work as usual, ``isinstance(model.optimizer, torch.optim.SGD)`` holds --
with Keras' attributes added:

* ``learning_rate``: read it (a float, also ``float(...)``/``.numpy()``), set it
  (``model.optimizer.learning_rate = 1e-4``) or ``model.optimizer.learning_rate.assign(1e-4)``.
  A Keras-style optimizer answers for itself (a schedule is evaluated at the current step);
  otherwise it is the first param group's ``lr``, and setting it sets every group's. A schedule
  (``optimist.optimizers.schedules.*`` or any ``callable(step)``) may be set on any optimizer:
  before each step every group's ``lr`` becomes ``schedule(iterations)``.
* ``iterations``: the optimizer steps taken (Keras' count: with ``gradient_accumulation_steps``
  the real updates); ``scale_loss(loss)``: the loss times ``loss_scale_factor`` or a
  LossScaleOptimizer's dynamic scale (or the loss).

This is done by giving the optimizer instance a subclass of its own class that adds these
properties (same name, same module); copies and pickles come back as the original class with
the same additions.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

__all__ = ["Iterations", "KerasOptimizerView", "LearningRate", "keras_view"]


class LearningRate(float):
    """A learning rate as read from an optimizer: a ``float`` that, like Keras' variable, also
    has ``assign(value)`` (sets the optimizer's rate) and ``numpy()``."""

    _owner: Any

    def __new__(cls, value: float, owner: Any) -> LearningRate:
        obj = super().__new__(cls, value)
        obj._owner = owner
        return obj

    def assign(self, value: Any) -> LearningRate:
        self._owner.learning_rate = float(value) if not callable(value) else value
        return self._owner.learning_rate

    def numpy(self) -> np.float64:
        return np.float64(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (float, (float(self),))


class Iterations(int):
    """A step count as Keras returns it (``int(...)`` or ``.numpy()``)."""

    def numpy(self) -> np.int64:
        return np.int64(self)

    def __reduce__(self) -> tuple[Any, ...]:
        return (int, (int(self),))


def check_learning_rate(value: Any) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or math.isnan(value)
        or value < 0
    ):
        raise ValueError(
            f"`learning_rate` must be a number >= 0. Received: learning_rate={value!r}"
        )
    return float(value)


class KerasOptimizerView:
    """Mixed into the class of a compiled model's torch optimizer (see the module docstring)."""

    _view_base: type

    def _keras(self) -> Any:
        return self.__dict__.get("keras_optimizer")

    @property
    def learning_rate(self) -> LearningRate:
        keras = self._keras()
        if keras is not None:
            return keras.learning_rate
        schedule = self.__dict__.get("_lr_schedule")
        if schedule is not None:
            return LearningRate(float(schedule(int(self.iterations))), self)
        return LearningRate(float(self.param_groups[0]["lr"]), self)  # type: ignore[attr-defined]

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        keras = self._keras()
        if keras is not None:
            keras.learning_rate = value
            return
        if callable(value):
            self.__dict__["_lr_schedule"] = value
            self._set_lr(float(value(int(self.iterations))))
            return
        self.__dict__["_lr_schedule"] = None
        self._set_lr(check_learning_rate(value))

    def _set_lr(self, lr: float) -> None:
        for group in self.param_groups:  # type: ignore[attr-defined]
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    @property
    def iterations(self) -> Iterations:
        keras = self._keras()
        if keras is not None:
            return Iterations(keras.iterations)
        return Iterations(self.__dict__.get("_keras_iterations", 0))

    @property
    def lr_schedule(self) -> Any:
        """The schedule set on this torch-style optimizer (``None``: a constant rate, or a
        Keras-style optimizer, which keeps its own)."""
        return self.__dict__.get("_lr_schedule")

    def restore_schedule(self, schedule: Any, iterations: int) -> None:
        """Continue a saved run: ``iterations`` steps taken, ``schedule`` (if any) set again
        and the rate set to its value at that step (see ``model.save``)."""
        self.__dict__["_keras_iterations"] = int(iterations)
        if schedule is not None:
            self.learning_rate = schedule

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Keras' ``optimizer.scale_loss``: the loss times ``loss_scale_factor`` if one is set,
        or times a LossScaleOptimizer's current scale."""
        keras = self._keras()
        return loss if keras is None else keras.scale_loss(loss)

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, plus under ``"keras"`` what a Keras-style optimizer keeps
        beside the rule's state (the moving average of ``use_ema``, the partial sums of
        ``gradient_accumulation_steps``), so a checkpoint taken mid-training resumes exactly."""
        state = super().state_dict()  # type: ignore[misc]
        keras = self._keras()
        extra = {} if keras is None else keras.extra_state()
        return {**state, "keras": extra} if extra else state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        extra = state_dict.get("keras") if isinstance(state_dict, dict) else None
        if extra is not None:
            state_dict = {k: v for k, v in state_dict.items() if k != "keras"}
        super().load_state_dict(state_dict)  # type: ignore[misc]
        keras = self._keras()
        if keras is not None:
            keras.load_extra_state(extra or {})

    def _base_step(self, closure: Any = None) -> Any:
        return super().step(closure)  # type: ignore[misc]

    def step(self, closure: Any = None) -> Any:
        keras = self._keras()
        if keras is not None:
            return keras.apply_step(self, closure)
        count = self.__dict__.get("_keras_iterations", 0)
        schedule = self.__dict__.get("_lr_schedule")
        if schedule is not None:
            self._set_lr(float(schedule(count)))
        out = super().step(closure)  # type: ignore[misc]
        self.__dict__["_keras_iterations"] = count + 1
        return out

    # torch wraps a class's ``step`` with its hooks unless marked; the base class's ``step``
    # (called through ``super()``) already runs them once.
    step.hooked = True  # type: ignore[attr-defined]

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return (_rebuild, (self._view_base,), self.__getstate__())  # type: ignore[attr-defined]


_VIEWS: dict[type, type] = {}


def _view_class(cls: type) -> type:
    view = _VIEWS.get(cls)
    if view is None:
        view = type(
            cls.__name__,
            (KerasOptimizerView, cls),
            {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "_view_base": cls},
        )
        _VIEWS[cls] = view
    return view


def _rebuild(cls: type) -> Any:
    obj = cls.__new__(cls)
    obj.__class__ = _view_class(cls)
    return obj


def keras_view(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Give ``optimizer`` Keras' attributes in place (see the module docstring); returns it."""
    if not isinstance(optimizer, KerasOptimizerView):
        optimizer.__class__ = _view_class(type(optimizer))
    return optimizer
