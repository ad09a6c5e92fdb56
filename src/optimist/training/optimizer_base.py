"""The base class of the Keras 3 optimizers (:mod:`optimist.training.optimizers`): Keras' base
optimizer's arguments and surface, and the torch-style optimizer it drives.

An optimizer needs no parameters when made: ``model.compile`` keeps the object and
:meth:`Optimizer.build` creates, when the model's parameters exist, the ``optimist.optim``
optimizer of the subclass (:attr:`Optimizer.torch_class`, torch conventions) with a per-step
hook; the subclass's hooks (``_torch_kwargs``, ``_adjust``, ``_momentum_key``,
``_apply_weight_decay``) turn its update into Keras' numbers.

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
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch

from optimist.training import schedules
from optimist.training.optimizer_view import LearningRate, check_learning_rate, keras_view

__all__ = ["Optimizer", "keras_adam_eps", "keras_path"]


def _number(name: str, value: Any, *, low: float = 0.0, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"`{name}` must be a number. Received: {name}={value!r}")
    value = float(value)
    if value < low or (high is not None and value > high):
        interval = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be in {interval}. Received: {name}={value}")
    return value


def keras_path(name: str) -> str:
    """Keras' variable path for a parameter's ``named_parameters()`` name: dots become slashes
    and a last part ``weight`` is Keras' ``kernel`` (optimist's ``Dense`` keeps its kernel as
    torch's ``weight``; its other layers already use Keras' names: ``bias``, ``gamma``,
    ``embeddings``, ``recurrent_kernel``): ``"dense.weight"`` -> ``"dense/kernel"``. Keras'
    own paths also start with a ``Sequential`` model's name and put an RNN's weights under its
    cell (``"sequential/lstm/lstm_cell/kernel"``); these do not."""
    parts = name.split(".")
    if parts[-1] == "weight":
        parts[-1] = "kernel"
    return "/".join(parts)


def keras_adam_eps(epsilon: float, beta_2: float, step: int) -> float:
    """torch's Adam ``eps`` that gives Keras' update at ``step``: Keras adds epsilon to
    ``sqrt(v)`` before bias correction, torch to ``sqrt(v / (1 - beta_2^t))`` after, so
    torch's is ``epsilon / sqrt(1 - beta_2^t)`` (0 with ``beta_2 = 1``)."""
    return epsilon / math.sqrt(1.0 - beta_2**step) if beta_2 < 1 else 0.0


def _optional(name: str, value: Any) -> float | None:
    return None if value is None else _number(name, value)


class Optimizer:
    """Base class of the Keras-style optimizers (:mod:`optimist.training.optimizers` maps each
    onto its torch-style optimizer)."""

    #: the Keras name (``"adam"``) and the optimist.optim class the update runs on
    keras_name: ClassVar[str] = "optimizer"
    torch_class: ClassVar[type[torch.optim.Optimizer]]
    #: the arguments of :attr:`torch_class` that make its own ``weight_decay`` Keras' decay
    #: (``p *= 1 - lr * wd`` before the update, inside the rule's one fused pass), or None:
    #: then this base class decays in a pass of its own (:meth:`_apply_weight_decay`)
    rule_decay: ClassVar[dict[str, Any] | None] = None

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
        self._names: list[str] = []  # one per parameter (build)
        self._decays: list[bool] = []  # per parameter: not excluded from weight decay (build)
        self._exclude_tensors: list[torch.Tensor] = []
        self._exclude_pattern: re.Pattern[str] | None = None
        self._ema: list[torch.Tensor] = []
        self._accumulators: list[torch.Tensor] = []
        self._last_lr: float | None = None
        self._restored_calls: int | None = None  # load_extra_state -> restored
        self._decay_in_rule = False  # Keras' decay done by the rule (rule_decay), see build
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
    def scales_loss(self) -> bool:
        """Whether :meth:`scale_loss` changes the loss (``fit`` then calls it before every
        ``backward``): a ``loss_scale_factor``, or a LossScaleOptimizer's dynamic scale."""
        return self.loss_scale_factor is not None

    def exclude_from_weight_decay(
        self,
        var_list: Iterable[torch.Tensor] | None = None,
        var_names: Sequence[str] | None = None,
    ) -> None:
        """Keras' ``exclude_from_weight_decay``: no weight decay for the tensors of ``var_list``
        (parameters, or views of them such as ``model.layers[0].kernel``) nor for parameters
        whose Keras name (the last part of :func:`keras_path`: ``"kernel"``, ``"bias"``,
        ``"gamma"``, ``"embeddings"``) a regex of ``var_names`` is found in
        (``var_names=["bias"]``). A call replaces the previous one's exclusions; after the
        optimizer is built they apply from the next step (Keras 3.15 says "before build" but
        its check never fires, and its next step follows the new exclusions)."""
        if isinstance(var_names, str):  # one name (Keras would take each letter as one)
            var_names = [var_names]
        self._exclude_tensors = list(var_list or [])
        try:
            self._exclude_pattern = re.compile("|".join(set(var_names))) if var_names else None
        except re.error as exc:
            raise ValueError(f"`var_names` must be regular expressions: {exc}") from None
        self._decays = [
            self._use_weight_decay(p, n) for p, n in zip(self._params, self._names, strict=True)
        ]
        self._sync_rule_decay()

    def _use_weight_decay(self, param: torch.Tensor, name: str) -> bool:
        """Keras' ``_use_weight_decay``: whether ``param`` (named ``name``) is decayed."""
        storage = param.untyped_storage().data_ptr()
        for t in self._exclude_tensors:
            if t is param or (
                t.numel() == param.numel() and t.untyped_storage().data_ptr() == storage
            ):
                return False
        short = keras_path(name).rsplit("/", 1)[-1]
        return self._exclude_pattern is None or self._exclude_pattern.search(short) is None

    def _to_decay(self, among: Sequence[bool] | None = None) -> list[torch.Tensor]:
        """The parameters that weight decay applies to this step: with a gradient, not
        excluded (:meth:`exclude_from_weight_decay`) and, if given, true in ``among``."""
        among = among if among is not None else [True] * len(self._params)
        rows = zip(self._params, self._decays, among, strict=True)
        return [p for p, decays, keep in rows if decays and keep and p.grad is not None]

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

    def _unchecked_group_values(self) -> dict[str, Any]:
        """Group values set after :attr:`torch_class`'s constructor, whose checks refuse values
        Keras allows where the rule stays defined (Lion's betas of 1, Adafactor's
        ``clip_threshold`` below 1)."""
        return {}

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        """Per-step changes to the torch optimizer's hyperparameters or state (before it runs)."""

    def _momentum_key(self) -> str | None:
        """State key of a buffer that Keras scales by the learning rate (see SGD)."""
        return None

    # -- building and stepping ----------------------------------------------------------------
    def build(
        self, params: Iterable[torch.Tensor], names: Iterable[str] | None = None
    ) -> torch.optim.Optimizer:
        """Create the torch-style optimizer over ``params`` (state starts fresh) and return it.

        ``names``: one per parameter, the model's ``named_parameters()`` names (``"dense.weight"``,
        what Keras calls a variable's path); ``model.compile`` passes them. Without them each
        parameter is named by its position (``"0"``, ``"1"``, ...)."""
        params = list(params)
        names = [str(i) for i in range(len(params))] if names is None else list(names)
        if len(names) != len(params):
            raise ValueError(f"got {len(names)} names for {len(params)} parameters")
        kept = [(n, p) for n, p in zip(names, params, strict=True) if p.requires_grad]
        self._params = [p for _, p in kept]
        self._names = [n for n, _ in kept]
        self._decays = [self._use_weight_decay(p, n) for n, p in kept]
        if not self._params:
            raise ValueError("the optimizer got no trainable parameters")
        kwargs = self._torch_kwargs()
        self._decay_in_rule = self._can_decay_in_rule()
        if self._decay_in_rule:
            kwargs = {**kwargs, "weight_decay": self.weight_decay, **(self.rule_decay or {})}
        opt = self.torch_class(self._params, lr=float(self.learning_rate), **kwargs)
        for group in opt.param_groups:
            group.update(self._unchecked_group_values())
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

    def _can_decay_in_rule(self) -> bool:
        """Whether the torch rule can do Keras' decay: it has the same decoupled decay
        (:attr:`rule_decay`) and it applies to every parameter (no exclusions)."""
        return bool(self.weight_decay) and self.rule_decay is not None and all(self._decays)

    def _sync_rule_decay(self) -> None:
        """Set the torch groups' ``weight_decay`` to what :meth:`_can_decay_in_rule` says now
        (after exclusions changed, or a checkpoint's groups were loaded)."""
        opt = self.torch_optimizer
        if opt is None or self.rule_decay is None:
            return
        self._decay_in_rule = self._can_decay_in_rule()
        for group in opt.param_groups:
            group["weight_decay"] = self.weight_decay if self._decay_in_rule else 0.0
            if self._decay_in_rule:
                group.update(self.rule_decay)

    def __call__(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        """An optimizer object is also a factory ``params -> torch.optim.Optimizer``."""
        return self.build(params)

    def _grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self._params if p.grad is not None]

    def _before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if (
            self._plain_rule
            and self._schedule is None
            and not (self.clipnorm or self.global_clipnorm or self.clipvalue)
            and (self._decay_in_rule or not self.weight_decay)
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
        with torch.no_grad():
            self._apply_weight_decay(lr)
        self._adjust(opt, self.iterations + 1)

    def _apply_weight_decay(self, lr: float) -> None:
        """Keras' decoupled decay ``p -= lr * weight_decay * p`` of the parameters about to be
        updated (those with a gradient), as Keras' ``_apply_weight_decay``, which a rule with
        rates of its own overrides (Muon)."""
        if not self._decay_in_rule:
            self._decay(lr, self.weight_decay)

    def _decay(self, lr: float, rate: float | None, among: Sequence[bool] | None = None) -> None:
        """``p *= 1 - lr * rate`` for the parameters :meth:`_to_decay` gives (none if ``rate``
        is 0 or None)."""
        if rate:
            params = self._to_decay(among)
            if params:
                torch._foreach_mul_(params, 1.0 - lr * rate)

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

    def extra_state(self) -> dict[str, Any]:
        """What this optimizer keeps beside the torch optimizer's state, for checkpoints (as
        Keras saves them as optimizer variables): ``"ema"``, the moving average of the weights
        (``use_ema``), and ``"accumulators"``, the gradients summed since the last update
        (``gradient_accumulation_steps``); only those that exist."""
        extra: dict[str, Any] = {}
        if self._ema:
            extra["ema"] = list(self._ema)
        if self._accumulators:
            extra["accumulators"] = list(self._accumulators)
            extra["calls"] = self._iterations  # the sums' place in the cycle of k calls
        return extra

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (after :meth:`build`), into this
        optimizer's own tensors."""
        self._sync_rule_decay()  # the loaded groups carry the saved run's weight_decay
        if "calls" in extra:
            self._restored_calls = int(extra["calls"])
        for key, mine in (("ema", self._ema), ("accumulators", self._accumulators)):
            saved = extra.get(key)
            if saved is None:
                continue
            shapes = [tuple(p.shape) for p in self._params]
            if [tuple(t.shape) for t in saved] != shapes:
                raise ValueError(f"the saved {key!r} does not fit this optimizer's parameters")
            if not mine:
                mine.extend(torch.zeros_like(p) for p in self._params)
            with torch.no_grad():
                torch._foreach_copy_(
                    mine, [t.to(p.device) for t, p in zip(saved, mine, strict=True)]
                )

    def restored(self, iterations: int) -> None:
        """After a checkpoint's state was loaded into the built optimizer: continue counting
        from ``iterations``, remembering the rate of the last step (for the momentum rescaling
        of SGD/RMSprop when a schedule moves on). With gradient accumulation the calls since
        the last update come back from the state's extra part (:meth:`load_extra_state`)."""
        calls, self._restored_calls = self._restored_calls, None
        k = self.gradient_accumulation_steps
        if k and calls is not None and calls // k == int(iterations):
            self._iterations = calls
        else:
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
