r"""Schedule-Free AdamW and SGD: no learning-rate schedule, an online average instead.

Three sequences: gradients are taken at :math:`y`, the base iterate :math:`z` takes plain
(normalised) gradient steps, and :math:`x`, the weighted average of the :math:`z`, is what to
evaluate. The parameter holds :math:`y` in train mode and :math:`x` in eval mode:

.. math::

    \hat g_t &\leftarrow g_t / (\sqrt{v_t / (1 - \beta_2^t)} + \epsilon) + \lambda y_t
        \quad\text{(AdamW; SGD: } \hat g_t = g_t + \lambda y_t) \\
    c_{t+1} &\leftarrow w_t / \textstyle\sum_{i \le t} w_i, \quad
        w_t = t^r\, \gamma_{\max}^{p} \\
    y_{t+1} &\leftarrow (1 - c_{t+1})\, y_t + c_{t+1} z_t + \gamma_t(\beta_1 (1 - c_{t+1}) - 1)
        \hat g_t \\
    z_{t+1} &\leftarrow z_t - \gamma_t \hat g_t

which is Defazio et al., "The Road Less Scheduled" (NeurIPS 2024), Algorithm 1 (eqs. 1-3) with
:math:`x` eliminated as the authors' ``schedulefree`` package does (``AdamWScheduleFree``,
``SGDScheduleFree``, 1.4.1, the tests' reference, as is Optax's
``contrib.schedule_free_adamw``): :math:`\gamma_t` is ``lr`` after the linear
``warmup_steps``, the average weights :math:`w_t` use ``r`` and ``weight_lr_power`` :math:`p`,
the AdamW decay is taken at :math:`y` after normalisation, SGD's is an L2 penalty. ``eval()``
sets the parameters to :math:`x = (y - (1 - \beta_1) z) / \beta_1`, ``train()`` back to
:math:`y`; ``step()`` in eval mode raises. Differences from the package: optimizers start in
train mode (theirs need a first ``train()`` call), and the gradient is left untouched (theirs
divides it in place). State keys and group keys as theirs (``z``, ``exp_avg_sq``; ``k``,
``train_mode``, ``weight_sum``, ``lr_max``, ``scheduled_lr``), so checkpoints move both ways;
``train_mode`` is part of ``state_dict()``, so a checkpoint of the model and the optimizer taken
in either mode resumes the same run. ``state_dtype`` applies to ``z`` too: keep it float32 (an
int8 ``z`` rounds the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim import codecs
from optimist.optim.base import (
    ParamsT,
    check_unit_interval,
    init_arguments,
    scalar,
)
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["SCHEDULE_FREE", "ScheduleFreeAdamW", "ScheduleFreeSGD"]


def _is_adam(group: Any) -> bool:
    return "betas" in group


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    k = group["k"]  # steps taken before this one
    weight = (k + 1) ** group["r"] * group["lr_max"] ** group["weight_lr_power"]
    ckp1 = weight / group["weight_sum"] if group["weight_sum"] else 0.0
    lr = group["scheduled_lr"]
    if _is_adam(group):
        beta1, beta2 = (scalar(b) for b in group["betas"])
        bc2, wd = 1 - beta2 ** (k + 1), scalar(group["weight_decay"])
    else:
        beta1, beta2, bc2, wd = scalar(group["momentum"]), 0.0, 1.0, 0.0
    y_lr = lr * (beta1 * (1 - ckp1) - 1)
    return (ckp1, 1 - ckp1, y_lr, -lr, beta2, 1 - beta2, bc2, group.get("eps", 0.0), wd)


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    ckp1, _, y_lr, neg_lr, beta2, one_minus_beta2, bc2, eps, wd = h
    adam, fresh = flags
    z, v = s
    if fresh:
        z.copy_(p)
    if adam:
        v.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)
        g = g.div(v.div(bc2).sqrt_().add_(eps))
        if wd != 0:
            g.add_(p, alpha=wd)
    p.lerp_(z, ckp1)
    p.add_(g, alpha=y_lr)
    z.add_(g, alpha=neg_lr)


SCHEDULE_FREE = Rule(
    name="schedule_free",
    slots=(Slot("z", fresh=True), Slot("exp_avg_sq", when=_is_adam)),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (_is_adam(g), False),
    engine_decay=lambda g: not _is_adam(g),  # AdamW's decay comes after normalisation
    has_step=False,
    fresh_flag=1,
    group_statistics=("k", "weight_sum", "lr_max", "scheduled_lr"),
)


class _ScheduleFree(RuleOptimizer):
    """What both Schedule-Free optimizers share: the average's weights and the two modes."""

    rule = SCHEDULE_FREE
    nonnegative = ("weight_decay", "r", "weight_lr_power")

    def _beta1(self, group: dict[str, Any]) -> float:
        return scalar(group["betas"][0] if _is_adam(group) else group["momentum"])

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        w = group["warmup_steps"]
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"Invalid warmup_steps: {w!r} (warmup_steps must be an integer >= 0)")

    def step(self, closure: Any = None) -> float | None:  # type: ignore[override]
        """One step; the optimizer must be in train mode (see :meth:`train`)."""
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                f"{type(self).__name__}.step() was called in eval mode; call optimizer.train() "
                "before training steps and optimizer.eval() before evaluating or saving weights"
            )
        return super().step(closure)

    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        k, warmup = group["k"], group["warmup_steps"]
        lr = scalar(group["lr"]) * lr_multiplier * ((k + 1) / warmup if k < warmup else 1.0)
        group["scheduled_lr"] = lr
        group["lr_max"] = lr_max = max(lr, group["lr_max"])
        group["weight_sum"] += (k + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
        updated = super()._step_group(group, grad_scale=grad_scale, lr_multiplier=lr_multiplier)
        group["k"] = k + 1
        return updated

    @torch.no_grad()
    def _move(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group["train_mode"]) == to_train:
                continue
            beta1 = self._beta1(group)
            weight = 1 - beta1 if to_train else 1 - 1 / beta1
            for p in group["params"]:
                state = self.state.get(p, {})
                if "z" in state:
                    z = state["z"]
                    if z.dtype != p.dtype:
                        z = codecs.decode(z, state.get("z_absmax"), p.dtype).reshape(p.shape)
                    p.lerp_(z.to(p.device), weight)
            group["train_mode"] = to_train

    def train(self) -> None:
        """Parameters to :math:`y`, where gradients are taken (the mode training needs)."""
        self._move(True)

    def eval(self) -> None:
        """Parameters to :math:`x`, the average to evaluate, save or deploy."""
        self._move(False)

    @property
    def training(self) -> bool:
        """True in train mode (parameters hold :math:`y`), False in eval mode (:math:`x`)."""
        return all(group["train_mode"] for group in self.param_groups)


# per-group schedule state besides the hyperparameters (in param_groups, so state_dict keeps it)
_SCHEDULE_STATE = dict(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-Free AdamW (Defazio et al. 2024); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 0.0025, as the authors').
        betas: :math:`(\\beta_1, \\beta_2)`: the interpolation between :math:`z` and
            :math:`x`, and the second-moment decay.
        eps: :math:`\\epsilon` added to the denominator.
        weight_decay: :math:`\\lambda`, taken at :math:`y` after normalisation.
        warmup_steps: linear warmup of the learning rate.
        r, weight_lr_power: weights of the average, :math:`(t^r) \\gamma_{\\max}^p`.
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    nonnegative = (*_ScheduleFree.nonnegative, "eps")
    examples = (
        {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5},
        {"lr": 0.01, "r": 1.0, "weight_lr_power": 1.0, "betas": (0.8, 0.9)},
    )

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals(), **_SCHEDULE_STATE))

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        if not scalar(group["betas"][0]) > 0:
            raise ValueError(
                f"Invalid beta parameter at index 0: {group['betas'][0]} (must be > 0)"
            )


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-Free SGD (Defazio et al. 2024); see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\gamma` (default 1.0, as the authors').
        momentum: :math:`\\beta_1` in (0, 1): the interpolation between :math:`z` and :math:`x`.
        weight_decay: :math:`\\lambda`, an L2 penalty taken at :math:`y`.
        warmup_steps, r, weight_lr_power: as :class:`ScheduleFreeAdamW`.
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    examples = ({"lr": 0.1, "weight_decay": 0.1, "warmup_steps": 3},)

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals(), **_SCHEDULE_STATE))

    def _check_group(self, group: dict[str, Any]) -> None:
        super()._check_group(group)
        check_unit_interval("momentum", group["momentum"])
        if not scalar(group["momentum"]) > 0:
            raise ValueError(f"Invalid momentum: {group['momentum']} (momentum must be in (0, 1))")
