"""Keras 3's optimizers that wrap others: ``LossScaleOptimizer``, ``MultiOptimizer`` and
``OptimizerMap`` (``optimist.optimizers.LossScaleOptimizer(optimizers.Adam())``).

Each wraps Keras-style optimizers (:class:`~optimist.training.optimizer_base.Optimizer`) and is
one itself: ``model.compile`` builds it on the model's parameters, and ``model.optimizer`` is
then a :class:`PartsOptimizer`, a ``torch.optim.Optimizer`` whose parts are the wrapped
optimizers' own torch optimizers (``param_groups`` are theirs, ``step()`` steps each,
``state_dict()`` holds each part's plus the wrapper's counters, so ``model.save`` and
``optimist.models.load_model`` restore all of it).

==================  ===============================================================================
Keras               how it runs
==================  ===============================================================================
LossScaleOptimizer  ``scale_loss`` multiplies the loss by the dynamic scale (float32, as Keras);
                    ``fit`` calls it before every ``backward()``. A step checks the gradients
                    (still scaled, as Keras) for inf/NaN: if any, the update is skipped and the
                    scale halved; else they are divided by the scale and the inner optimizer
                    steps, and after ``dynamic_growth_steps`` good steps in a row the scale
                    doubles. The check and the division are one fused pass (torch's AMP kernel)
                    when the scale is a power of two, where multiplying by its inverse is exact;
                    the check reads one flag back to the host per step (Keras' ``ops.cond``
                    does too). ``iterations`` and ``learning_rate`` are the inner optimizer's
                    (skipped steps do not count).
MultiOptimizer      each parameter goes to the optimizer its ``OptimizerMap`` (or a callable)
                    gives for it; each of those is built on its parameters and steps them;
                    ``iterations`` counts the wrapper's steps, each inner optimizer counts its
                    own. ``loss_scale_factor`` is set on every inner optimizer (Keras).
OptimizerMap        Keras' lookup: an exact key, else the one key that ``re.fullmatch``-es (two
                    or more: ``ValueError``), else ``default_optimizer``.
==================  ===============================================================================

Paths. A Keras key names a variable's path (``"dense/kernel"``); optimist's parameters have the
model's ``named_parameters()`` names (``"dense.weight"``). A parameter's path is its name with
``/`` for ``.`` and a last part ``weight`` spelled ``kernel`` (optimist's ``Dense`` keeps its
kernel as torch's ``weight``; its other layers use Keras' names: ``bias``, ``gamma``,
``beta``, ``embeddings``, ``recurrent_kernel``): ``"dense.weight"`` -> ``"dense/kernel"``. A key
is matched against the path and against the name itself (``"dense\\..*"`` works too), and a
callable map receives a :class:`ParameterPath` with ``.path``. Keras puts a ``Sequential``
model's name in front (``"sequential/dense/kernel"``), a functional model's not; optimist's
paths never have it, so ``".*dense/.*"`` matches in both libraries, ``"dense/.*"`` in optimist
and in Keras' functional models only.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import torch

from optimist.training.optimizer_base import Optimizer, _number, keras_path
from optimist.training.optimizer_view import LearningRate, keras_view
from optimist.training.parts_optimizer import PartsOptimizer

__all__ = [
    "LossScaleOptimizer",
    "MultiOptimizer",
    "OptimizerMap",
    "ParameterPath",
]


@dataclass(frozen=True, eq=False)
class ParameterPath:
    """What a callable optimizer map receives for a parameter (Keras passes the variable):
    ``path`` (``"dense/kernel"``), ``name`` (``"kernel"``), ``torch_name`` (``"dense.weight"``)
    and the tensor ``value`` (with ``shape`` and ``dtype``)."""

    torch_name: str
    value: torch.Tensor = field(repr=False)

    @property
    def path(self) -> str:
        return keras_path(self.torch_name)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype


# -- serialization of nested optimizers ------------------------------------------------------------
def _serialize(obj: Any) -> dict[str, Any]:
    """``{"class_name", "config"}``, as :func:`optimist.optimizers.serialize` writes (that module
    imports this one, so its function cannot be imported here)."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def _keras_class(name: str) -> type[Optimizer]:
    """The Keras-style optimizer class called ``name``: every imported subclass of
    :class:`Optimizer` (``optimist.optimizers`` imports the registered ones), optimist's first."""
    found, todo = [], list(Optimizer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__name__ == name:
            found.append(cls)
    if not found:
        raise ValueError(f"unknown optimizer class {name!r}")
    found.sort(key=lambda c: not c.__module__.startswith("optimist."))
    return found[0]


def _deserialize(config: Any) -> Optimizer:
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"not an optimizer config: {config!r}")
    return _keras_class(config["class_name"]).from_config(config.get("config") or {})


class _Wrapper(Optimizer):
    """What the wrappers share: a :class:`PartsOptimizer` over the inner optimizers' torch
    optimizers, their moving averages written at the end of ``fit``, their state tensors."""

    def _inner(self) -> list[Optimizer]:
        """The built inner optimizers, in the parts' order."""
        raise NotImplementedError

    def _join(self, parts: list[torch.optim.Optimizer]) -> torch.optim.Optimizer:
        opt = keras_view(PartsOptimizer(parts, self))  # its step() runs apply_step
        self.torch_optimizer = opt
        return opt

    def _state(self) -> dict[str, Any]:
        """The wrapper's own counters, saved with the parts' state."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_state` (after the parts' state was loaded)."""

    @property
    def variables(self) -> list[torch.Tensor]:
        return [v for opt in self._inner() for v in opt.variables]

    def finalize_variable_values(self, var_list: Any = None) -> None:
        for opt in self._inner():
            opt.finalize_variable_values(var_list)


# -- LossScaleOptimizer ----------------------------------------------------------------------------
#: Keras' base arguments that LossScaleOptimizer refuses unless at their defaults (an older
#: Keras wrote them into its config)
_BASE_DEFAULTS: dict[str, Any] = {
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}


def _float32(value: float) -> float:
    """``value`` rounded to float32 (Keras keeps the scale in a float32 variable)."""
    return torch.tensor(value, dtype=torch.float32).item()


class LossScaleOptimizer(_Wrapper):
    """Keras' LossScaleOptimizer: ``LossScaleOptimizer(inner_optimizer, initial_scale=2**15,
    dynamic_growth_steps=2000)``, dynamic loss scaling around any Keras-style optimizer (see
    the module docstring). The inner optimizer's ``loss_scale_factor`` is set to ``None``."""

    keras_name = "lossscaleoptimizer"

    def __init__(
        self,
        inner_optimizer: Optimizer,
        initial_scale: float = 2.0**15,
        dynamic_growth_steps: int = 2000,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not kwargs.pop("dynamic", True):
            raise ValueError(
                "LossScaleOptimizer no longer supports `dynamic=False`. Instead, simply set "
                "`loss_scale_factor` directly on the `inner_optimizer`."
            )
        for arg, default in _BASE_DEFAULTS.items():
            if arg not in kwargs:
                continue
            value = kwargs.pop(arg)
            if (default is None and value is not None) or value != default:
                raise ValueError(
                    f"LossScaleOptimizer does not support `{arg}`. Instead, set `{arg}` on the "
                    f"`inner_optimizer`."
                )
        if kwargs:
            raise ValueError(
                f"LossScaleOptimizer does not support arguments: `{'`, `'.join(kwargs)}`."
            )
        if not isinstance(inner_optimizer, Optimizer):
            raise TypeError(
                "`inner_optimizer` must be a Keras-style optimizer (optimist.optimizers.*). "
                f"Received: {inner_optimizer!r}"
            )
        # (Keras checks neither: a scale <= 0 or inf makes every step NaN or skipped, a growth
        # interval < 1 never grows the scale)
        scale = _number("initial_scale", initial_scale)
        if not 0 < scale < math.inf:
            raise ValueError(
                f"`initial_scale` must be a finite number > 0. Received: initial_scale={scale}"
            )
        steps = dynamic_growth_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(
                "`dynamic_growth_steps` must be an integer >= 1. Received: "
                f"dynamic_growth_steps={steps!r}"
            )
        super().__init__(0.0, name=name or "loss_scale_optimizer")
        self.inner_optimizer = inner_optimizer
        self.initial_scale = initial_scale
        self.dynamic_growth_steps = dynamic_growth_steps
        inner_optimizer.loss_scale_factor = None  # else the gradients would be unscaled twice
        self._scale = _float32(initial_scale)
        self.step_counter = 0  # good steps since the scale last changed

    @property
    def dynamic_scale(self) -> float:
        """The current loss scale."""
        return self._scale

    @property
    def scales_loss(self) -> bool:
        return True

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current scale (``fit`` calls this before every ``backward``)."""
        return loss * self._scale

    @property
    def learning_rate(self) -> LearningRate:
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self) -> int:
        return self.inner_optimizer.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self.inner_optimizer.iterations = value

    def _inner(self) -> list[Optimizer]:
        return [self.inner_optimizer]

    def build(
        self, params: Iterable[torch.Tensor], names: Iterable[str] | None = None
    ) -> torch.optim.Optimizer:
        inner = self.inner_optimizer.build(params, names)
        self._params = self.inner_optimizer._params
        self._names = self.inner_optimizer._names
        self._scale = _float32(self.initial_scale)
        self.step_counter = 0
        return self._join([inner])

    def apply_step(self, opt: Any, closure: Callable[[], Any] | None = None) -> Any:
        """Check the (scaled) gradients; if finite, unscale them, step the inner optimizer and
        count towards growth, else skip the update and halve the scale (Keras' order)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = [p.grad for p in self._params if p.grad is not None]
        if self._unscale(grads):
            opt._base_step()
            if self.step_counter == self.dynamic_growth_steps - 1:
                self.step_counter = 0
                self._scale = _float32(self._scale * 2.0)
            else:
                self.step_counter += 1
        else:
            self.step_counter = 0
            self._scale = _float32(self._scale * 0.5)
        return loss

    def _unscale(self, grads: list[torch.Tensor]) -> bool:
        """Whether every gradient is finite; if so they are divided by the scale."""
        if not grads:
            return True
        mantissa, exponent = math.frexp(self._scale)
        exact = mantissa == 0.5 and -125 <= exponent <= 126  # 1/scale exact in float32
        inverse = 1.0 / self._scale if exact else 1.0
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for g in grads:
            by_device.setdefault(g.device, []).append(g)
        flags = []
        for device, group in by_device.items():
            found = torch.zeros(1, dtype=torch.float32, device=device)
            inv = torch.full((1,), inverse, dtype=torch.float32, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, found, inv)
            flags.append(found)
        if bool((torch.cat([f.cpu() for f in flags]) if len(flags) > 1 else flags[0]).any()):
            return False
        if not exact:
            torch._foreach_div_(grads, self._scale)
        return True

    def _state(self) -> dict[str, Any]:
        return {"dynamic_scale": self._scale, "step_counter": self.step_counter}

    def _load_state(self, state: dict[str, Any]) -> None:
        self._scale = float(state.get("dynamic_scale", self._scale))
        self.step_counter = int(state.get("step_counter", 0))

    def restored(self, iterations: int) -> None:
        self.inner_optimizer.restored(iterations)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner_optimizer": _serialize(self.inner_optimizer),
            "initial_scale": self.initial_scale,
            "dynamic_growth_steps": self.dynamic_growth_steps,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LossScaleOptimizer:
        config = dict(config)
        inner = _deserialize(config.pop("inner_optimizer"))
        return cls(inner, **config)


# -- OptimizerMap, MultiOptimizer ------------------------------------------------------------------
class OptimizerMap(MutableMapping[str, Optimizer]):
    """Keras' OptimizerMap: ``OptimizerMap(default_optimizer, optimizer_map=None)``, keys are
    paths or regular expressions (see the module docstring for optimist's paths)."""

    def __init__(
        self, default_optimizer: Optimizer, optimizer_map: dict[str, Optimizer] | None = None
    ) -> None:
        if not isinstance(default_optimizer, Optimizer):
            raise TypeError(
                f"default_optimizer must be a Keras Optimizer instance. Received: "
                f"{default_optimizer}"
            )
        if optimizer_map is not None and not isinstance(optimizer_map, dict):
            raise TypeError(f"optimizer_map must be a dictionary. Received: {optimizer_map}")
        self._default_optimizer = default_optimizer
        self._optimizer_map: dict[str, Optimizer] = optimizer_map or {}

    @property
    def default_optimizer(self) -> Optimizer:
        return self._default_optimizer

    def _find(self, *keys: str) -> Optimizer:
        """Keras' lookup, with each key tried: an exact key, else the one pattern that
        ``re.fullmatch``-es one of them, else the default."""
        for key in keys:
            if key in self._optimizer_map:
                return self._optimizer_map[key]
        matching = [
            pattern
            for pattern in self._optimizer_map
            if any(re.fullmatch(pattern, key) for key in keys)
        ]
        if len(matching) > 1:
            raise ValueError(f"Multiple optimizers assigned to variable {keys[0]}.")
        if matching:
            return self._optimizer_map[matching[0]]
        return self._default_optimizer

    def __getitem__(self, key: str) -> Optimizer:
        return self._find(key)

    def __setitem__(self, key: str, optimizer: Optimizer) -> None:
        if key in self._optimizer_map:
            raise ValueError(
                f"'{key}' already exists in the OptimizerMap with value "
                f"{self._optimizer_map[key]}. Please make sure to not use duplicated keys."
            )
        if not isinstance(key, str):
            raise ValueError(f"key must be a string. Received: {key}")
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a Keras Optimizer instance. Received: {optimizer}")
        if isinstance(optimizer, LossScaleOptimizer):
            raise ValueError("optimizer cannot be LossScaleOptimizer.")
        if isinstance(optimizer, MultiOptimizer):
            raise ValueError("optimizer cannot be MultiOptimizer.")
        self._optimizer_map[key] = optimizer

    def __delitem__(self, key: str) -> None:
        del self._optimizer_map[key]

    def __len__(self) -> int:
        return len(self._optimizer_map)

    def __iter__(self) -> Iterator[str]:
        return iter(self._optimizer_map)

    def __call__(self, variable: ParameterPath) -> Optimizer:
        return self._find(variable.path, variable.torch_name)

    def get_config(self) -> dict[str, Any]:
        return {
            "default_optimizer": _serialize(self._default_optimizer),
            "optimizer_map": {k: _serialize(v) for k, v in self._optimizer_map.items()},
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OptimizerMap:
        mapping = {k: _deserialize(v) for k, v in (config.get("optimizer_map") or {}).items()}
        return cls(_deserialize(config["default_optimizer"]), mapping)


class MultiOptimizer(_Wrapper):
    """Keras' MultiOptimizer: ``MultiOptimizer(optimizer_map, loss_scale_factor=None)``, an
    :class:`OptimizerMap` or a callable ``(ParameterPath) -> optimizer`` choosing each
    parameter's optimizer. No ``learning_rate`` of its own (Keras raises
    ``AttributeError``): set it on ``.optimizers``."""

    keras_name = "multioptimizer"

    def __init__(
        self,
        optimizer_map: OptimizerMap | Callable[[ParameterPath], Optimizer],
        loss_scale_factor: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(0.0, loss_scale_factor=loss_scale_factor, name=name or "multi_optimizer")
        self._optimizer_map = optimizer_map
        self._inner_optimizers: list[Optimizer] = []
        self._built_inner: list[Optimizer] = []
        candidates = list(optimizer_map.values()) if isinstance(optimizer_map, Mapping) else []
        default = getattr(optimizer_map, "default_optimizer", None)
        for opt in [*candidates, *([default] if default is not None else [])]:
            if opt not in self._inner_optimizers:
                opt.loss_scale_factor = loss_scale_factor
                self._inner_optimizers.append(opt)

    @property
    def optimizers(self) -> list[Optimizer]:
        """The inner optimizers (the map's, its default, then those a callable returned)."""
        return self._inner_optimizers

    @property
    def loss_scale_factor(self) -> float | None:  # type: ignore[override]
        return self.__dict__.get("_loss_scale_factor")

    @loss_scale_factor.setter
    def loss_scale_factor(self, value: float | None) -> None:
        self._loss_scale_factor = value
        for opt in self.__dict__.get("_inner_optimizers", ()):
            opt.loss_scale_factor = value

    @property
    def learning_rate(self) -> LearningRate:
        raise AttributeError(
            "Learning rate cannot be accessed on a MultiOptimizer. Access the learning rate on "
            "the individual sub-optimizers instead."
        )

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        raise AttributeError(
            "Learning rate cannot be set on a MultiOptimizer. Set the learning rate on the "
            "individual sub-optimizers instead."
        )

    def __repr__(self) -> str:
        inner = ", ".join(type(opt).__name__ for opt in self._inner_optimizers)
        return f"<optimist.optimizers.MultiOptimizer optimizers=[{inner}]>"

    def _inner(self) -> list[Optimizer]:
        return self._built_inner

    def build(
        self, params: Iterable[torch.Tensor], names: Iterable[str] | None = None
    ) -> torch.optim.Optimizer:
        """Ask the map for each trainable parameter's optimizer, build each on its own."""
        params = list(params)
        names = [str(i) for i in range(len(params))] if names is None else list(names)
        if len(names) != len(params):
            raise ValueError(f"got {len(names)} names for {len(params)} parameters")
        kept = [(n, p) for n, p in zip(names, params, strict=True) if p.requires_grad]
        if not kept:
            raise ValueError("the optimizer got no trainable parameters")
        assigned: list[list[tuple[str, torch.Tensor]]] = [[] for _ in self._inner_optimizers]
        for name, param in kept:
            variable = ParameterPath(name, param)
            opt = self._optimizer_map(variable)
            if not isinstance(opt, Optimizer):
                raise ValueError(
                    f"Optimizer for variable {variable.path} is not an Optimizer instance."
                )
            if isinstance(opt, LossScaleOptimizer):
                raise ValueError("LossScaleOptimizer cannot be used inside an MultiOptimizer.")
            if isinstance(opt, MultiOptimizer):
                raise ValueError("MultiOptimizer cannot be used inside an MultiOptimizer.")
            if opt not in self._inner_optimizers:
                opt.loss_scale_factor = self.loss_scale_factor
                self._inner_optimizers.append(opt)
                assigned.append([])
            assigned[self._inner_optimizers.index(opt)].append((name, param))
        self._built_inner = [
            opt for opt, pairs in zip(self._inner_optimizers, assigned, strict=True) if pairs
        ]
        parts = [
            opt.build([p for _, p in pairs], [n for n, _ in pairs])
            for opt, pairs in zip(self._inner_optimizers, assigned, strict=True)
            if pairs
        ]
        self._params = [p for _, p in kept]
        self._names = [n for n, _ in kept]
        return self._join(parts)

    def apply_step(self, opt: Any, closure: Callable[[], Any] | None = None) -> Any:
        """Step every inner optimizer on its parameters (each unscales, clips, decays, averages
        as its own arguments say), then count the step."""
        out = opt._base_step(closure)
        self._iterations += 1
        return out

    def _state(self) -> dict[str, Any]:
        return {"iterations": [int(opt.iterations) for opt in self._built_inner]}

    def _load_state(self, state: dict[str, Any]) -> None:
        counts = state.get("iterations") or [0] * len(self._built_inner)
        for opt, count in zip(self._built_inner, counts, strict=True):
            opt.restored(int(count))

    def restored(self, iterations: int) -> None:
        self._iterations = int(iterations)

    def get_config(self) -> dict[str, Any]:
        mapping = self._optimizer_map
        if isinstance(mapping, OptimizerMap):
            map_config: dict[str, Any] = _serialize(mapping)
        else:  # a function: named only, it cannot be rebuilt from a file
            map_config = {"class_name": "function", "config": getattr(mapping, "__qualname__", "")}
        return {
            "optimizer_map": map_config,
            "loss_scale_factor": self.loss_scale_factor,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiOptimizer:
        config = dict(config)
        mapping = config.get("optimizer_map")
        if not isinstance(mapping, dict) or mapping.get("class_name") != "OptimizerMap":
            raise ValueError(
                "this MultiOptimizer chose optimizers with a function, which a config cannot "
                "rebuild: make it again (load_model(..., optimizer=MultiOptimizer(...)))"
            )
        config["optimizer_map"] = OptimizerMap.from_config(mapping.get("config") or {})
        return cls(**config)
