"""Keras 3 optimizers run by optimist's exact optimizers: ``optimist.optimizers.Adam(...)``.

These classes take Keras 3's argument names and defaults (``learning_rate``, ``beta_1``,
``epsilon=1e-7``, ``rho``, ``initial_accumulator_value``, ``weight_decay``, ``clipnorm``,
``global_clipnorm``, ``clipvalue``, ``use_ema``, a schedule as ``learning_rate``...) and follow
Keras 3's update rules. They need no parameters when made: ``model.compile`` keeps the object
and :meth:`Optimizer.build` creates, when the model's parameters exist, the matching
``optimist.optim`` optimizer (torch conventions) with hyperparameters and a per-step hook that
turn its update into Keras' numbers:

=============  ====================================================================================
Keras          how the torch-style optimizer is driven
=============  ====================================================================================
SGD            ``optim.SGD(lr, momentum, nesterov)``: Keras keeps ``lr`` inside its momentum
               (``m = momentum*m - lr*g``), torch outside (``b = momentum*b + g; p -= lr*b``);
               equal while lr is constant, and when lr changes (schedule, callback) the buffer
               is rescaled by ``lr_old / lr_new`` so the two stay equal.
Adam, AdamW    ``optim.Adam(lr, betas, amsgrad)``: Keras adds epsilon to ``sqrt(v)`` *before*
               bias correction (``sqrt(v) + eps``), torch after (``sqrt(v / (1 - beta_2^t)) +
               eps``); so torch's ``eps`` is set each step to ``epsilon / sqrt(1 - beta_2^t)``.
RMSprop        ``optim.RMSprop(lr, alpha=rho, eps=0, momentum, centered)``: Keras divides by
               ``sqrt(v + eps)``, torch by ``sqrt(v) + eps``; torch's ``square_avg`` holds
               ``v + epsilon`` (started at ``epsilon / rho`` and shifted by
               ``epsilon * (1 - rho) / rho`` before each step), so ``sqrt(square_avg)`` is
               Keras' denominator. Momentum buffers as for SGD.
Adagrad        ``optim.Adagrad(lr, eps=0, initial_accumulator_value=initial + epsilon)``: Keras
               divides by ``sqrt(acc + eps)``, torch by ``sqrt(acc) + eps``.
Adadelta       ``optim.Adadelta(lr, rho, eps)``: the same rule (epsilon inside both roots).
Adamax         ``optim.Adamax(lr, betas, eps)``: torch takes ``max(beta_2*u, |g| + eps)``, Keras
               ``max(beta_2*u, |g|)`` and adds eps after; ``exp_inf`` is shifted by
               ``epsilon * (1 - beta_2) / beta_2`` before each step so it holds Keras' ``u + eps``.
Nadam          ``optim.NAdam(lr, betas, eps, momentum_decay=1)``: Keras' momentum schedule
               ``beta_1 * (1 - 0.5 * 0.96 ** t)`` is torch's with ``momentum_decay=1``.
=============  ====================================================================================

Shared by all (Keras' base optimizer, applied in this order before each update): gradient
clipping (``clipnorm`` per tensor, ``global_clipnorm`` over all, or ``clipvalue`` per element),
then decoupled weight decay ``p -= lr * weight_decay * p`` (torch's ``weight_decay`` stays 0);
after the update, the moving average of the weights with ``use_ema`` (written into the model
every ``ema_overwrite_frequency`` steps and when ``fit`` ends). ``learning_rate`` is a float, a
schedule (:mod:`optimist.training.schedules`) or any ``callable(step)``, read before each step.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from optimist import optim
from optimist.training import schedules
from optimist.training.optimizer_view import LearningRate, check_learning_rate, keras_view

__all__ = [
    "SGD",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Nadam",
    "Optimizer",
    "RMSprop",
    "deserialize",
    "get",
    "serialize",
]


def _number(name: str, value: Any, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    if value < low or (high is not None and value > high):
        interval = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value}")
    return value


def _optional(name: str, value: Any) -> float | None:
    return None if value is None else _number(name, value)


class Optimizer:
    """Base class of the Keras-style optimizers (see the module docstring for the mapping)."""

    #: the Keras name (``"adam"``) and the optimist.optim class the update runs on
    keras_name: ClassVar[str] = "optimizer"
    torch_class: ClassVar[type[torch.optim.Optimizer]]

    def __init__(
        self,
        learning_rate: float | Callable[[int], float],
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("decay", None) is not None:
            warnings.warn(
                "Argument `decay` is no longer supported and will be ignored (Keras 3).",
                UserWarning,
                stacklevel=3,
            )
        if kwargs:
            hint = " (Keras 3 spells it `learning_rate`)" if "lr" in kwargs else ""
            raise ValueError(f"Argument(s) not recognized: {kwargs}{hint}")
        if callable(learning_rate):
            self._schedule: Callable[[int], float] | None = learning_rate
            self._learning_rate = float(learning_rate(0))
        else:
            self._schedule = None
            self._learning_rate = _number("learning_rate", learning_rate)
        self.weight_decay = _optional("weight_decay", weight_decay)
        self.clipnorm = _optional("clipnorm", clipnorm)
        self.clipvalue = _optional("clipvalue", clipvalue)
        self.global_clipnorm = _optional("global_clipnorm", global_clipnorm)
        if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}"
            )
        self.use_ema = bool(use_ema)
        self.ema_momentum = _number("ema_momentum", ema_momentum, high=1.0)
        if ema_overwrite_frequency is not None:
            _number("ema_overwrite_frequency", ema_overwrite_frequency, low=1)
        self.ema_overwrite_frequency = ema_overwrite_frequency
        if loss_scale_factor is not None:
            loss_scale_factor = _number("loss_scale_factor", loss_scale_factor)
            if not loss_scale_factor > 0:
                raise ValueError(
                    f"`loss_scale_factor` must be > 0. Received: loss_scale_factor="
                    f"{loss_scale_factor}"
                )
        self.loss_scale_factor: float | None = loss_scale_factor
        steps = gradient_accumulation_steps
        if steps and (
            isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not steps >= 2
        ):
            raise ValueError(
                "`gradient_accumulation_steps` must be an integer >= 2. Received: "
                f"gradient_accumulation_steps={steps}"
            )
        self.gradient_accumulation_steps: int | None = (
            int(gradient_accumulation_steps) if gradient_accumulation_steps else None
        )
        self.name = name or self.keras_name
        self._iterations = 0  # calls of step(); Keras' ``_iterations``
        self.torch_optimizer: torch.optim.Optimizer | None = None
        self._params: list[torch.Tensor] = []
        self._ema: list[torch.Tensor] = []
        self._accumulators: list[torch.Tensor] = []
        self._last_lr: float | None = None
        self._plain_rule = False

    # -- Keras' public surface ----------------------------------------------------------------
    @property
    def learning_rate(self) -> LearningRate:
        """The learning rate of the next step (a schedule is evaluated at the step count, as
        Keras: with gradient accumulation every call of ``step()`` counts). A float that can
        also be ``assign``-ed: ``opt.learning_rate.assign(1e-4)`` == ``opt.learning_rate = 1e-4``.
        """
        if self._schedule is not None:
            value = float(self._schedule(self._iterations))
        elif self.torch_optimizer is not None:
            value = float(self.torch_optimizer.param_groups[0]["lr"])
        else:
            value = self._learning_rate
        return LearningRate(value, self)

    @learning_rate.setter
    def learning_rate(self, value: float | Callable[[int], float]) -> None:
        if callable(value):
            self._schedule = value
            return
        self._schedule = None
        self._learning_rate = check_learning_rate(value)
        if self.torch_optimizer is not None:
            for group in self.torch_optimizer.param_groups:
                group["lr"] = self._learning_rate

    @property
    def iterations(self) -> int:
        """Updates applied so far (Keras: with ``gradient_accumulation_steps=k``, calls // k)."""
        k = self.gradient_accumulation_steps
        return self._iterations // k if k else self._iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        k = self.gradient_accumulation_steps
        self._iterations = int(value) * (k or 1)

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to call ``backward()`` on: ``loss * loss_scale_factor`` if one is set (the
        gradients are divided by it again before the update), as Keras' ``scale_loss``."""
        return loss if self.loss_scale_factor is None else loss * self.loss_scale_factor

    @property
    def variables(self) -> list[torch.Tensor]:
        """The optimizer's state tensors (after :meth:`build`)."""
        opt = self.torch_optimizer
        if opt is None:
            return []
        return [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]

    def get_config(self) -> dict[str, Any]:
        lr: Any = self._learning_rate
        if self._schedule is not None:
            lr = schedules.serialize(self._schedule)  # type: ignore[arg-type]
        return {
            "name": self.name,
            "learning_rate": lr,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "loss_scale_factor": self.loss_scale_factor,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            **self._rule_config(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        config = dict(config)
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = schedules.deserialize(lr)
        return cls(**config)

    def __repr__(self) -> str:
        lr = float(self.learning_rate)
        return f"<optimist.optimizers.{type(self).__name__} learning_rate={lr:g}>"

    # -- subclass hooks -----------------------------------------------------------------------
    def _rule_config(self) -> dict[str, Any]:
        """The rule's own constructor arguments (``beta_1``...)."""
        return {}

    def _torch_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of :attr:`torch_class` that realise the rule."""
        return {}

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Per-step changes to the torch optimizer's hyperparameters or state (before it runs)."""

    def _momentum_key(self) -> str | None:
        """State key of a buffer that Keras scales by the learning rate (see SGD)."""
        return None

    # -- building and stepping ----------------------------------------------------------------
    def build(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """Create the torch-style optimizer over ``params`` (state starts fresh) and return it."""
        self._params = [p for p in params if p.requires_grad]
        if not self._params:
            raise ValueError("the optimizer got no trainable parameters")
        opt = self.torch_class(self._params, lr=float(self.learning_rate), **self._torch_kwargs())
        opt.register_step_pre_hook(self._before_step)
        opt.keras_optimizer = self  # type: ignore[attr-defined]
        opt = keras_view(opt)  # its step() runs apply_step
        self.torch_optimizer = opt
        self._last_lr = None
        self._ema = [p.detach().clone() for p in self._params] if self.use_ema else []
        self._accumulators = []
        # no per-step hyperparameter or state changes of the rule's own (see _before_step)
        self._plain_rule = self._momentum_key() is None and type(self)._adjust is Optimizer._adjust
        return opt

    def __call__(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """An optimizer object is also a factory ``params -> torch.optim.Optimizer``."""
        return self.build(params)

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params if p.grad is not None]

    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if (
            self._plain_rule
            and self._schedule is None
            and not (self.clipnorm or self.global_clipnorm or self.clipvalue or self.weight_decay)
        ):
            return  # nothing to adjust (plain SGD, Adagrad, Adadelta, Nadam at a fixed rate)
        if self._schedule is not None:
            lr = float(self._schedule(self._iterations))
            for group in opt.param_groups:
                group["lr"] = lr
        lr = float(opt.param_groups[0]["lr"])
        key = self._momentum_key()
        if key is not None and self._last_lr not in (None, lr) and lr > 0:
            # Keras' buffer holds lr * torch's buffer: keep them equal when lr changes.
            buffers = [opt.state[p][key] for p in self._params if key in opt.state.get(p, {})]
            if buffers:
                torch._foreach_mul_(buffers, self._last_lr / lr)
        self._last_lr = lr
        if self.clipnorm or self.global_clipnorm or self.clipvalue:
            grads = self._grads()
            if grads:
                self._clip(grads)
        if self.weight_decay:
            with torch.no_grad():
                params = [p for p in self._params if p.grad is not None]
                if params:
                    torch._foreach_mul_(params, 1.0 - lr * self.weight_decay)
        self._adjust(opt, self.iterations + 1)

    def _clip(self, grads: list[torch.Tensor]) -> None:
        if self.clipnorm:
            for g, norm in zip(grads, torch._foreach_norm(grads), strict=True):
                g.mul_(self.clipnorm / torch.clamp(norm, min=self.clipnorm))
        elif self.global_clipnorm:
            norms = torch._foreach_norm(grads)
            total = torch.linalg.vector_norm(torch.stack(norms))
            # clip / max(norm, clip); a non-finite norm makes every gradient NaN, as in Keras
            scale = self.global_clipnorm * torch.minimum(
                1.0 / total, total.new_tensor(1.0) / self.global_clipnorm
            )
            torch._foreach_mul_(grads, scale + (total - total))
        elif self.clipvalue:
            for g in grads:
                g.clamp_(-self.clipvalue, self.clipvalue)

    def apply_step(self, opt: Any, closure: Callable[[], Any] | None = None) -> Any:
        """What the built optimizer's ``step()`` runs (Keras' ``apply``): unscale the
        gradients by ``loss_scale_factor``; with ``gradient_accumulation_steps=k`` add them
        to the accumulators and update only on every k-th call, with ``(g + acc) / k``; the
        update itself (clipping, decay, the rule: the torch optimizer's step and its hooks);
        then the moving average with ``use_ema`` (updated on every call, as Keras)."""
        if (
            self.loss_scale_factor is None
            and not self.gradient_accumulation_steps
            and not self.use_ema
        ):  # the common case, kept short: it runs every batch
            out = opt._base_step(closure)
            self._iterations += 1
            return out
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        raw = self._iterations
        params = [p for p in self._params if p.grad is not None]
        grads = [p.grad for p in params]
        if self.loss_scale_factor is not None and grads:
            torch._foreach_div_(grads, self.loss_scale_factor)
        k = self.gradient_accumulation_steps
        if k:
            if not self._accumulators:
                self._accumulators = [torch.zeros_like(p) for p in self._params]
            pairs = zip(self._params, self._accumulators, strict=True)
            accs = [a for p, a in pairs if p.grad is not None]
            if (raw + 1) % k:
                if grads:
                    torch._foreach_add_(accs, grads)
            else:
                if grads:
                    torch._foreach_add_(grads, accs)
                    torch._foreach_div_(grads, k)
                opt._base_step()
                torch._foreach_zero_(self._accumulators)
        else:
            opt._base_step()
        if self.use_ema:
            self._update_ema(raw // k if k else raw)
        self._iterations = raw + 1
        return loss

    def _update_ema(self, iterations: int) -> None:
        weights = [p.detach() for p in self._params]
        if iterations == 0:
            torch._foreach_copy_(self._ema, weights)
        else:
            torch._foreach_lerp_(self._ema, weights, 1.0 - self.ema_momentum)
        freq = self.ema_overwrite_frequency
        if freq and (iterations + 1) % freq == 0:
            self.finalize_variable_values()

    def restored(self, iterations: int) -> None:
        """After a checkpoint's state was loaded into the built optimizer: continue counting
        from ``iterations``, remembering the rate of the last step (for the momentum rescaling
        of SGD/RMSprop when a schedule moves on)."""
        self.iterations = int(iterations)
        opt = self.torch_optimizer
        if self._iterations and opt is not None:
            if self._schedule is not None:
                self._last_lr = float(self._schedule(self._iterations - 1))
            else:
                self._last_lr = float(opt.param_groups[0]["lr"])

    def finalize_variable_values(self, var_list: Any = None) -> None:
        """With ``use_ema``: write the moving average of the weights into the model (``fit``
        calls this when it ends, as Keras does)."""
        if self.use_ema and self._ema:
            with torch.no_grad():
                torch._foreach_copy_([p.data for p in self._params], self._ema)


class SGD(Optimizer):
    """Keras' SGD: ``learning_rate=0.01``, ``momentum=0.0``, ``nesterov=False``."""

    keras_name = "sgd"
    torch_class = optim.SGD

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.momentum = _number("momentum", momentum, high=1.0)
        self.nesterov = bool(nesterov)

    def _rule_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _momentum_key(self) -> str | None:
        return "momentum_buffer" if self.momentum else None


class _AdamBase(Optimizer):
    def __init__(
        self,
        learning_rate: float | Callable[[int], float],
        beta_1: float,
        beta_2: float,
        epsilon: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _number("beta_1", beta_1, high=1.0)
        self.beta_2 = _number("beta_2", beta_2, high=1.0)
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Adam(_AdamBase):
    """Keras' Adam: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
    amsgrad=False``."""

    keras_name = "adam"
    torch_class = optim.Adam

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        self.amsgrad = bool(amsgrad)

    def _rule_config(self) -> dict[str, Any]:
        return {**super()._rule_config(), "amsgrad": self.amsgrad}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "betas": (self.beta_1, self.beta_2),
            "eps": self.epsilon,
            "amsgrad": self.amsgrad,
        }

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # Keras: sqrt(v) + eps before bias correction == torch's sqrt(v / bc2) + eps / sqrt(bc2)
        eps = self.epsilon / math.sqrt(1.0 - self.beta_2**step) if self.beta_2 < 1 else 0.0
        for group in opt.param_groups:
            group["eps"] = eps


class AdamW(Adam):
    """Keras' AdamW: Adam with ``weight_decay=0.004`` (decoupled, ``p -= lr * wd * p``)."""

    keras_name = "adamw"

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **kwargs: Any,
    ) -> None:
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(
            learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs
        )


class Adamax(_AdamBase):
    """Keras' Adamax: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``."""

    keras_name = "adamax"
    torch_class = optim.Adamax

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)
        if not self.beta_2 > 0:
            raise ValueError("`beta_2` must be > 0 for Adamax. Received: beta_2=0")

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon}

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # exp_inf holds Keras' u + eps: shift so that beta_2 * exp_inf == beta_2 * u + eps.
        # (Before the first step exp_inf is 0 and max(0, |g| + eps) is already u_1 + eps.)
        inf = [opt.state[p]["exp_inf"] for p in self._params if "exp_inf" in opt.state.get(p, {})]
        if inf:
            torch._foreach_add_(inf, self.epsilon * (1.0 - self.beta_2) / self.beta_2)


class Nadam(_AdamBase):
    """Keras' Nadam: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``, momentum
    schedule ``beta_1 * (1 - 0.5 * 0.96 ** t)``."""

    keras_name = "nadam"
    torch_class = optim.NAdam

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, **kwargs)

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"betas": (self.beta_1, self.beta_2), "eps": self.epsilon, "momentum_decay": 1.0}


class RMSprop(Optimizer):
    """Keras' RMSprop: ``learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
    centered=False``."""

    keras_name = "rmsprop"
    torch_class = optim.RMSprop

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho = _number("rho", rho, high=1.0)
        if not self.rho > 0:
            raise ValueError("`rho` must be > 0 for RMSprop. Received: rho=0")
        self.momentum = _number("momentum", momentum, high=1.0)
        self.epsilon = _number("epsilon", epsilon)
        self.centered = bool(centered)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "rho": self.rho,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "centered": self.centered,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        return {
            "alpha": self.rho,
            "eps": 0.0,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def _momentum_key(self) -> str | None:
        return "momentum_buffer" if self.momentum else None

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # square_avg holds Keras' v + eps after each step; before a step it must hold
        # v + eps / rho, so that rho * square_avg + (1 - rho) * g^2 == v_new + eps.
        shift, start = [], self.epsilon / self.rho
        keep = torch.preserve_format
        for p in self._params:
            if p.grad is None:
                continue
            state = opt.state[p]
            if not state:  # torch's state layout, created here so it can start at eps / rho
                wide = torch.get_default_dtype() == torch.float64
                state["step"] = torch.tensor(0.0, dtype=torch.float64 if wide else torch.float32)
                state["square_avg"] = torch.full_like(p, start, memory_format=keep)
                if self.momentum > 0:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=keep)
                if self.centered:
                    state["grad_avg"] = torch.zeros_like(p, memory_format=keep)
            else:
                shift.append(state["square_avg"])
        if shift:
            torch._foreach_add_(shift, start - self.epsilon)


class Adagrad(Optimizer):
    """Keras' Adagrad: ``learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7``."""

    keras_name = "adagrad"
    torch_class = optim.Adagrad

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _number(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {
            "initial_accumulator_value": self.initial_accumulator_value,
            "epsilon": self.epsilon,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        # sqrt(acc + eps) == sqrt(acc') with acc' started at initial + eps, torch's eps = 0
        return {
            "eps": 0.0,
            "initial_accumulator_value": self.initial_accumulator_value + self.epsilon,
        }


class Adadelta(Optimizer):
    """Keras' Adadelta: ``learning_rate=0.001, rho=0.95, epsilon=1e-7``."""

    keras_name = "adadelta"
    torch_class = optim.Adadelta

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        rho: float = 0.95,
        epsilon: float = 1e-7,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate, **kwargs)
        self.rho = _number("rho", rho, high=1.0)
        self.epsilon = _number("epsilon", epsilon)

    def _rule_config(self) -> dict[str, Any]:
        return {"rho": self.rho, "epsilon": self.epsilon}

    def _torch_kwargs(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.epsilon}


_CLASSES: dict[str, type[Optimizer]] = {
    cls.keras_name: cls for cls in (SGD, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam)
}


def get(identifier: str | Optimizer | dict[str, Any]) -> Optimizer:
    """A Keras optimizer from a name (``"rmsprop"``, Keras 3's defaults), a config, or itself."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier.lower() in _CLASSES:
        return _CLASSES[identifier.lower()]()
    raise ValueError(
        f"Could not interpret optimizer identifier: {identifier!r}. Keras names: "
        f"{', '.join(sorted(_CLASSES))}"
    )


def is_keras_name(name: str) -> bool:
    return name.lower() in _CLASSES


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config: dict[str, Any]) -> Optimizer:
    by_class = {cls.__name__: cls for cls in _CLASSES.values()}
    cls = by_class.get(config.get("class_name", ""))
    if cls is None:
        raise ValueError(f"unknown optimizer class {config.get('class_name')!r}")
    return cls.from_config(config.get("config", {}))
