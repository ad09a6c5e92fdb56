"""The base class every optimist optimizer shares, and the checks and dispatch they all use.

An optimizer here is a :class:`torch.optim.Optimizer` subclass with torch.optim's constructor
arguments, defaults and state keys, so ``state_dict`` moves between ``torch.optim`` and optimist
both ways, and schedulers, hooks, ``param_groups`` and ``repr`` work as in torch.

Each optimizer module has four layers, as ``torch/optim/adam.py`` does:

* the class (validates hyperparameters, creates ``self.state[p]`` lazily, gathers tensors);
* a functional ``<name>(params, grads, ..., implementation=...)`` that dispatches;
* ``_single_tensor_<name>``: the readable per-tensor PyTorch kernel (the fallback, and the
  reference the fast path is tested against);
* the fast path: optimist's single-pass C++ kernel on CPU (:mod:`optimist.optim.fused`), or, on
  other devices, torch's own multi-tensor / fused kernels for the same rule.

Implementations (``implementation=`` on the functional API; chosen per step by the class):

``"single"``   the per-tensor kernel written in this package.
``"fused"``    optimist's compiled single-pass CPU kernel; tensors it cannot take (non-CPU,
               non-contiguous, other dtypes) go through ``"single"``.
``"torch"``    torch.optim's own multi-tensor/fused functional kernel (used on CUDA and other
               accelerators, where optimist has no kernel of its own).
"""

from __future__ import annotations

import decimal
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim import fused as _fused

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


# --- hyperparameter checks ---------------------------------------------------------------------
# Each check is written so that NaN fails it (`not lo <= x` is True for NaN).


def _is_real(value: Any) -> bool:
    """Any real number torch accepts (int, float, NumPy scalars, Fraction, Decimal), no bool."""
    return not isinstance(value, bool) and isinstance(value, (numbers.Real, decimal.Decimal))


def _number(name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not _is_real(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (ValueError, OverflowError) as exc:  # Decimal('sNaN'), huge Fractions
        raise ValueError(f"{name} must be a finite number, got {value!r}") from exc


def plain_number(value: Any) -> Any:
    """A NumPy scalar, Fraction or Decimal as a Python int/float (other values unchanged).

    Hyperparameters are stored this way in ``param_groups`` so every kernel (and torch's own
    functional kernels on accelerators) sees a plain Python number.
    """
    if type(value) in (int, float) or not _is_real(value):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def plain_numbers(group: dict[str, Any]) -> None:
    """Apply :func:`plain_number` to every hyperparameter of ``group`` (and inside ``betas``)."""
    for key, value in group.items():
        if key == "params":
            continue
        if isinstance(value, tuple):
            group[key] = tuple(plain_number(v) for v in value)
        elif isinstance(value, list):
            group[key] = [plain_number(v) for v in value]
        else:
            group[key] = plain_number(value)


def check_nonnegative(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``0 <= value < inf``."""
    x = _number(name, value)
    if not 0.0 <= x < math.inf:
        raise ValueError(f"Invalid {name}: {value} ({name} must be a finite number >= 0)")


def check_unit_interval(name: str, value: Any, *, closed: bool = False) -> None:
    """Raise ``ValueError`` unless ``0 <= value < 1`` (``<= 1`` with ``closed=True``)."""
    x = _number(name, value)
    ok = 0.0 <= x <= 1.0 if closed else 0.0 <= x < 1.0
    if not ok:
        interval = "[0, 1]" if closed else "[0, 1)"
        raise ValueError(f"Invalid {name}: {value} ({name} must be in {interval})")


def check_betas(betas: Any) -> None:
    """Raise ``ValueError`` unless ``betas`` is a pair with both entries in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r} (betas must be a pair (beta1, beta2))")
    for index, beta in enumerate(betas):
        x = _number(f"betas[{index}]", beta)
        if not 0.0 <= x < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index {index}: {beta} (betas must be in [0, 1))"
            )


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be True or False)")


def scalar(value: float | Tensor) -> float | int:
    """A hyperparameter as a Python number (torch accepts 0-dim tensors for ``lr``).

    An int stays an int, as in torch: SGD on integer tensors needs an integer ``alpha``.
    """
    if isinstance(value, Tensor):
        return value.item()
    return value if isinstance(value, int) and not isinstance(value, bool) else float(value)


def new_step_tensor() -> Tensor:
    """torch.optim's ``state['step']``: a 0-dim CPU tensor in the default scalar dtype."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def as_real(t: Tensor | None) -> Tensor | None:
    """A complex tensor as its real view (..., 2); other tensors unchanged.

    torch.optim treats a complex parameter as a real one with twice the elements, so every
    elementwise rule applies to the real and imaginary parts separately.
    """
    if t is not None and torch.is_complex(t):
        return torch.view_as_real(t)
    return t


# --- dispatch ----------------------------------------------------------------------------------


def choose_implementation(
    params: Sequence[Tensor], *, foreach: bool | None, fused: bool | None
) -> str:
    """Pick the implementation for one step of one param group.

    ``fused=True`` demands optimist's CPU kernel; ``foreach=False`` (or ``fused=False`` with
    ``foreach`` unset on CPU) asks for the per-tensor kernel; ``foreach=True`` asks for torch's
    multi-tensor kernel. With both unset, the fastest correct path is used: the fused kernel on
    CPU when it is available, torch's multi-tensor kernel on accelerators, else the per-tensor one.
    """
    on_cpu = all(p.is_cpu for p in params)
    if fused:
        if not on_cpu:
            raise RuntimeError(
                "fused=True runs optimist's CPU kernel, but some parameters are not on the CPU; "
                "use fused=None (torch's kernels are used on accelerators)"
            )
        if not _fused.available():
            raise RuntimeError(
                "fused=True, but optimist's fused CPU kernels could not be built here "
                "(see the warning above, or set fused=None to fall back to the per-tensor path)"
            )
        return "fused"
    if foreach:
        return "torch"
    if foreach is False or fused is False:
        return "single"
    if not params:
        return "single"
    if on_cpu:
        return "fused" if _fused.available() else "single"
    return "torch"


_FLOAT16_MAX = torch.finfo(torch.float16).max


def _overflows_low_precision(hyper: dict[str, Any]) -> bool:
    """Whether a hyperparameter is finite but too large for float16 (``lr=1e5``, ``1e300``)."""
    return any(
        type(value) in (int, float)
        and abs(value) > _FLOAT16_MAX
        and (type(value) is int or math.isfinite(value))
        for value in hyper.values()
    )


def run_fused(
    kernel: Callable[..., None],
    single: Callable[..., None],
    lists: Sequence[Sequence[Any]],
    *,
    n_tail: int,
    **hyper: Any,
) -> None:
    """Run ``kernel`` on the tensors it supports and ``single`` on the rest.

    ``lists`` are index-aligned: first the elementwise tensors (params, grads, state tensors),
    then ``n_tail`` bookkeeping lists (0-dim step tensors, flags) passed through as they are. An
    empty list stands for unused state and stays empty. Which indices the kernel cannot take
    (another device, non-contiguous, mixed dtypes, ...) is decided in one C++ call, since for
    many small tensors per-tensor checks in Python would cost more than the update itself.
    """
    if _overflows_low_precision(hyper):
        # torch raises ("value cannot be converted to type float without overflow") where such
        # a scalar meets a float32/float16 tensor; the per-tensor path makes torch's calls.
        single(*lists, **hyper)
        return
    n_elementwise = len(lists) - n_tail
    slow = _fused.unsupported_indices(*lists[:n_elementwise])
    if not slow:
        kernel(*lists, **hyper)
        return
    slow_set = set(slow)
    fast = [i for i in range(len(lists[0])) if i not in slow_set]

    def pick(indices: list[int]) -> list[list[Any]]:
        return [[lst[i] for i in indices] if lst else [] for lst in lists]

    if fast:
        kernel(*pick(fast), **hyper)
    single(*pick(slow), **hyper)


# --- the base class ----------------------------------------------------------------------------


@functools.cache
def _signature_defaults(cls: type) -> dict[str, Any]:
    """The constructor's keyword defaults of an optimizer class (its "class defaults")."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


class Optimizer(torch.optim.Optimizer):
    """Base class: hyperparameter checks per group, implementation choice, non-finite skipping.

    Subclasses define ``_check_group(group)`` (raise ``ValueError`` for bad values) and
    ``_step_group(group)`` (one update of one param group, gradients assumed present).

    ``skip_nonfinite=True`` checks every gradient before a step; if any holds NaN or inf the step
    is skipped for all groups (parameters and state untouched) and :attr:`skipped_steps` grows
    by one. It is off by default, where non-finite gradients flow into the update as in torch.
    """

    def __init__(
        self, params: ParamsT, defaults: dict[str, Any], *, skip_nonfinite: bool = False
    ) -> None:
        check_flag("skip_nonfinite", skip_nonfinite)
        plain_numbers(defaults)
        self._check_group(defaults)
        self.skip_nonfinite = skip_nonfinite
        self.skipped_steps = 0
        super().__init__(params, defaults)

    # hyperparameter checks run on the defaults and again on every group added later, so a
    # per-group override (``[{"params": ..., "lr": -1}]``) is rejected too.
    def _check_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_common(self, group: dict[str, Any]) -> None:
        check_nonnegative("lr", group["lr"])
        for flag in ("maximize", "differentiable", "capturable"):
            if flag in group:
                check_flag(flag, group[flag])
        for flag in ("foreach", "fused"):
            if flag in group:
                check_flag(flag, group[flag], allow_none=True)
        if group.get("capturable"):
            raise ValueError(
                "capturable=True (CUDA graph capture) is not supported by optimist; "
                "use torch.optim for graph-captured steps"
            )
        if group.get("fused") and group.get("foreach"):
            # RuntimeError, as torch.optim raises for this combination
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        if group.get("differentiable"):
            raise ValueError(
                "differentiable=True (autograd through the optimizer step) is not supported by "
                "optimist; use torch.optim for differentiable steps"
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            plain_numbers(self.param_groups[-1])
            self._check_group(self.param_groups[-1])
        except Exception:
            self.param_groups.pop()
            raise

    # State keys that torch.optim keeps as 0-dim tensors but that old checkpoints (torch < 1.12)
    # store as Python numbers; NAdam adds "mu_product".
    _scalar_state_keys: tuple[str, ...] = ("step",)

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim's pickles only defaults, state and param_groups; keep optimist's settings
        # so a deepcopy or pickle goes on skipping non-finite steps.
        state = super().__getstate__()
        state["skip_nonfinite"] = self.skip_nonfinite
        state["skipped_steps"] = self.skipped_steps
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also called by torch's load_state_dict with the loaded groups and state.
        super().__setstate__(state)
        self.__dict__.setdefault("skip_nonfinite", False)
        self.__dict__.setdefault("skipped_steps", 0)
        # A group key missing from a checkpoint (older torch, or torch.optim without optimist's
        # ``fused``) gets the class default, as torch's __setstate__ does, not this instance's
        # constructor value.
        class_defaults = _signature_defaults(type(self))
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, class_defaults.get(key, value))
            for p in group["params"]:
                self._upgrade_scalar_state(self.state.get(p))

    def _upgrade_scalar_state(self, p_state: dict[str, Any] | None) -> None:
        """Old checkpoints: ``step`` (and NAdam's ``mu_product``) as a Python number or an
        integer tensor become torch's 0-dim float tensor (the fused kernels need float)."""
        if not p_state:
            return
        for key in self._scalar_state_keys:
            value = p_state.get(key)
            if value is None or (isinstance(value, Tensor) and value.is_floating_point()):
                continue
            number = value.item() if isinstance(value, Tensor) else value
            p_state[key] = torch.tensor(float(number), dtype=new_step_tensor().dtype)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # an extra top-level key; torch.optim's load_state_dict ignores it
        state["optimist"] = {"skipped_steps": self.skipped_steps}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("optimist", None) or {}
        super().load_state_dict(state_dict)  # calls __setstate__, which fills and upgrades
        self.skipped_steps = int(extra.get("skipped_steps", 0))

    def _implementation(self, group: dict[str, Any], params: Sequence[Tensor]) -> str:
        return choose_implementation(
            params,
            foreach=group.get("foreach"),
            fused=group.get("fused"),
        )

    def _gather(
        self,
        group: dict[str, Any],
        name: str,
        init_state: Callable[[Tensor, dict[str, Any]], None],
        keys: Sequence[str],
    ) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
        """Collect the params with gradients, their gradients and their ``keys`` state tensors.

        State is created lazily by ``init_state(param, state)`` on a parameter's first step.
        Parameters whose ``.grad`` is None are skipped (their state is neither made nor changed).
        """
        params: list[Tensor] = []
        grads: list[Tensor] = []
        columns: list[list[Tensor]] = [[] for _ in keys]
        appends = list(zip([column.append for column in columns], keys, strict=True))
        optimizer_state = self.state
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                self._check_sparse(grad, name)
            state = optimizer_state[p]
            if not state:
                init_state(p, state)
            params.append(p)
            grads.append(grad)
            for append, key in appends:
                append(state[key])
        return params, grads, columns

    @staticmethod
    def _check_sparse(grad: Tensor, name: str) -> None:
        if grad.is_sparse:
            raise RuntimeError(
                f"{name} does not support sparse gradients; use torch.optim.SparseAdam, or "
                "torch.nn.Embedding(sparse=False)"
            )

    def _gradients_finite(self) -> bool:
        by_device: dict[torch.device, list[Tensor]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    flag = torch.isfinite(as_real(p.grad)).all()
                    by_device.setdefault(flag.device, []).append(flag)
        # one host sync per device instead of one per tensor
        return all(bool(torch.stack(flags).all()) for flags in by_device.values())

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
        if self.skip_nonfinite and not self._gradients_finite():
            self.skipped_steps += 1
            return loss
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError
