"""Keras 3 learning-rate schedules: ``optimist.optimizers.schedules.ExponentialDecay(...)``.

A schedule maps the optimizer's step counter (``iterations``: 0 at the first update) to a
learning rate, with Keras 3's formulas, names and defaults. Pass one as ``learning_rate=`` of a
Keras-style optimizer (:mod:`optimist.optimizers`); it is evaluated before every update.
Any ``callable(step) -> float`` works the same way.

>>> s = ExponentialDecay(0.1, decay_steps=100, decay_rate=0.5)
>>> round(s(100), 6)
0.05

Every schedule of :mod:`optimist.schedules` (``warmup_cosine``, ``wsd``, ``inverse_sqrt``,
``one_cycle``, ``step``...) is available the same way, by name, through :func:`get`:

>>> s = get("warmup_cosine", 1e-3, total_steps=1000, warmup_steps=100)
>>> round(s(50), 7), round(s(100), 7)
(0.0005, 0.001)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "TorchSchedule",
    "check",
    "get",
    "resolve",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "deserialize",
    "serialize",
]


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value!r}")
    return value


class LearningRateSchedule:
    """Base class: ``schedule(step) -> learning rate``; ``get_config`` for saving."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must override __call__(self, step)")

    def get_config(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearningRateSchedule:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored with
    ``staircase``)."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
        name: str = "ExponentialDecay",
    ) -> None:
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive("decay_steps", decay_steps)
        self.decay_rate = decay_rate
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate**p


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (floored with
    ``staircase``)."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        decay_rate: float,
        staircase: bool = False,
        name: str = "InverseTimeDecay",
    ) -> None:
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive("decay_steps", decay_steps)
        self.decay_rate = decay_rate
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while ``step <= boundaries[0]``, ``values[i]`` while
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the last boundary."""

    def __init__(
        self, boundaries: Sequence[int], values: Sequence[float], name: str = "PiecewiseConstant"
    ) -> None:
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                f"The length of boundaries should be 1 less than the length of values. "
                f"Received: boundaries={list(boundaries)} of length {len(boundaries)}, and "
                f"values={list(values)} of length {len(values)}."
            )
        self.boundaries = list(boundaries)
        self.values = list(values)
        self.name = name

    def __call__(self, step: int) -> float:
        for boundary, value in zip(self.boundaries, self.values, strict=False):
            if step <= boundary:
                return value
        return self.values[-1]


class PolynomialDecay(LearningRateSchedule):
    """From ``initial_learning_rate`` to ``end_learning_rate`` over ``decay_steps`` as
    ``(1 - step / decay_steps) ** power``; with ``cycle`` the decay restarts at each multiple."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        name: str = "PolynomialDecay",
    ) -> None:
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive("decay_steps", decay_steps)
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step: int) -> float:
        decay_steps = float(self.decay_steps)
        if self.cycle:
            decay_steps *= 1.0 if step == 0 else math.ceil(step / self.decay_steps)
        else:
            step = min(step, decay_steps)
        p = step / decay_steps
        span = self.initial_learning_rate - self.end_learning_rate
        return span * (1.0 - p) ** self.power + self.end_learning_rate


class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then cosine decay over ``decay_steps`` down to ``alpha`` times the start."""

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        alpha: float = 0.0,
        name: str = "CosineDecay",
        warmup_target: float | None = None,
        warmup_steps: int = 0,
    ) -> None:
        self.initial_learning_rate = initial_learning_rate
        self.decay_steps = _positive("decay_steps", decay_steps)
        self.alpha = alpha
        self.name = name
        self.warmup_target = warmup_target
        self.warmup_steps = warmup_steps

    def _decay(self, step: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * step / self.warmup_steps + self.initial_learning_rate
        return self._decay(step - self.warmup_steps, self.warmup_target)


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): periods grow by ``t_mul``, peaks by ``m_mul``."""

    def __init__(
        self,
        initial_learning_rate: float,
        first_decay_steps: int,
        t_mul: float = 2.0,
        m_mul: float = 1.0,
        alpha: float = 0.0,
        name: str = "SGDRDecay",
    ) -> None:
        self.initial_learning_rate = initial_learning_rate
        self.first_decay_steps = _positive("first_decay_steps", first_decay_steps)
        self.t_mul = t_mul
        self.m_mul = m_mul
        self.alpha = alpha
        self.name = name

    def __call__(self, step: int) -> float:
        fraction = step / self.first_decay_steps
        if self.t_mul == 1.0:
            restart = math.floor(fraction)
            fraction -= restart
        else:
            restart = math.floor(
                math.log(1.0 - fraction * (1.0 - self.t_mul)) / math.log(self.t_mul)
            )
            done = (1.0 - self.t_mul**restart) / (1.0 - self.t_mul)
            fraction = (fraction - done) / self.t_mul**restart
        cosine = 0.5 * self.m_mul**restart * (1.0 + math.cos(math.pi * fraction))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)


_PLATEAU_BY_NAME = (
    "reduce_on_plateau depends on the validation loss, not on the step: use "
    "callbacks=[optimist.callbacks.ReduceLROnPlateau(...)] instead"
)


class TorchSchedule(LearningRateSchedule):
    """A schedule of :mod:`optimist.schedules` (by name, with its arguments) as a Keras
    schedule: ``learning_rate(step)`` is the learning rate that schedule gives an optimizer of
    rate ``initial_learning_rate`` at its ``step``-th update (0 = the first), the same numbers
    as ``optimist.schedules.lr_values``. ``reduce_on_plateau`` depends on validation results,
    not on the step: use the :class:`~optimist.callbacks.ReduceLROnPlateau` callback."""

    def __init__(self, name: str, initial_learning_rate: float, **kwargs: Any) -> None:
        import torch

        from optimist.optim import schedules as torch_schedules

        _positive("initial_learning_rate", initial_learning_rate)
        self.name = name
        self.initial_learning_rate = initial_learning_rate
        self.kwargs = dict(kwargs)
        self._param = torch.zeros(1, requires_grad=True)
        self._opt = torch.optim.SGD([self._param], lr=float(initial_learning_rate))
        self._scheduler = torch_schedules.get(name, self._opt, **kwargs)  # checks the arguments
        if isinstance(self._scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(_PLATEAU_BY_NAME)
        self._values: list[float] = []

    def __call__(self, step: int) -> float:
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        while len(self._values) <= step:  # torch schedulers are stepped, so step them on
            self._values.append(float(self._opt.param_groups[0]["lr"]))
            self._opt.step()
            self._scheduler.step()
        return self._values[step]

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "initial_learning_rate": self.initial_learning_rate,
            **self.kwargs,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TorchSchedule:
        return cls(**config)


_CLASSES = {
    cls.__name__: cls
    for cls in (
        TorchSchedule,
        CosineDecay,
        CosineDecayRestarts,
        ExponentialDecay,
        InverseTimeDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
    )
}


def serialize(schedule: LearningRateSchedule) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` (JSON-able) for a built-in schedule."""
    if type(schedule).__name__ not in _CLASSES:
        raise ValueError(f"cannot serialize the custom schedule {schedule!r}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def get(identifier: Any, initial_learning_rate: float | None = None, **kwargs: Any) -> Any:
    """A schedule from a schedule object or ``callable(step)`` (returned as it is), a config
    dict (:func:`deserialize`), or a name: a Keras class (``"CosineDecay"`` or
    ``"cosine_decay"``, with its arguments) or a schedule of :mod:`optimist.schedules`
    (``"warmup_cosine"``, ``"wsd"``, ``"inverse_sqrt"``...: a :class:`TorchSchedule` from
    ``initial_learning_rate`` and that schedule's arguments)."""
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Could not interpret learning-rate schedule: {identifier!r}")
    by_snake = {_snake(name): cls for name, cls in _CLASSES.items() if cls is not TorchSchedule}
    cls = _CLASSES.get(identifier) or by_snake.get(identifier.lower())
    if cls is not None and cls is not TorchSchedule:
        if initial_learning_rate is not None:
            kwargs["initial_learning_rate"] = initial_learning_rate
        return cls(**kwargs)
    if initial_learning_rate is None:
        raise ValueError(
            f"schedule {identifier!r}: pass initial_learning_rate (the peak rate the schedule "
            f"scales), e.g. get({identifier!r}, 1e-3, ...)"
        )
    try:
        return TorchSchedule(identifier, initial_learning_rate, **kwargs)
    except ValueError as exc:
        if str(exc).startswith("Unknown schedule"):
            keras = ", ".join(sorted(by_snake))
            raise ValueError(f"{exc}; Keras schedules: {keras}") from None
        raise


def check(spec: Any) -> None:
    """Validate ``compile(lr_schedule=...)`` now (see :func:`resolve`), so that a typo fails
    at compile time, with the known names."""
    from optimist.optim import schedules as torch_schedules

    if spec is None or callable(spec):
        return
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str):
        raise ValueError(
            "lr_schedule must be a schedule object, a callable(step) -> learning rate, the name "
            "of an optimist.schedules schedule or a dict {'name': ..., **arguments}. Received: "
            f"lr_schedule={spec!r}"
        )
    torch_schedules._factory(name)  # unknown names raise, with close matches
    if torch_schedules.canonical(name) == "reduce_on_plateau":
        raise ValueError(_PLATEAU_BY_NAME)


def resolve(spec: Any, learning_rate: float, total_steps: int | None) -> Any:
    """``compile(lr_schedule=...)`` as a schedule: objects and callables as they are; a name
    or ``{"name": ..., **arguments}`` as a :class:`TorchSchedule` peaking at the optimizer's
    ``learning_rate``, with ``total_steps`` (the first fit's) filled in where it is needed."""
    import inspect

    from optimist.optim import schedules as torch_schedules

    if callable(spec):
        return spec
    kwargs = dict(spec) if isinstance(spec, dict) else {"name": spec}
    name = kwargs.pop("name")
    takes = inspect.signature(torch_schedules._factory(name)).parameters
    if "total_steps" in takes and "total_steps" not in kwargs:
        if total_steps is None:
            raise ValueError(
                f"lr_schedule {name!r} needs total_steps: pass {{'name': {name!r}, "
                "'total_steps': ...}} (fit fills it in only when it knows its step count)"
            )
        kwargs["total_steps"] = total_steps
    return TorchSchedule(name, learning_rate, **kwargs)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def deserialize(config: dict[str, Any]) -> LearningRateSchedule:
    cls = _CLASSES.get(config.get("class_name", ""))
    if cls is None:
        raise ValueError(f"unknown learning-rate schedule {config.get('class_name')!r}")
    return cls.from_config(config.get("config", {}))
