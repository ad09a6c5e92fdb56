"""The torch-compatible base every optimist optimizer shares, and the hyperparameter checks.

An optimizer here is a :class:`torch.optim.Optimizer` subclass with torch.optim's constructor
arguments, defaults and state keys, so ``state_dict`` moves between ``torch.optim`` and optimist
both ways, and schedulers, hooks, ``param_groups`` and ``repr`` work as in torch. This module holds
what is about that contract (checks, old-checkpoint upgrades, pickling, optimist's extra
``state_dict`` entry); the update itself (rules, state storage, dispatch) is
:mod:`optimist.optim.engine`.
"""

from __future__ import annotations

import decimal
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

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


def check_betas3(betas: Any) -> None:
    """Raise ``ValueError`` unless ``betas`` is a triple with entries in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 3:
        raise ValueError(f"Invalid betas: {betas!r} (betas must be a triple (beta1, beta2, beta3))")
    for index, beta in enumerate(betas):
        check_unit_interval(f"betas[{index}]", beta)


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be True or False)")


def check_choice(name: str, value: Any, choices: tuple[str, ...], why: str = "") -> None:
    """One of ``choices`` (a convention flag), else a ValueError naming them (and ``why``)."""
    if value not in choices:
        names = ", ".join(map(repr, choices))
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be one of {names}{why})")


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


#: The keyword arguments of an optimizer that are settings of the optimizer object, not
#: hyperparameters of its param groups (see :func:`init_arguments`).
OPTIONS = ("skip_nonfinite", "state_dtype", "stochastic_params", "chain")


def call_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """A method's arguments from its ``locals()``, without ``self`` (to pass them on)."""
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__")}


def init_arguments(arguments: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The base constructor's arguments, from an explicit torch-style ``__init__``'s ``locals()``.

    The shared tail of every optimizer's constructor, written once: as the first statement,
    ``super().__init__(**init_arguments(locals()))`` puts every hyperparameter of the signature
    (and ``extra``) into ``defaults``, as torch.optim's ``defaults = dict(lr=lr, ...)``, and
    passes :data:`OPTIONS` on as keyword arguments. The signature stays explicit (torch's
    arguments, defaults and docs); only the forwarding is derived from it.
    """
    values = call_arguments(arguments)
    result: dict[str, Any] = {"params": values.pop("params")}
    for key in OPTIONS:
        if key in values:
            result[key] = values.pop(key)
    result["defaults"] = {**values, **extra}
    return result


@functools.cache
def _signature_defaults(cls: type) -> dict[str, Any]:
    """The constructor's keyword defaults of an optimizer class (its "class defaults")."""
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


class Optimizer(torch.optim.Optimizer):
    """Base class: hyperparameter checks per group, checkpoints, pickling, skipped-step count.

    Subclasses define ``_check_group(group)`` (raise ``ValueError`` for bad values) and the step
    (:class:`optimist.optim.engine.RuleOptimizer` does, for every optimizer in this package).

    ``skip_nonfinite=True`` makes the step skip every update whose gradients hold a NaN or inf
    (parameters and state untouched) and count it in :attr:`skipped_steps`. It is off by default,
    where non-finite gradients flow into the update as in torch.

    Keyword arguments that every optimizer here takes, documented once (each class's
    docstring names the ones it has):

    Args:
        maximize: ascend instead of descend.
        foreach, fused: implementation choice: ``fused`` demands the C++ engine (the default on
            CPU; on an accelerator torch's fused kernel, for Adam, AdamW, SGD and Adagrad),
            ``foreach=False`` the rule's readable per-tensor path, ``foreach=True`` torch's
            multi-tensor kernel where one exists (see :mod:`optimist.optim.engine`).
        capturable, differentiable: accepted for torch.optim's signature; True is not
            supported for either (a one-line ``ValueError`` says so).
        skip_nonfinite: see above.
        state_dtype, stochastic_params, chain: storage of the element-wise state, stochastic
            rounding of low-precision parameters, and the transforms of an
            :func:`optimist.chain`; see :class:`~optimist.optim.engine.RuleOptimizer`.

    Hyperparameter checks are derived where they can be: every group key whose constructor
    default is a bool must be True or False, ``betas`` must be a pair (or a triple, if the default
    is one) in [0, 1), and the keys in :attr:`nonnegative` finite numbers >= 0. A subclass's
    ``_check_group`` adds only what is particular to it.
    """

    #: hyperparameters that must be finite numbers >= 0 (``lr`` always is checked)
    nonnegative: ClassVar[tuple[str, ...]] = ()
    #: the ``state_dtype`` values the optimizer takes (None: state in the parameter's dtype)
    state_dtypes: ClassVar[tuple[str | None, ...]] = (None,)
    #: constructor settings that, together, reach every state slot and branch of the update:
    #: examples for readers, and the rows of the generated contract tests (``tests/engine``).
    #: Empty: the registry's defaults only.
    examples: ClassVar[tuple[dict[str, Any], ...]] = ()

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
    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)

    def _check_common(self, group: dict[str, Any]) -> None:
        check_nonnegative("lr", group["lr"])
        class_defaults = _signature_defaults(type(self))
        if "betas" in group:
            triple = len(class_defaults.get("betas", ())) == 3
            (check_betas3 if triple else check_betas)(group["betas"])
        for key in self.nonnegative:
            check_nonnegative(key, group[key])
        flags = {k for k, v in class_defaults.items() if isinstance(v, bool)}
        for flag in sorted(flags | {"maximize", "differentiable", "capturable"}):
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

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """torch's wrapper of ``step`` (step hooks, the profiler's ``Optimizer.step#...`` label),
        its ``record_function`` taken only while a profiler runs.

        torch wraps every optimizer's ``step`` (``Optimizer._patch_step_function``) in a
        ``record_function`` and hook loop that cost about 15 µs a step even when nothing listens
        (more with the caches cold), and about 10 µs of that with a hook registered (the
        monitor's). Here: torch's own wrapper while ``torch._C._autograd._profiler_enabled()``;
        else the hooks in torch's order and with torch's arguments (:func:`_step_with_hooks`)
        when any is registered, else ``step`` alone (and ``_optimizer_step_code``, the
        profiler's marker).
        """
        traced = torch.optim.Optimizer.profile_hook_step(func)
        enabled = torch._C._autograd._profiler_enabled

        @functools.wraps(func)
        def wrapper(self: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
            if enabled():
                return traced(self, *args, **kwargs)
            if (
                _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks
                or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
            ):
                return _step_with_hooks(func, self, (self, *args), kwargs)
            out = func(self, *args, **kwargs)
            self._optimizer_step_code()
            return out

        return wrapper

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
        own_storage = [g.get("state_dtype") for g in self.param_groups]
        super().load_state_dict(state_dict)  # calls __setstate__, which fills and upgrades
        # a checkpoint that does not say how to store the state (torch.optim's, or one with
        # state_dtype=None) keeps this optimizer's choice: a torch.optim checkpoint loads into
        # an int8 optimizer (the state is converted by the optimizer, on load or at its step)
        for group, saved, own in zip(
            self.param_groups, state_dict["param_groups"], own_storage, strict=False
        ):
            if "state_dtype" not in saved and own is not None:
                group["state_dtype"] = own
        self.skipped_steps = int(extra.get("skipped_steps", 0))

    @staticmethod
    def _check_sparse(grad: Tensor, name: str) -> None:
        if grad.is_sparse:
            raise RuntimeError(
                f"{name} does not support sparse gradients; use torch.optim.SparseAdam, or "
                "torch.nn.Embedding(sparse=False)"
            )


def _step_with_hooks(
    func: Callable[..., Any], opt: torch.optim.Optimizer, args: tuple[Any, ...], kwargs: dict
) -> Any:
    """``step`` between its hooks as torch.optim runs them (``args`` holds the optimizer first):
    the global pre-hooks, then the optimizer's (either may return new ``(args, kwargs)``), the
    step, the optimizer's post-hooks, then the global ones."""
    for pre_hook in (
        *_global_optimizer_pre_hooks.values(),
        *opt._optimizer_step_pre_hooks.values(),
    ):
        result = pre_hook(opt, args, kwargs)
        if result is not None:
            if not (isinstance(result, tuple) and len(result) == 2):
                raise RuntimeError(
                    f"{func} must return None or a tuple of (new_args, new_kwargs), but got "
                    f"{result}."
                )
            args, kwargs = result
    out = func(*args, **kwargs)
    opt._optimizer_step_code()
    for post_hook in (
        *opt._optimizer_step_post_hooks.values(),
        *_global_optimizer_post_hooks.values(),
    ):
        post_hook(opt, args, kwargs)
    return out
