r"""Learning-rate schedules: ``torch.optim.lr_scheduler`` objects, by name.

Every schedule works with any ``torch.optim.Optimizer`` (optimist's or torch's): call
``scheduler.step()`` after ``optimizer.step()``, as in torch. Where torch has the rule, the
schedule *is* torch's class (``linear`` = ``LinearLR``, ``step`` = ``StepLR``, ``exponential`` =
``ExponentialLR``, ``one_cycle`` = ``OneCycleLR``, ``polynomial`` = ``PolynomialLR``,
``reduce_on_plateau`` = ``ReduceLROnPlateau``); the three torch lacks are closed-form
:class:`LRScheduler` subclasses here, whose learning rate after ``t`` calls of ``step()`` is
``base_lr * factor(t)``:

* :class:`WarmupCosine`: linear warmup over ``warmup_steps`` from ``warmup_start_factor``, then a
  half cosine from 1 to ``min_factor`` at ``total_steps`` (Loshchilov & Hutter, "SGDR", 2017;
  the warmup form of Goyal et al. 2017 and of ``transformers.get_cosine_schedule_with_warmup``).
* :class:`WarmupStableDecay`: warmup, a constant phase, then a decay over the last
  ``decay_steps`` to ``min_factor`` (Hu et al., "MiniCPM", 2024; Hägele et al., "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations", 2024, whose recommended
  ``decay="1-sqrt"`` is offered with ``"linear"`` and ``"cosine"``).
* :class:`InverseSqrt`: warmup, then ``sqrt(warmup_steps / t)`` (Vaswani et al. 2017, eq. 3
  with the peak normalised to ``base_lr``; fairseq's ``inverse_sqrt``).

>>> import torch, optimist
>>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
>>> sched = optimist.schedules.get("warmup_cosine", opt, total_steps=100, warmup_steps=10)
"""

from __future__ import annotations

import difflib
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import (
    ExponentialLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    StepLR,
)

__all__ = [
    "InverseSqrt",
    "WarmupCosine",
    "WarmupStableDecay",
    "canonical",
    "get",
    "lr_values",
    "names",
    "plot",
]

Scheduler = LRScheduler | ReduceLROnPlateau


def _check_steps(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return value


def _check_factor(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in the range [0, 1]. Received: {name}={value!r}")
    return float(value)


DECAYS: dict[str, Callable[[float], float]] = {
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: 0.5 * (1.0 + math.cos(math.pi * x)),
    "1-sqrt": lambda x: 1.0 - math.sqrt(x),
}
"""Decay shapes :math:`D(x)` from 1 at :math:`x = 0` to 0 at :math:`x = 1`."""


class _ClosedForm(LRScheduler):
    """A schedule whose learning rate after ``t`` steps is ``base_lr * factor(t)``.

    Subclasses set their own attributes, then call ``super().__init__`` with the shared ones
    (checked and set here); every attribute is part of ``state_dict()`` (torch saves the
    scheduler's ``__dict__`` but the optimizer).
    """

    warmup_steps: int
    warmup_start_factor: float

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        last_epoch: int,
        *,
        warmup_steps: int,
        warmup_start_factor: float,
        total_steps: int | None = None,
        min_factor: float | None = None,
    ) -> None:
        if total_steps is not None:
            self.total_steps = _check_steps("total_steps", total_steps, 1)
        self.warmup_steps = _check_steps("warmup_steps", warmup_steps)
        if min_factor is not None:
            self.min_factor = _check_factor("min_factor", min_factor)
        self.warmup_start_factor = _check_factor("warmup_start_factor", warmup_start_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, t: int) -> float:
        """The multiplier of the base learning rate after ``t`` steps."""
        if t < self.warmup_steps:  # linear from warmup_start_factor at t = 0 to 1 at warmup_steps
            s = self.warmup_start_factor
            return s + (1.0 - s) * t / self.warmup_steps
        return self.after_warmup(t)

    def after_warmup(self, t: int) -> float:
        """The multiplier at step ``t >= warmup_steps``."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


class WarmupCosine(_ClosedForm):
    r"""Linear warmup, then cosine decay.

    .. math::

        f(t) = \begin{cases}
            s + (1 - s)\,t / w & t < w \\
            m + (1 - m)\,\tfrac12\bigl(1 + \cos(\pi \min(1, \tfrac{t - w}{T - w}))\bigr) & t \ge w
        \end{cases}

    with :math:`w` = ``warmup_steps``, :math:`T` = ``total_steps``, :math:`s` =
    ``warmup_start_factor``, :math:`m` = ``min_factor``; after ``total_steps`` it stays at
    :math:`m`.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_factor: float = 0.0,
        warmup_start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_steps("total_steps", total_steps, 1)
        if _check_steps("warmup_steps", warmup_steps) >= total_steps:
            raise ValueError(
                f"`warmup_steps` must be < total_steps={total_steps}. "
                f"Received: warmup_steps={warmup_steps}"
            )
        super().__init__(
            optimizer, last_epoch, warmup_steps=warmup_steps, total_steps=total_steps,
            min_factor=min_factor, warmup_start_factor=warmup_start_factor,
        )  # fmt: skip

    def after_warmup(self, t: int) -> float:
        progress = min(1.0, (t - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        m = self.min_factor
        return m + (1.0 - m) * DECAYS["cosine"](progress)


class WarmupStableDecay(_ClosedForm):
    r"""Warmup, a stable phase at the peak, then a decay over the last ``decay_steps``.

    .. math::

        f(t) = \begin{cases}
            s + (1 - s)\,t / w & t < w \\
            1 & w \le t < T - d \\
            m + (1 - m)\,D\bigl(\min(1, \tfrac{t - (T - d)}{d})\bigr) & t \ge T - d
        \end{cases}

    with ``decay``: ``"linear"`` :math:`D(x) = 1 - x`, ``"cosine"`` :math:`D(x) = \tfrac12(1 +
    \cos\pi x)`, ``"1-sqrt"`` :math:`D(x) = 1 - \sqrt x` (Hägele et al. 2024, eq. 1). The
    default ``decay_steps`` is 20% of ``total_steps`` (their recommendation).
    """

    DECAYS = DECAYS

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        decay_steps: int | None = None,
        min_factor: float = 0.0,
        decay: str = "1-sqrt",
        warmup_start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _check_steps("total_steps", total_steps, 1)
        _check_steps("warmup_steps", warmup_steps)
        if decay_steps is None:
            decay_steps = max(1, round(0.2 * total_steps))
        self.decay_steps = _check_steps("decay_steps", decay_steps, 1)
        if warmup_steps + decay_steps > total_steps:
            raise ValueError(
                f"`warmup_steps + decay_steps` must be <= total_steps={total_steps}. "
                f"Received: warmup_steps={warmup_steps}, decay_steps={decay_steps}"
            )
        if decay not in DECAYS:
            raise ValueError(f"`decay` must be one of {sorted(DECAYS)}. Received: {decay!r}")
        self.decay = decay
        super().__init__(
            optimizer, last_epoch, warmup_steps=warmup_steps, total_steps=total_steps,
            min_factor=min_factor, warmup_start_factor=warmup_start_factor,
        )  # fmt: skip

    def after_warmup(self, t: int) -> float:
        start = self.total_steps - self.decay_steps
        if t < start:
            return 1.0
        x = min(1.0, (t - start) / self.decay_steps)
        m = self.min_factor
        return m + (1.0 - m) * self.DECAYS[self.decay](x)


class InverseSqrt(_ClosedForm):
    r"""Linear warmup, then the inverse square root of the step.

    .. math::

        f(t) = \begin{cases}
            s + (1 - s)\,t / w & t < w \\
            \sqrt{\max(w, 1) / \max(t, 1)} & t \ge w
        \end{cases}
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        super().__init__(
            optimizer, last_epoch, warmup_steps=warmup_steps,
            warmup_start_factor=warmup_start_factor,
        )  # fmt: skip

    def after_warmup(self, t: int) -> float:
        return math.sqrt(max(self.warmup_steps, 1) / max(t, 1))


_FACTORIES: dict[str, Callable[..., Scheduler]] = {
    "warmup_cosine": WarmupCosine,
    "wsd": WarmupStableDecay,
    "linear": LinearLR,
    "step": StepLR,
    "exponential": ExponentialLR,
    "one_cycle": OneCycleLR,
    "polynomial": PolynomialLR,
    "inverse_sqrt": InverseSqrt,
    "reduce_on_plateau": ReduceLROnPlateau,
}
_ALIASES = {
    "cosine": "warmup_cosine",
    "warmup_stable_decay": "wsd",
    "onecycle": "one_cycle",
    "plateau": "reduce_on_plateau",
    "rsqrt": "inverse_sqrt",
}


def names() -> list[str]:
    """The schedule names :func:`get` knows (aliases excluded), sorted."""
    return sorted(_FACTORIES)


def canonical(name: str) -> str:
    """The name of :func:`names` that ``name`` means (case, ``-`` and aliases such as
    ``cosine`` resolved); ``ValueError`` with close matches for an unknown one."""
    if not isinstance(name, str):
        raise ValueError(f"schedule name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        known = [*_FACTORIES, *_ALIASES]
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown schedule {name!r}.{hint} Known schedules: {', '.join(names())}")
    return key


def _factory(name: str) -> Callable[..., Scheduler]:
    return _FACTORIES[canonical(name)]


def get(name: str, optimizer: torch.optim.Optimizer, **kwargs: Any) -> Scheduler:
    """The schedule called ``name`` (case-insensitive, ``-`` or ``_``) over ``optimizer``.

    ``kwargs`` are the class's arguments (torch's for the torch classes, e.g. ``step`` takes
    ``step_size``, ``gamma``). Unknown names and arguments raise ``ValueError``.
    """
    factory = _factory(name)
    try:
        return factory(optimizer, **kwargs)
    except TypeError as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from None


def lr_values(
    name: str,
    steps: int,
    *,
    lr: float = 1.0,
    metrics: Sequence[float] | None = None,
    **kwargs: Any,
) -> list[float]:
    """The learning rate of the first ``steps`` optimizer steps under schedule ``name``.

    Drives a throwaway SGD optimizer with learning rate ``lr``; ``reduce_on_plateau`` needs the
    validation ``metrics`` (one per step).
    """
    _check_steps("steps", steps, 1)
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=lr)
    sched = get(name, opt, **kwargs)
    plateau = isinstance(sched, ReduceLROnPlateau)
    if plateau and (metrics is None or len(metrics) < steps):
        raise ValueError(f"reduce_on_plateau needs `metrics` with at least {steps} values")
    out = []
    for t in range(steps):
        out.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        if plateau:
            sched.step(metrics[t])  # type: ignore[index]
        else:
            sched.step()
    return out


def plot(
    name: str,
    path: str | os.PathLike[str],
    *,
    steps: int,
    lr: float = 1.0,
    metrics: Sequence[float] | None = None,
    **kwargs: Any,
) -> Path:
    """Draw schedule ``name`` over ``steps`` steps to ``path`` (``.png`` or ``.svg``), atomically.

    The file appears complete or not at all (written to a temporary file in the same folder,
    then renamed). Returns the path.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"plot path must end in .png or .svg. Received: {str(path)!r}")
    if not out.parent.is_dir():
        raise ValueError(f"plot folder does not exist: {str(out.parent)!r}")
    values = lr_values(name, steps, lr=lr, metrics=metrics, **kwargs)

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.plot(range(steps), values)
    args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    ax.set_title(f"{name}({args})" if args else name, fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=suffix[1:])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
