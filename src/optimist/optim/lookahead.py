r"""Lookahead: k fast steps of any optimizer forward, one interpolating step back.

.. math::

    \theta_{t,0} &= \phi_{t-1} \\
    \theta_{t,i} &= \theta_{t,i-1} + A(L, \theta_{t,i-1}), \quad i = 1, \dots, k \\
    \phi_t &= \phi_{t-1} + \alpha\,(\theta_{t,k} - \phi_{t-1}), \qquad
    \text{then the fast weights restart from } \phi_t

Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back" (NeurIPS 2019),
Algorithm 1, over any ``torch.optim.Optimizer`` (the inner optimizer :math:`A`). The slow
weights :math:`\phi_0` are the parameters when the wrapper is built (as Optax's
``LookaheadParams.init_synced`` and ``pytorch_optimizer.Lookahead``). The parameters hold the
fast weights; :meth:`Lookahead.slow_weights` swaps in :math:`\phi` for evaluation. Optax's
``reset_state`` (the inner optimizer's state restarts at every synchronisation) is offered by the
same name; the default keeps it, as the paper and both libraries do by default.

Counting: one fast step is one *applied* step of the inner optimizer. With optimist's
optimizers, calls that only accumulate gradients (``accumulate(n)``) or that were skipped
(``skip_nonfinite``) do not count; with others every ``step()`` call counts.

In a chain, :func:`optimist.transforms.lookahead` as the last link wraps the optimizer the rest
of the chain builds in this class (Optax's ``optax.lookahead(fast_optimizer, ...)``).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from optimist.optim.distributed import local
from optimist.optim.engine import RuleOptimizer

__all__ = ["Lookahead"]

_HOOKS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def check_arguments(k: int, alpha: float, reset_state: bool) -> None:
    """Raise ``ValueError`` unless ``k >= 1`` (an int), ``0 <= alpha <= 1`` and ``reset_state``
    is a bool (shared by :class:`Lookahead` and the chain link
    :func:`optimist.transforms.lookahead`)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"Invalid k: {k!r} (k must be an integer >= 1)")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Invalid alpha: {alpha!r} (alpha must be in [0, 1])")
    if not isinstance(reset_state, bool):
        raise ValueError(f"Invalid reset_state: {reset_state!r} (True or False)")


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019, Algorithm 1) around ``optimizer``.

    ``param_groups`` (and ``defaults``) are the inner optimizer's own objects, so learning-rate
    schedulers, ``zero_grad`` and per-group settings act on it; ``state`` holds the slow weights
    (key ``slow_param``); ``state_dict()`` holds both (the inner one under ``"inner"``), and the
    step hooks of ``torch.optim.Optimizer`` fire around :meth:`step`.

    Args:
        optimizer: the inner (fast) optimizer, any ``torch.optim.Optimizer``.
        k: fast steps per synchronisation (default 5).
        alpha: :math:`\\alpha`, the slow weights' step toward the fast ones (default 0.5).
        reset_state: clear the inner optimizer's state at every synchronisation (Optax's
            ``reset_state``; default False).

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> import optimist
        >>> opt = Lookahead(optimist.optim.Adam(model.parameters(), lr=1e-3), k=5, alpha=0.5)
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5, *,
        reset_state: bool = False,
    ) -> None:  # fmt: skip
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"Lookahead wraps a torch.optim.Optimizer instance, got {type(optimizer).__name__}"
            )
        check_arguments(k, alpha, reset_state)
        # torch.optim.Optimizer.__init__ would make param_groups of its own: set up the rest
        self.optimizer = optimizer
        self.k, self.alpha, self.reset_state = k, float(alpha), reset_state
        self.fast_steps = 0  # applied inner steps since construction
        self.defaults = optimizer.defaults
        for name in _HOOKS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
        self._warned_capturable_if_run_uncaptured = True
        self._init_slow(self.param_groups)

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, {self.optimizer!r})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._init_slow(self.param_groups[-1:])

    @torch.no_grad()
    def _init_slow(self, groups: list[dict[str, Any]]) -> None:
        for group in groups:
            for p in group["params"]:
                if "slow_param" not in self.state[p]:
                    self.state[p]["slow_param"] = p.detach().clone()

    def _applied_steps(self) -> int | None:
        return self.optimizer._count if isinstance(self.optimizer, RuleOptimizer) else None

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One inner step; every ``k``-th applied one is followed by the synchronisation."""
        before = self._applied_steps()
        loss = self.optimizer.step(closure)
        if before is None or self._applied_steps() != before:
            self.fast_steps += 1
            if self.fast_steps % self.k == 0:
                self.synchronize()
        return loss

    @torch.no_grad()
    def synchronize(self) -> None:
        """:math:`\\phi \\leftarrow \\phi + \\alpha(\\theta - \\phi)`, then :math:`\\theta
        \\leftarrow \\phi` (called by :meth:`step`; public for a manual schedule)."""
        self._init_slow(self.param_groups)  # parameters that joined by other means
        slow, fast = [], []
        for group in self.param_groups:
            for p in group["params"]:
                # FSDP2: the local shards (DTensor has no foreach copy); both are laid out alike
                slow.append(local(self.state[p]["slow_param"]))
                fast.append(local(p.detach()))
                if self.reset_state and p in self.optimizer.state:
                    self.optimizer.state[p].clear()
        if slow:
            torch._foreach_lerp_(slow, fast, self.alpha)
            torch._foreach_copy_(fast, slow)

    @contextmanager
    def slow_weights(self) -> Iterator[None]:
        """Within the block the parameters hold the slow weights :math:`\\phi` (to evaluate).

        Under ``ZeroRedundancyOptimizer`` (this optimizer is ``zero.optim``, holding the rank's
        partition) call :func:`optimist.optim.distributed.sync_zero_params` first inside the
        block and again after it, so every rank holds every partition's weights."""
        swapped = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    slow = self.state[p].get("slow_param")
                    if slow is not None:
                        fast = p.detach().clone()
                        p.copy_(slow)
                        swapped.append((p, fast))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, fast in swapped:
                    p.copy_(fast)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        own = super().state_dict()  # the slow weights, by parameter index (torch's packing)
        own["inner"] = self.optimizer.state_dict()
        own["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "reset_state": self.reset_state,
            "fast_steps": self.fast_steps,
        }
        return own

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        missing = {"inner", "lookahead", "state", "param_groups"} - set(state_dict)
        if missing:
            raise ValueError(
                f"not a Lookahead state_dict: missing {sorted(missing)} (a bare inner optimizer's "
                "state_dict loads with opt.optimizer.load_state_dict(...))"
            )
        self.optimizer.load_state_dict(state_dict["inner"])
        super().load_state_dict(
            {"state": state_dict["state"], "param_groups": state_dict["param_groups"]}
        )
        self.__dict__.pop("param_groups", None)  # torch's loader set a copy; the inner's rule
        extra = state_dict["lookahead"]
        self.k, self.alpha = int(extra["k"]), float(extra["alpha"])
        self.reset_state = bool(extra.get("reset_state", False))
        self.fast_steps = int(extra["fast_steps"])
        self._init_slow(self.param_groups)
