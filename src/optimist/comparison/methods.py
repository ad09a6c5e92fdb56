"""Methods: an optimizer plus a batch regime, defined once in :data:`METHODS`.

A *method* is what a course calls "an optimization algorithm": full-batch gradient descent and
stochastic gradient descent use the same update rule and differ only in how much data each step
sees. Every method names an optimizer of :func:`optimist.optim.optimizer`, its keyword arguments,
a batch rule and a default learning rate.

Batch rules:

``full``
    every step uses the whole training set (on a 2-D test function: the exact gradient);
``one``
    every step uses a single example (on a 2-D function: the exact gradient plus Gaussian noise
    of standard deviation ``sigma``, the function's noise level);
``mini``
    every step uses :data:`MINIBATCH` examples (on a 2-D function: noise ``sigma / sqrt(32)``
    for ``minibatch`` only; the other mini-batch methods (momentum, Adagrad, ...) use the exact
    gradient there, so that their paths show the update rule alone).

Every optimizer of the registry is a method too, under its registry name (``lion``, ``muon``,
``schedule_free_adamw``, ...): mini-batch, with the settings of its row in
:data:`OPTIMIZER_DEFAULTS` (default learning rates on data tasks and on the 2-D functions, fixed
keyword arguments, which learning rates the tuned one sets); an optimizer registered without a
row gets its class's default learning rate. A method may carry a learning-rate schedule of
:mod:`optimist.schedules` (``adamw[schedule=warmup_cosine]``), sized to the trial's step budget
by :data:`SCHEDULE_SETTINGS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from optimist.optim import optimizer as build_optimizer
from optimist.optim import registry, schedules

__all__ = [
    "MINIBATCH",
    "METHODS",
    "DEFAULT_METHODS",
    "OPTIMIZER_DEFAULTS",
    "SCHEDULE_SETTINGS",
    "Method",
    "MethodDefaults",
    "evaluation_weights",
    "get_method",
    "parse_method",
    "with_batch_size",
    "with_schedule",
]

MINIBATCH = 32
"""Examples per step for the ``mini`` batch rule."""


@dataclass(frozen=True)
class Method:
    """One row of the method table."""

    name: str
    optimizer: str
    """Name for :func:`optimist.optim.optimizer`."""
    kwargs: dict[str, Any]
    batch: str
    """``"full"``, ``"one"`` or ``"mini"``."""
    default_lr: float
    description: str
    noisy_on_functions: bool = False
    """Whether the 2-D test functions add sampling noise to this method's gradient."""
    in_default_study: bool = True
    mini_batch: int = MINIBATCH
    """Examples per step for the ``mini`` batch rule (``--batch-size`` or ``name[batch=N]``)."""
    function_lr: float | None = None
    """Default learning rate on the 2-D functions that list none for this method."""
    lr_keys: tuple[str, ...] = ("lr",)
    """The optimizer arguments the (tuned) learning rate sets, e.g. Muon's ``lr`` and
    ``adamw_lr`` (one not given in ``kwargs``)."""
    schedule: str | None = None
    """A schedule name of :mod:`optimist.schedules`, sized to the trial by
    :data:`SCHEDULE_SETTINGS`; ``None``: a constant learning rate."""

    def batch_size(self, n_train: int) -> int:
        """Examples per step on a training set of ``n_train`` examples."""
        if self.batch == "full":
            return n_train
        if self.batch == "one":
            return 1
        return min(self.mini_batch, n_train)

    def noise_scale(self, sigma: float) -> float:
        """Gradient-noise standard deviation on a 2-D function whose one-example noise is sigma."""
        if not self.noisy_on_functions:
            return 0.0
        if self.batch == "one":
            return sigma
        return sigma / math.sqrt(self.mini_batch)

    def build(
        self, params: Iterable[torch.Tensor], lr: float, total_steps: int | None = None
    ) -> torch.optim.Optimizer:
        """The optimizer over ``params`` with learning rate ``lr``; with a schedule and the
        run's ``total_steps``, its scheduler advances after every ``step()`` (without
        ``total_steps``: the bare optimizer, as argument checks build it)."""
        tied = {key: lr for key in self.lr_keys if key not in self.kwargs}
        opt = build_optimizer(self.optimizer, params, **{**self.kwargs, **tied, "lr": lr})
        if self.schedule is not None and total_steps is not None:
            sched = schedules.get(
                self.schedule, opt, **SCHEDULE_SETTINGS[self.schedule](total_steps, lr)
            )
            opt.register_step_post_hook(lambda *_: sched.step())
        return opt

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used in ``results.json``."""
        return {
            "optimizer": self.optimizer,
            "kwargs": dict(self.kwargs),
            "batch": self.batch,
            "batch_size": {"full": "all", "one": 1, "mini": self.mini_batch}[self.batch],
            "default_lr": self.default_lr,
            "noisy_on_functions": self.noisy_on_functions,
            "description": self.description,
            "schedule": self.schedule,
            "lr_keys": list(self.lr_keys),
        }


_ROWS = (
    Method(
        "gd",
        "gd",
        {},
        "full",
        0.5,
        "Full-batch gradient descent: one exact step per pass over the data.",
    ),
    Method(
        "sgd",
        "sgd",
        {},
        "one",
        0.01,
        "Stochastic gradient descent, one example per step: cheap, noisy steps.",
        noisy_on_functions=True,
    ),
    Method(
        "minibatch",
        "sgd",
        {},
        "mini",
        0.1,
        f"Mini-batch gradient descent, {MINIBATCH} examples per step.",
        noisy_on_functions=True,
    ),
    Method(
        "momentum",
        "momentum",
        {"momentum": 0.9},
        "mini",
        0.01,
        "SGD with heavy-ball momentum 0.9: a running sum of gradients smooths the path.",
    ),
    Method(
        "adagrad",
        "adagrad",
        {},
        "mini",
        0.05,
        "Adagrad: per-parameter steps shrink with the sum of squared gradients.",
    ),
    Method(
        "rmsprop",
        "rmsprop",
        {},
        "mini",
        1e-3,
        "RMSprop: per-parameter steps scaled by a running RMS of gradients.",
    ),
    Method(
        "adadelta",
        "adadelta",
        {},
        "mini",
        1.0,
        "Adadelta: RMSprop with steps in the units of the parameters (lr 1 by design).",
    ),
    Method(
        "adam",
        "adam",
        {},
        "mini",
        1e-3,
        "Adam: momentum plus RMSprop scaling, with bias correction.",
    ),
    Method(
        "nesterov",
        "nesterov",
        {"momentum": 0.9},
        "mini",
        0.01,
        "SGD with Nesterov momentum 0.9: momentum that looks ahead.",
        in_default_study=False,
    ),
    Method(
        "adamw",
        "adamw",
        {},
        "mini",
        1e-3,
        "AdamW: Adam with decoupled weight decay 0.01.",
        in_default_study=False,
    ),
    Method(
        "nadam",
        "nadam",
        {},
        "mini",
        2e-3,
        "NAdam: Adam with Nesterov momentum.",
        in_default_study=False,
    ),
    Method(
        "radam",
        "radam",
        {},
        "mini",
        1e-3,
        "RAdam: Adam with a rectified, warm-up free adaptive step.",
        in_default_study=False,
    ),
    Method(
        "adamax",
        "adamax",
        {},
        "mini",
        2e-3,
        "Adamax: Adam with the infinity norm in place of the second moment.",
        in_default_study=False,
    ),
)


@dataclass(frozen=True)
class MethodDefaults:
    """How ``optimist compare`` runs one registered optimizer (a row of
    :data:`OPTIMIZER_DEFAULTS`)."""

    lr: float
    """Default learning rate on data tasks (the centre of the tuning grid)."""
    function_lr: float
    """Default learning rate on the 2-D test functions."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    lr_keys: tuple[str, ...] = ("lr",)
    note: str = ""
    """Appended to the registry's summary in the method's description."""


OPTIMIZER_DEFAULTS: dict[str, MethodDefaults] = {
    # function_lr: the best of a half-decade grid 1e-4..10 by the tuning objective summed over
    # the four 2-D functions (seed 0, default steps); data LRs: the authors' / usual defaults.
    "lion": MethodDefaults(
        1e-4, 0.03, note="LR 10x below AdamW's: a sign step moves every coordinate by lr."
    ),
    "adopt": MethodDefaults(1e-3, 3.0),
    "ademamix": MethodDefaults(1e-3, 1.0),
    "adan": MethodDefaults(1e-3, 1.0),
    "schedule_free_adamw": MethodDefaults(
        2.5e-3, 1.0, note="Evaluated at its averaged weights (eval())."
    ),
    "schedule_free_sgd": MethodDefaults(
        0.1, 3e-3, note="Evaluated at its averaged weights (eval())."
    ),
    "muon": MethodDefaults(
        1e-3,
        0.1,
        kwargs={"adjust_lr_fn": "match_rms_adamw"},
        lr_keys=("lr", "adamw_lr"),
        note="Update RMS matched to AdamW's, so one LR serves the matrices and the AdamW "
        "fallback (biases, vectors; the whole of a 2-D test function).",
    ),
    "adafactor": MethodDefaults(1e-2, 0.1, note="LR relative to the weights' RMS."),
    "lamb": MethodDefaults(1e-3, 0.1),
    "lars": MethodDefaults(1.0, 10.0, note="Steps of lr * 0.001 * ||w|| / ||g||."),
    "soap": MethodDefaults(
        3e-3, 0.1, note="On a vector (a 2-D test function) it is Adam without preconditioner."
    ),
    # The three below: function_lr the best of the same grid by the sum over the four functions
    # of log10(final gap) (seed 0, default steps), a simpler objective than the rows above.
    "prodigy": MethodDefaults(
        1.0, 0.3, note="lr multiplies Prodigy's own step-size estimate d: 1 by design."
    ),
    "sophia": MethodDefaults(
        1e-4,
        1e-2,
        note="On data tasks fit refreshes the curvature estimate every 10 steps (labels sampled "
        "from the model, Alg. 3) for cross-entropy losses; on regression tasks and 2-D functions "
        "it stays at its start: clipped sign momentum.",
    ),
    "lookahead": MethodDefaults(1e-3, 1.0, note="Over Adam (k=5, alpha=0.5)."),
}
"""Compare's settings per registered optimizer name; a new optimizer needs only a row."""


def _registry_method(name: str) -> Method:
    """The mini-batch method of registered optimizer ``name``, with its row's settings (or,
    without a row, its class's default learning rate everywhere)."""
    entry = registry.spec(name)
    row = OPTIMIZER_DEFAULTS.get(entry.name)
    if row is None:
        lr = entry.defaults.get("lr", _class_lr(entry.factory))
        row = MethodDefaults(lr, lr)
    text = f"{entry.summary} {row.note}".strip()
    return Method(
        entry.name,
        entry.name,
        dict(row.kwargs),
        "mini",
        row.lr,
        text,
        in_default_study=False,
        function_lr=row.function_lr,
        lr_keys=row.lr_keys,
    )


def _class_lr(factory: Callable[..., Any]) -> float:
    import inspect

    try:
        default = inspect.signature(factory).parameters["lr"].default
    except (KeyError, TypeError, ValueError):
        return 1e-3
    return float(default) if isinstance(default, int | float) else 1e-3


METHODS: dict[str, Method] = {m.name: m for m in _ROWS}
METHODS.update(
    {name: _registry_method(name) for name in registry.optimizers() if name not in METHODS}
)
"""Every method, by name: the course's rows, then every other registered optimizer."""

DEFAULT_METHODS: tuple[str, ...] = tuple(m.name for m in _ROWS if m.in_default_study)
"""The eight methods every course teaches, in teaching order."""


def _warmup(total: int) -> int:
    return round(0.05 * total)


SCHEDULE_SETTINGS: dict[str, Callable[[int, float], dict[str, Any]]] = {
    "warmup_cosine": lambda t, lr: {"total_steps": t, "warmup_steps": _warmup(t)},
    "wsd": lambda t, lr: {"total_steps": t, "warmup_steps": _warmup(t)},
    "inverse_sqrt": lambda t, lr: {"warmup_steps": _warmup(t)},
    "linear": lambda t, lr: {"start_factor": 1.0, "end_factor": 0.0, "total_iters": t},
    "polynomial": lambda t, lr: {"total_iters": t, "power": 2.0},
    "step": lambda t, lr: {"step_size": max(1, t // 3), "gamma": 0.1},
    "exponential": lambda t, lr: {"gamma": 0.01 ** (1.0 / t)},
    "one_cycle": lambda t, lr: {"max_lr": lr, "total_steps": t + 1},
}
"""Each schedule's arguments for a run of ``t`` steps at peak rate ``lr``: warmup over the first
5% (``warmup_cosine`` to 0, ``wsd`` with its last 20% of decay, ``inverse_sqrt``); ``linear``
and ``polynomial`` (power 2) to 0 at the end; ``step``: x0.1 every third of the run;
``exponential``: x0.01 over the run; ``one_cycle``: torch's, peaking at ``lr``.
``reduce_on_plateau`` is not offered: it needs a metric at every step."""


def _schedule_name(text: str) -> str:
    """The canonical schedule name of ``text`` (aliases such as ``cosine`` accepted)."""
    try:
        name = schedules.canonical(text)
    except ValueError as exc:
        raise KeyError(str(exc)) from None
    if name not in SCHEDULE_SETTINGS:
        raise KeyError(
            f"schedule {text!r} cannot run in compare (it needs a metric at every step); "
            f"use one of {', '.join(SCHEDULE_SETTINGS)}"
        )
    return name


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _value(text: str) -> Any:
    """A setting's value: a number, true/false, a tuple written ``a:b`` (``betas=0.9:0.99``),
    or a word (``adjust_lr_fn=original``)."""
    if ":" in text:
        return tuple(_value(part) for part in text.split(":"))
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if _WORD.fullmatch(text):
        return text
    raise KeyError(f"setting value {text!r} is not a number, true/false, a word or a:b") from None


def parse_method(spec: str) -> Method:
    """A method with settings: ``adam[weight_decay=1e-4,batch=64]`` is the ``adam`` row with
    those optimizer keyword arguments and 64 examples per step; ``batch`` takes a number,
    ``1`` or ``full``; ``schedule`` names a learning-rate schedule (``adamw[schedule=wsd]``,
    see :data:`SCHEDULE_SETTINGS`; ``none``: a constant rate). The settings become part of the
    method's name, so results say exactly what ran. ``KeyError`` for an unknown method or a
    malformed setting."""
    spec = spec.strip()
    if "[" not in spec:
        return get_method(spec)
    if not spec.endswith("]"):
        raise KeyError(f"method {spec!r}: settings go in brackets, e.g. adam[weight_decay=1e-4]")
    base, inner = spec[:-1].split("[", 1)
    method = get_method(base)
    kwargs = dict(method.kwargs)
    changes: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in inner.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise KeyError(f"method {spec!r}: expected key=value, got {part!r}")
        if key == "batch":
            raw = raw.strip().lower()
            if raw in ("full", "all"):
                changes["batch"] = "full"
            elif raw == "1":
                changes["batch"] = "one"
            else:
                size = _value(raw)
                if not isinstance(size, int) or size < 2:
                    raise KeyError(f"method {spec!r}: batch must be 1, full or a whole number")
                changes.update(batch="mini", mini_batch=size)
        elif key == "schedule":  # "none": a constant rate, also under --schedule
            word = raw.strip()
            changes["schedule"] = None if word.lower() == "none" else _schedule_name(word)
        else:
            kwargs[key] = _value(raw.strip())
    if changes.get("schedule"):
        changes["description"] = f"{method.description} LR schedule: {changes['schedule']}."
    new = dataclasses.replace(method, name=spec, kwargs=kwargs, **changes)
    try:  # the optimizer checks its own arguments (a clear error names the bad one)
        new.build([torch.zeros(1, requires_grad=True)], 1e-3, total_steps=10)
    except (TypeError, ValueError) as exc:
        raise KeyError(f"method {spec!r}: {exc}") from None
    return new


def with_schedule(spec: str, schedule: str | None) -> str:
    """Method ``spec`` with ``schedule`` added to its settings (``--schedule``): ``adam`` becomes
    ``adam[schedule=wsd]``; a spec that names its own schedule keeps it."""
    spec = spec.strip()
    if schedule is None or "schedule=" in spec:
        return spec
    if spec.endswith("]"):
        return f"{spec[:-1]},schedule={schedule}]"
    return f"{spec}[schedule={schedule}]"


@contextlib.contextmanager
def evaluation_weights(optimizer: Any) -> Iterator[None]:
    """Inside, the parameters hold the weights to evaluate: Schedule-Free's average (its
    ``eval()``; afterwards ``train()`` if it was in train mode); other optimizers change
    nothing."""
    swap = callable(getattr(optimizer, "eval", None)) and callable(
        getattr(optimizer, "train", None)
    )
    was_training = bool(getattr(optimizer, "training", True))
    if swap:
        optimizer.eval()
    try:
        yield
    finally:
        if swap and was_training:
            optimizer.train()


def with_batch_size(method: Method, batch_size: int | None) -> Method:
    """``method`` with ``batch_size`` examples per step if it uses mini-batches (the rules of
    full-batch GD and batch-1 SGD are their batch size, so they keep it)."""
    if batch_size is None or method.batch != "mini" or "batch=" in method.name:
        return method
    return dataclasses.replace(method, mini_batch=int(batch_size))


def get_method(name: str) -> Method:
    """The method called ``name`` (or written ``name[settings]``, see :func:`parse_method`);
    ``KeyError`` lists the known ones."""
    if "[" in name:
        return parse_method(name)
    if name in METHODS:
        return METHODS[name]
    if name in registry.optimizers():  # registered after import
        return _registry_method(name)
    raise KeyError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None
