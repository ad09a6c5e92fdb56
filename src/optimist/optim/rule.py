"""An update rule: the single description of an optimizer that everything else derives from.

A :class:`Rule` holds what is particular to one optimizer and nothing else:

* its state slots (torch.optim's key names; each created as zeros of the parameter's shape in
  the storage format ``state_dtype`` picks, or from the first gradient for ``fresh`` slots);
* the host scalars of a step, computed in Python floats (double) exactly as torch's Python code
  computes them (bias corrections, step sizes): ``scalars(group, step, scalar_state)``;
* the readable per-tensor update in torch ops (``eager``): the specification, the fallback for
  devices and layouts the C++ engine does not take, and what the fused path is tested against;
* the id of its C++ functor in ``csrc/engine.cpp`` (``name``) and the variant ``flags`` chosen
  per group (AMSGrad, centered, ...).

What every rule shares is written once in :mod:`optimist.optim.engine`: the prologue (gradient
scaling and clipping, maximize, L2 penalty, decoupled weight decay with masks), the epilogue
(EMA of parameters), state storage codecs, pass 0 (gradient norms and finiteness), dispatch and
``state_dict`` handling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

__all__ = ["Rule", "ScalarState", "Slot"]

Group = Mapping[str, Any]


class ScalarState(Protocol):
    """Per-parameter scalar state besides ``step`` (e.g. NAdam's ``mu_product``).

    ``scale(key, factor)`` multiplies it in place (in the state tensor's precision, as torch's
    ``state[key] *= factor`` does) and returns the new value.
    """

    def scale(self, key: str, factor: float) -> float: ...


@dataclass(frozen=True)
class Slot:
    """One element-wise state tensor of a rule.

    Args:
        key: the state key (torch.optim's name, so checkpoints move both ways).
        when: the slot exists only for groups where ``when(group)`` is true (e.g. AMSGrad's
            ``max_exp_avg_sq``); None: always.
        fresh: created on the parameter's first step from the gradient instead of as zeros
            (SGD's momentum buffer, as torch: ``buf = clone(grad)``); the rule's functor gets
            the freshness as its variant flag ``Rule.fresh_flag``.
        initial: the param-group key whose value the slot starts at instead of zero (Adagrad's
            and FTRL's ``initial_accumulator_value``); None: zeros.
    """

    key: str
    when: Callable[[Group], bool] | None = None
    fresh: bool = False
    initial: str | None = None

    def active(self, group: Group) -> bool:
        return self.when is None or bool(self.when(group))


def _no_flags(group: Group) -> tuple[bool, ...]:
    return ()


def _never(group: Group) -> bool:
    return False


def _always(group: Group) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    """An element-wise optimizer update rule (see the module docstring).

    ``eager(param, grad, slots, h, flags)`` updates ``param`` and the ``slots`` (a list with
    one tensor per :attr:`slots` entry, None where inactive) in place, given the prepared
    gradient (after clipping, maximize and L2 penalty) and ``h = scalars(...)``; tensors are real
    views in the compute precision. ``decoupled(group)`` says whether ``weight_decay`` is
    decoupled (:math:`\\theta \\leftarrow \\theta(1 - \\gamma\\lambda)` before the update) or an L2
    penalty added to the gradient; ``engine_decay(group)`` False leaves ``weight_decay`` wholly to
    the rule's ``scalars`` (a decay the prologue cannot express: Adan's proximal division,
    Schedule-Free AdamW's decay after normalisation). ``scalar_state`` lists 0-dim state tensors
    besides ``step`` with their initial values. ``group_statistics`` names param-group entries
    that are counts or running statistics, not float hyperparameters (Schedule-Free's ``k``
    and ``weight_sum``, Prodigy's ``d_numerator``, SophiaG's batch size ``bs``): they may exceed
    float16's range, so the engine's float16-range check of hyperparameters skips them.
    """

    name: str
    slots: tuple[Slot, ...]
    scalars: Callable[[Group, float, ScalarState], tuple[float, ...]]
    eager: Callable[[Tensor, Tensor, list[Tensor | None], Sequence[float], Sequence[bool]], None]
    flags: Callable[[Group], tuple[bool, ...]] = _no_flags
    decoupled: Callable[[Group], bool] = _never
    engine_decay: Callable[[Group], bool] = _always
    has_step: bool = True
    scalar_state: tuple[tuple[str, float], ...] = ()
    fresh_flag: int = -1
    group_statistics: tuple[str, ...] = ()
    torch_foreach: Callable[..., None] | None = field(default=None, compare=False)
    """torch's functional of the same optimizer (``torch.optim.adam.adam``, ...), run with
    ``foreach=True`` on accelerators (:func:`optimist.optim.eager.run_torch_foreach` derives
    its arguments); None: the rule's eager function runs there."""
