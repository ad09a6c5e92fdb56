"""``Model.compile`` and what it sets up: the loss, the metrics, the optimizer (built on the
model's parameters when they exist) and the learning-rate schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from optimist.training import losses as _losses
from optimist.training import metrics as _metrics
from optimist.training import optimizers as _keras_opt
from optimist.training import schedules as _keras_schedules


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, _metrics.Metric)) or callable(value):
        return [value]
    return list(value)


class CompileMixin:
    """Keras' ``compile`` and the optimizer's lazy construction (a part of :class:`Model`)."""

    def compile(  # type: ignore[override]
        self,
        optimizer: str | torch.optim.Optimizer | Callable[..., torch.optim.Optimizer] = "rmsprop",
        loss: str | _losses.Loss | Callable[..., torch.Tensor] | None = None,
        metrics: Sequence[str | _metrics.Metric | Callable[..., Any]] | None = None,
        lr_schedule: Any = None,
    ) -> None:
        """Configure training (Keras' ``compile``).

        ``optimizer``: a Keras name (the lowercased name of a class of :mod:`optimist.optimizers`
        that Keras 3 resolves by name: ``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"lion"``,
        ``"muon"``, ...: Keras 3's defaults and update rule), a Keras-style optimizer object
        (``optimist.optimizers.Adam(learning_rate=1e-3)``), another name of the registry
        :func:`optimist.optim.optimizer` (``"momentum"``, ``"radam"``...: torch's conventions),
        a ``torch.optim.Optimizer`` instance over this model's parameters, or a factory
        ``params -> Optimizer`` (e.g. ``functools.partial(torch.optim.SGD, lr=0.1)``). In every
        case ``model.optimizer`` is the ``torch.optim.Optimizer`` that runs the updates (a Keras
        object's is ``model.optimizer.keras_optimizer``). A model without parameters yet (no
        ``input_shape``) gets its optimizer when ``fit`` builds it from the first data it sees;
        an optimizer *instance* needs a built model.

        ``loss``: a name (``categorical_crossentropy``, ``sparse_categorical_crossentropy``,
        ``binary_crossentropy``, ``mse``, ``mae``, ``huber``, ...), a
        :class:`~optimist.training.losses.Loss` or a callable. ``metrics``: names
        (``accuracy``, ``top_k_accuracy``, ``mae``, ``mse``, ...), Metric instances or callables.

        ``lr_schedule`` (optimist's addition, for any optimizer): a schedule object
        (``optimist.optimizers.schedules.CosineDecay(...)``, ``...schedules.get("wsd", 1e-3,
        total_steps=...)``) or any ``callable(step) -> learning rate``; or the name of a schedule
        of :mod:`optimist.schedules` (``"warmup_cosine"``, ``"wsd"``, ``"inverse_sqrt"``...) or a
        dict ``{"name": ..., **its arguments}``, which then peaks at the optimizer's own
        learning rate and, where it takes ``total_steps`` and none is given, runs over the first
        ``fit``'s epochs x steps. It becomes ``model.optimizer.learning_rate``, evaluated before
        every update.

        Compiling also (re)seeds the shuffle generator from ``torch.initial_seed()``.
        """
        loss_fn = _losses.get(loss) if loss is not None else None
        metric_list = [
            _metrics.get(m, loss_name=loss_fn.name if loss_fn is not None else None)
            for m in _as_list(metrics)
        ]
        names = [m.name for m in metric_list]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        if "loss" in names:
            raise ValueError("a metric may not be called 'loss'")

        _keras_schedules.check(lr_schedule)
        self.optimizer = None
        self._optimizer_name = None
        self._lr_schedule = lr_schedule
        if isinstance(optimizer, str) and _keras_opt.is_keras_name(optimizer):
            optimizer = _keras_opt.get(optimizer)  # Keras 3's defaults and rule
        self._optimizer_spec = optimizer
        if isinstance(optimizer, _keras_opt.Optimizer):
            pass  # built on this model's parameters by _ensure_optimizer
        elif isinstance(optimizer, str):
            from optimist import optim

            optim.spec(optimizer)  # unknown names fail now, with close matches
            self._optimizer_name = optimizer.lower()
        elif isinstance(optimizer, torch.optim.Optimizer):
            self._check_optimizer(optimizer)
            self.optimizer = optimizer
        elif not callable(optimizer):
            raise ValueError(
                f"optimizer must be a name, a torch.optim.Optimizer or a factory, got "
                f"{type(optimizer).__name__}"
            )
        self.loss = loss_fn
        self.compiled_metrics = metric_list
        self._fold = None
        if (
            loss_fn is not None
            and loss_fn.logits_activation is not None
            and not loss_fn.from_logits
            and self._final_activation() == loss_fn.logits_activation
        ):
            self._fold = loss_fn.logits_activation
        self._compile_config = {
            "loss": self._loss_config(loss),
            "metrics": [
                self._metric_config(m, obj)
                for m, obj in zip(_as_list(metrics), metric_list, strict=True)
            ],
        }
        self._shuffle_generator = torch.Generator().manual_seed(torch.initial_seed())
        self.compiled = True
        if self.optimizer is None and self._is_built() and self._has_parameters():
            self._build_optimizer()
        if self.optimizer is not None and callable(lr_schedule):
            self._ensure_optimizer()  # a schedule object applies now; a name at fit (steps known)

    @staticmethod
    def _loss_config(loss: Any) -> Any:
        if loss is None or isinstance(loss, str):
            return loss
        if _losses.builtin_name(loss) is not None:
            return _losses.builtin_name(loss)
        if type(loss) in set(_losses.LOSSES.values()):
            return {"class": type(loss).__name__, "config": loss.get_config()}
        return None

    @staticmethod
    def _metric_config(spec: Any, metric: _metrics.Metric) -> Any:
        if isinstance(spec, str):
            return spec
        if isinstance(metric, _metrics.TopKAccuracy):
            return {"class": "TopKAccuracy", "k": metric.k, "name": metric.name}
        return None

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if not self._is_built():
            raise ValueError(
                "this model has no parameters yet (it builds on its first input), so an "
                "optimizer instance cannot hold them: pass input_shape= to the first layer, call "
                "model.build(input_shape), or pass the optimizer by name or as a factory"
            )
        mine = {id(p) for p in self.parameters()}
        theirs = [p for g in optimizer.param_groups for p in g["params"]]
        if theirs and not any(id(p) in mine for p in theirs):
            raise ValueError("the optimizer holds none of this model's parameters")

    def _keras_optimizer(self) -> _keras_opt.Optimizer | None:
        """The Keras-style optimizer object given to ``compile`` (by name or instance), if any."""
        spec = self._optimizer_spec
        return spec if isinstance(spec, _keras_opt.Optimizer) else None

    def _has_parameters(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def _ensure_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self._build_optimizer()
        if self._lr_schedule is not None:  # compile(lr_schedule=...), set once
            spec, self._lr_schedule = self._lr_schedule, None
            self.optimizer.learning_rate = _keras_schedules.resolve(
                spec, float(self.optimizer.learning_rate), self.__dict__.get("_fit_steps")
            )
        return self.optimizer

    def _build_optimizer(self) -> None:
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        if not params:
            raise ValueError("the model has no trainable parameters to optimize")
        spec = self._optimizer_spec
        if spec is None:
            raise RuntimeError(
                "the model has no optimizer: call model.compile(optimizer=..., loss=...) again"
            )
        if isinstance(spec, str):
            from optimist import optim

            self.optimizer = optim.optimizer(spec, params)
        elif isinstance(spec, _keras_opt.Optimizer):
            # the parameters' names too (Keras' variable paths: Muon's exclusions, OptimizerMap)
            self.optimizer = spec.build(params, names=[n for n, _ in named])
        else:
            opt = spec(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise ValueError(
                    f"the optimizer factory returned {type(opt).__name__}, not a "
                    f"torch.optim.Optimizer"
                )
            self.optimizer = opt

    def _require_compiled(self, what: str, need_loss: bool = True) -> None:
        if not self.compiled:
            raise RuntimeError(
                f"You must compile the model before calling {what}(): call "
                f"model.compile(optimizer=..., loss=..., metrics=[...]) first"
            )
        if need_loss and self.loss is None:
            raise RuntimeError(
                f"the model was compiled without a loss; call model.compile(optimizer=..., "
                f"loss=...) before {what}()"
            )
