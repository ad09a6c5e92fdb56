"""Optax-style gradient transformations that fuse into the engine's single pass.

>>> import torch, optimist
>>> from optimist import transforms as T
>>> model = torch.nn.Linear(4, 2)
>>> opt = optimist.chain(
...     T.clip_by_global_norm(1.0),
...     T.scale_by_adam(b1=0.9, b2=0.999),
...     T.add_decayed_weights(0.01, mask=T.exclude("*bias")),
...     T.ema(0.999),
... )(model.named_parameters(), lr=1e-3)

``chain(...)`` returns a factory; calling it with parameters (and the rule's hyperparameters,
``lr`` first) builds a ``torch.optim.Optimizer`` (param groups, ``state_dict``, schedulers and
hooks work as for any optimizer). The chain holds exactly one *rule* (``scale_by_adam``,
``scale_by_sgd``, ..., or ``scale_by(optimist.optim.X, ...)`` for any optimist optimizer) and any
number of these, as in Optax the position in the chain gives the meaning:

* ``clip_by_global_norm(c)``: :math:`g \\leftarrow g \\min(1, c / (\\lVert g\\rVert_2 + 10^{-6}))`
  over all parameters (torch's ``clip_grad_norm_``); one extra read of the gradients (pass 0).
* ``clip_by_value(c)``: :math:`g \\leftarrow \\mathrm{clip}(g, -c, c)`.
* ``add_decayed_weights(wd, mask)``: before the rule an L2 penalty
  :math:`g \\leftarrow g + wd\\,\\theta`; after it decoupled decay
  :math:`\\theta \\leftarrow \\theta(1 - \\gamma\\, wd)` (AdamW). ``mask`` picks the parameters
  that decay (see :func:`mask_matches`).
* ``skip_nonfinite()``: skip (and count) a step whose gradients hold NaN/inf.
* ``accumulate(k)``: one update per ``k`` calls of ``step()``, with the mean gradient; clipping
  and decay once per real step (Optax's ``MultiSteps``).
* ``ema(d)``: keep :math:`\\bar\\theta \\leftarrow d\\bar\\theta + (1-d)\\theta` after each update;
  ``opt.swap_ema()`` swaps it in for evaluation.
* ``scale_by_schedule(fn)``: multiply the learning rate by ``fn(step_count)``.
* ``lookahead(k, alpha)``, the last link: Lookahead (Zhang et al. 2019) around the optimizer the
  rest of the chain builds (Optax's ``optax.lookahead``); the chain then returns a
  :class:`~optimist.optim.lookahead.Lookahead` whose ``.optimizer`` is that inner optimizer.

None of these costs a memory pass of its own: the element-wise ones run inside the engine's
prologue/epilogue, the norm in pass 0.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = [
    "Chain",
    "ChainConfig",
    "accumulate",
    "add_decayed_weights",
    "chain",
    "clip_by_global_norm",
    "clip_by_value",
    "ema",
    "exclude",
    "lookahead",
    "mask_matches",
    "no_bias_or_norm",
    "scale_by",
    "scale_by_adam",
    "scale_by_lion",
    "scale_by_rms",
    "scale_by_schedule",
    "scale_by_sgd",
    "skip_nonfinite",
]

Mask = None | str | Iterable[str] | Callable[..., bool]


@dataclass
class ChainConfig:
    """What a chain asks of the engine around its rule (an empty config: plain optimizer)."""

    clip_norm: float | None = None
    clip_value: float | None = None
    clip_first: bool = True
    decay_before: list[tuple[float, Mask]] = field(default_factory=list)
    decay_after: list[tuple[float, Mask]] = field(default_factory=list)
    accumulate: int = 1
    ema: float | None = None
    schedule: Callable[[int], float] | None = None

    def is_empty(self) -> bool:
        return self == ChainConfig()


@dataclass(frozen=True)
class Transform:
    """One link of a chain: ``kind`` and its arguments."""

    kind: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def _positive(name: str, value: Any) -> float:
    from optimist.optim.base import _number

    x = _number(name, value)
    if not 0.0 < x < float("inf"):
        raise ValueError(f"Invalid {name}: {value} ({name} must be a finite number > 0)")
    return x


def clip_by_global_norm(max_norm: float) -> Transform:
    """Scale all gradients so that their joint L2 norm is at most ``max_norm``."""
    return Transform("clip_norm", (_positive("max_norm", max_norm),))


def clip_by_value(max_delta: float) -> Transform:
    """Clamp every gradient element to ``[-max_delta, max_delta]``."""
    return Transform("clip_value", (_positive("max_delta", max_delta),))


def add_decayed_weights(weight_decay: float, mask: Mask = None) -> Transform:
    """Weight decay for the parameters ``mask`` selects (L2 before the rule, decoupled after)."""
    from optimist.optim.base import check_nonnegative

    check_nonnegative("weight_decay", weight_decay)
    return Transform("decay", (float(weight_decay), mask))


def skip_nonfinite() -> Transform:
    """Skip (and count in ``skipped_steps``) steps whose gradients hold NaN or inf."""
    return Transform("skip")


def accumulate(every: int) -> Transform:
    """Apply one update every ``every`` calls of ``step()``, with the mean gradient."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"Invalid every: {every!r} (every must be an integer >= 1)")
    return Transform("accumulate", (every,))


def ema(decay: float) -> Transform:
    """Keep an exponential moving average of the parameters (``swap_ema()`` to use it)."""
    from optimist.optim.base import check_unit_interval

    check_unit_interval("decay", decay)
    return Transform("ema", (float(decay),))


def scale_by_schedule(schedule: Callable[[int], float]) -> Transform:
    """Multiply the learning rate by ``schedule(count)``, count = real steps taken so far."""
    if not callable(schedule):
        raise ValueError(f"Invalid schedule: {schedule!r} (a callable step -> multiplier)")
    return Transform("schedule", (schedule,))


def lookahead(k: int = 5, alpha: float = 0.5, *, reset_state: bool = False) -> Transform:
    """Lookahead around the rest of the chain: every ``k`` applied steps the slow weights move
    ``alpha`` of the way to the fast ones and the fast weights restart there (must be the last
    link; see :class:`~optimist.optim.lookahead.Lookahead` for the arguments)."""
    from optimist.optim.lookahead import check_arguments

    check_arguments(k, alpha, reset_state)
    return Transform("lookahead", (k, float(alpha)), {"reset_state": reset_state})


def scale_by(optimizer_class: type, **hyperparameters: Any) -> Transform:
    """The update rule of any optimist optimizer class, with its hyperparameters."""
    from optimist.optim.engine import RuleOptimizer

    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, RuleOptimizer)):
        raise ValueError(f"scale_by needs an optimist optimizer class, got {optimizer_class!r}")
    return Transform("rule", (optimizer_class,), hyperparameters)


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, amsgrad: bool = False
) -> Transform:
    """Adam's direction (Kingma & Ba 2014, Algorithm 1), torch's epsilon placement."""
    from optimist.optim.adam import Adam

    return scale_by(Adam, betas=(b1, b2), eps=eps, amsgrad=amsgrad)


def scale_by_sgd(momentum: float = 0.0, *, nesterov: bool = False) -> Transform:
    """SGD's direction, with (Nesterov) momentum as torch.optim.SGD."""
    from optimist.optim.sgd import SGD

    return scale_by(SGD, momentum=momentum, nesterov=nesterov)


def scale_by_rms(alpha: float = 0.99, eps: float = 1e-8) -> Transform:
    """RMSprop's direction (torch.optim.RMSprop)."""
    from optimist.optim.rmsprop import RMSprop

    return scale_by(RMSprop, alpha=alpha, eps=eps)


def scale_by_lion(b1: float = 0.9, b2: float = 0.99) -> Transform:
    """Lion's direction (Chen et al. 2023)."""
    from optimist.optim.lion import Lion

    return scale_by(Lion, betas=(b1, b2))


# --- masks --------------------------------------------------------------------------------------


def exclude(*patterns: str) -> Callable[[str, Tensor], bool]:
    """A mask selecting every parameter whose name matches none of ``patterns`` (fnmatch)."""

    def mask(name: str, param: Tensor) -> bool:
        return not any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    mask.__name__ = f"exclude{patterns!r}"
    return mask


def no_bias_or_norm(param: Tensor) -> bool:
    """A mask selecting matrices and larger (no decay on biases and normalisation scales)."""
    return param.dim() >= 2


def mask_matches(mask: Mask, param: Tensor, name: str | None) -> bool:
    """Whether ``mask`` selects ``param`` (named ``name``; None when params were not named).

    ``mask`` is None (every parameter), a name pattern or a list of them (fnmatch, e.g.
    ``"*.weight"``; needs ``model.named_parameters()``), or a callable taking ``(param)`` or
    ``(name, param)`` and returning a bool.
    """
    if mask is None:
        return True
    if callable(mask):
        try:
            n_args = len(inspect.signature(mask).parameters)
        except (TypeError, ValueError):
            n_args = 1
        if n_args >= 2:
            return bool(mask(name, param))
        return bool(mask(param))
    patterns = [mask] if isinstance(mask, str) else list(mask)
    if name is None:
        raise ValueError(
            "a weight-decay mask given as name patterns needs named parameters: pass "
            "model.named_parameters() to the optimizer"
        )
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


# --- chain --------------------------------------------------------------------------------------


class Chain:
    """A chain of transforms ending in one rule; call it with params to build the optimizer."""

    def __init__(self, *transforms: Transform) -> None:
        for t in transforms:
            if not isinstance(t, Transform):
                raise ValueError(f"chain() takes transforms, got {t!r}")
        rules = [i for i, t in enumerate(transforms) if t.kind == "rule"]
        if len(rules) != 1:
            raise ValueError(
                "a chain needs exactly one update rule (scale_by_adam(), scale_by_sgd(), "
                f"scale_by(optimist.optim.X, ...)), got {len(rules)}"
            )
        wrappers = [i for i, t in enumerate(transforms) if t.kind == "lookahead"]
        if wrappers and wrappers != [len(transforms) - 1]:
            raise ValueError(
                "lookahead(...) wraps the whole chain: give it once, as the last link, got it at "
                f"position(s) {wrappers} of {len(transforms)}"
            )
        self.lookahead = transforms[-1] if wrappers else None
        self.transforms = transforms
        position = rules[0]
        (self.optimizer_class,) = transforms[position].args
        self.hyperparameters = dict(transforms[position].kwargs)
        config = ChainConfig()
        self.skip_nonfinite = False
        seen_norm = False
        for i, t in enumerate(transforms):
            if t.kind == "clip_norm":
                config.clip_norm = t.args[0]
                seen_norm = True
            elif t.kind == "clip_value":
                config.clip_value = t.args[0]
                config.clip_first = not seen_norm
            elif t.kind == "decay":
                (config.decay_before if i < position else config.decay_after).append(t.args)
            elif t.kind == "skip":
                self.skip_nonfinite = True
            elif t.kind == "accumulate":
                config.accumulate = t.args[0]
            elif t.kind == "ema":
                config.ema = t.args[0]
            elif t.kind == "schedule":
                config.schedule = t.args[0]
        self.config = config

    def __call__(self, params: Any, **hyperparameters: Any) -> Any:
        kwargs = {**self.hyperparameters, **hyperparameters}
        kwargs.setdefault("skip_nonfinite", self.skip_nonfinite)
        optimizer = self.optimizer_class(params, chain=self.config, **kwargs)
        if self.lookahead is None:
            return optimizer
        from optimist.optim.lookahead import Lookahead

        return Lookahead(optimizer, *self.lookahead.args, **self.lookahead.kwargs)

    def __repr__(self) -> str:
        return f"chain({', '.join(t.kind for t in self.transforms)})"


def chain(*transforms: Transform) -> Chain:
    """Compose transforms (Optax's ``optax.chain``) into an optimizer factory (see module doc)."""
    return Chain(*transforms)
