"""Losses by name, Keras semantics, computed stably.

Every loss is called as ``loss(y_true, y_pred, sample_weight=None, from_logits=False)`` and
returns the scalar mean over the batch (Keras' ``"sum_over_batch_size"``: per-sample losses times
their weights, summed, divided by the number of samples; ``reduction="sum"`` or ``"none"`` as in
Keras). The module-level functions (``categorical_crossentropy(y_true, y_pred)``...) return the
per-sample values, as Keras' do, and given to ``compile`` they are the built-in loss of that
name (stable from-logits folding, ``class_weight``, saved with the model).

When ``from_logits`` is true, ``y_pred`` holds pre-activation logits and the cross-entropies
use ``log_softmax`` / ``binary_cross_entropy_with_logits`` (no overflow, no NaN at extreme
logits). The training engine sets ``from_logits`` itself when the model's last layer has a
``softmax`` (categorical losses) or ``sigmoid`` (binary cross-entropy) activation, and still
returns probabilities from ``predict``.

Custom losses: any callable. A ``torch.nn`` loss module (``torch.nn.MSELoss()`` ...) is called
PyTorch-style as ``fn(y_pred, y_true)``; any other callable Keras-style as ``fn(y_true, y_pred)``.
Either may return a scalar or per-sample values (then averaged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalHinge",
    "CosineSimilarity",
    "CustomLoss",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LOSSES",
    "LogCosh",
    "Loss",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Poisson",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "binary_crossentropy",
    "builtin_name",
    "categorical_crossentropy",
    "categorical_hinge",
    "cosine_similarity",
    "get",
    "hinge",
    "huber",
    "kl_divergence",
    "kld",
    "log_cosh",
    "logcosh",
    "mae",
    "mape",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_error",
    "mean_squared_logarithmic_error",
    "mse",
    "msle",
    "poisson",
    "sparse_categorical_crossentropy",
    "squared_hinge",
]


EPSILON = 1e-7  # Keras' backend epsilon, used to clip probabilities


_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "none", None)


def _as_tensor(value: Any, dtype: torch.dtype | None) -> torch.Tensor:
    """NumPy arrays, lists and numbers as tensors cast to ``dtype``; a tensor keeps integer
    labels as they are (the engine passes one-hot targets as int64 labels)."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value
    t = torch.as_tensor(np.asarray(value))
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return str((None, *shape[1:]))


class Loss:
    """Base class. Subclasses implement ``per_sample`` and may override ``mean``."""

    name = "loss"
    #: "float" targets are cast to the default float dtype, "index" targets to int64.
    target_kind = "float"
    #: the final activation this loss can fold into a from-logits computation
    logits_activation: str | None = None

    def __init__(
        self,
        from_logits: bool = False,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = None,
    ) -> None:
        self.from_logits = bool(from_logits)
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"Invalid value for argument `reduction`. Expected one of "
                f"{sorted(r for r in _REDUCTIONS if r)}. Received: reduction={reduction!r}"
            )
        self.reduction = reduction
        if name is not None:
            self.name = name

    def __call__(
        self,
        y_true: Any,
        y_pred: Any,
        sample_weight: Any = None,
        from_logits: bool | str = False,
    ) -> torch.Tensor:
        """The loss of a batch: by default the mean over samples of the (weighted) per-sample
        losses (``reduction="sum_over_batch_size"``); ``"sum"`` sums them, ``"none"``/``None``
        returns them. NumPy or list arguments are accepted, as in Keras."""
        y_pred = _as_tensor(y_pred, None)
        y_true = _as_tensor(y_true, y_pred.dtype if self.target_kind == "float" else None)
        logits = from_logits or self.from_logits
        y_true = self._align(y_true, y_pred)
        reduction = self.reduction
        if sample_weight is None and reduction == "sum_over_batch_size":
            return self.mean(y_true, y_pred, logits)
        per = self.per_sample(y_true, y_pred, logits)
        if sample_weight is not None:
            sample_weight = _as_tensor(sample_weight, per.dtype)
            per = per * sample_weight.reshape(-1, *([1] * (per.dim() - 1))).to(per.dtype)
        if reduction == "sum_over_batch_size":
            return per.mean()
        if reduction == "sum":
            return per.sum()
        if reduction == "mean":
            return per.sum() / per.numel()
        return per

    def _align(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        if y_true.shape != y_pred.shape and y_true.numel() == y_pred.numel():
            return y_true.reshape(y_pred.shape)
        return y_true

    def per_sample(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return self.per_sample(y_true, y_pred, logits).mean()

    def check_targets(self, y_true: torch.Tensor, output_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` if ``y_true`` cannot be a target for outputs of that shape."""
        per_target = y_true[0].numel() if y_true.shape[0] else 0
        per_output = int(torch.Size(output_shape[1:]).numel())
        if y_true.shape[0] and per_target != per_output:
            raise ValueError(
                f"{self.name}: targets of shape {_fmt_shape(tuple(y_true.shape))} do not match "
                f"the model output shape {_fmt_shape(output_shape)}"
            )

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"from_logits": self.from_logits}
        if self.reduction != "sum_over_batch_size":
            config["reduction"] = self.reduction
        if self.name != type(self).name:
            config["name"] = self.name
        return config

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _probs_clipped(y_pred: torch.Tensor) -> torch.Tensor:
    p = y_pred / y_pred.sum(dim=-1, keepdim=True)
    return p.clamp(EPSILON, 1.0 - EPSILON)


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or probability) targets on the last axis."""

    name = "categorical_crossentropy"
    logits_activation = "softmax"

    # ``y_true`` may also be int64 class labels: the engine passes exact one-hot targets that
    # way (converted once per data set), which is the same loss computed more cheaply.
    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        logp = torch.log_softmax(y_pred, dim=-1) if logits else _probs_clipped(y_pred).log()
        if y_true.dtype == torch.long:
            return -logp.gather(-1, y_true.unsqueeze(-1)).squeeze(-1)
        return -(y_true * logp).sum(dim=-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        if logits and y_pred.dim() == 2:
            return F.cross_entropy(y_pred, y_true)
        return self.per_sample(y_true, y_pred, logits).mean()

    def check_targets(self, y_true: torch.Tensor, output_shape: tuple[int, ...]) -> None:
        if tuple(y_true.shape[1:]) != tuple(output_shape[1:]):
            hint = ""
            if y_true.dim() == 1 or (y_true.dim() == 2 and y_true.shape[-1] == 1):
                hint = (
                    "; for integer class labels use loss='sparse_categorical_crossentropy' or "
                    "one-hot encode them with optimist.utils.to_categorical"
                )
            raise ValueError(
                f"categorical_crossentropy expects one-hot targets shaped like the model output "
                f"{_fmt_shape(output_shape)}, got targets of shape "
                f"{_fmt_shape(tuple(y_true.shape))}{hint}"
            )
        if y_true.numel() and bool((y_true < 0).any()):
            raise ValueError("categorical_crossentropy targets must be non-negative")


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels in ``[0, num_classes)``."""

    name = "sparse_categorical_crossentropy"
    target_kind = "index"
    logits_activation = "softmax"

    def _align(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        if y_true.dim() == y_pred.dim():  # (N, 1) labels
            y_true = y_true.squeeze(-1)
        return y_true.long() if y_true.dtype != torch.long else y_true

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        logp = torch.log_softmax(y_pred, dim=-1) if logits else _probs_clipped(y_pred).log()
        return -logp.gather(-1, y_true.unsqueeze(-1)).squeeze(-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        if logits:
            return F.cross_entropy(y_pred.reshape(-1, y_pred.shape[-1]), y_true.reshape(-1))
        return self.per_sample(y_true, y_pred, logits).mean()

    def check_targets(self, y_true: torch.Tensor, output_shape: tuple[int, ...]) -> None:
        classes = output_shape[-1]
        expected = tuple(output_shape[1:-1])
        got = tuple(y_true.shape[1:])
        if got != expected and got != (*expected, 1):
            raise ValueError(
                f"sparse_categorical_crossentropy expects integer labels of shape "
                f"{_fmt_shape((0, *expected))} for model output {_fmt_shape(output_shape)}, got "
                f"{_fmt_shape(tuple(y_true.shape))}"
                + (
                    "; for one-hot targets use loss='categorical_crossentropy'"
                    if got == tuple(output_shape[1:])
                    else ""
                )
            )
        if y_true.is_floating_point() and bool((y_true != y_true.round()).any()):
            raise ValueError("sparse_categorical_crossentropy labels must be whole numbers")
        if y_true.numel():
            lo, hi = int(y_true.min()), int(y_true.max())
            if lo < 0 or hi >= classes:
                raise ValueError(
                    f"sparse_categorical_crossentropy labels must be in [0, {classes}) for a "
                    f"model with {classes} outputs; got labels from {lo} to {hi}"
                )


class BinaryCrossentropy(Loss):
    """Binary cross-entropy, targets in ``[0, 1]``, averaged over the last axis."""

    name = "binary_crossentropy"
    logits_activation = "sigmoid"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        if logits:
            per = F.binary_cross_entropy_with_logits(y_pred, y_true, reduction="none")
        else:
            p = y_pred.clamp(EPSILON, 1.0 - EPSILON)
            per = -(y_true * p.log() + (1.0 - y_true) * (1.0 - p).log())
        return per.mean(dim=-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        if logits:
            return F.binary_cross_entropy_with_logits(y_pred, y_true)
        return self.per_sample(y_true, y_pred, logits).mean()

    def check_targets(self, y_true: torch.Tensor, output_shape: tuple[int, ...]) -> None:
        super().check_targets(y_true, output_shape)
        if y_true.numel():
            lo, hi = float(y_true.min()), float(y_true.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"binary_crossentropy targets must lie in [0, 1]; got values from {lo:g} to "
                    f"{hi:g}"
                )


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return (y_pred - y_true).square().mean(dim=-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return F.mse_loss(y_pred, y_true)


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return (y_pred - y_true).abs().mean(dim=-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return F.l1_loss(y_pred, y_true)


class Huber(Loss):
    """``0.5 x^2`` for ``|x| <= delta``, else ``delta (|x| - 0.5 delta)``; mean over last axis."""

    name = "huber"

    def __init__(self, delta: float = 1.0, from_logits: bool = False, **kwargs: Any) -> None:
        super().__init__(from_logits, **kwargs)
        if delta <= 0:
            raise ValueError(f"Huber delta must be positive, got {delta}")
        self.delta = float(delta)

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta).mean(dim=-1)

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return F.huber_loss(y_pred, y_true, delta=self.delta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self.delta}


class KLDivergence(Loss):
    """``sum(y_true * log(y_true / y_pred))`` over the last axis, both clipped to [eps, 1]."""

    name = "kl_divergence"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        t = y_true.clamp(EPSILON, 1.0)
        p = y_pred.clamp(EPSILON, 1.0)
        return (t * (t / p).log()).sum(dim=-1)


class LogCosh(Loss):
    """``mean(log(cosh(y_pred - y_true)))`` over the last axis, computed without overflow."""

    name = "log_cosh"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        x = y_pred - y_true
        return (x + F.softplus(-2.0 * x) - torch.log(x.new_tensor(2.0))).mean(dim=-1)


class Poisson(Loss):
    """``mean(y_pred - y_true * log(y_pred + eps))`` over the last axis."""

    name = "poisson"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return (y_pred - y_true * (y_pred + EPSILON).log()).mean(dim=-1)


class MeanAbsolutePercentageError(Loss):
    """``100 * mean(|y_true - y_pred| / max(|y_true|, eps))`` over the last axis."""

    name = "mean_absolute_percentage_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        diff = (y_true - y_pred).abs() / y_true.abs().clamp_min(EPSILON)
        return 100.0 * diff.mean(dim=-1)


class MeanSquaredLogarithmicError(Loss):
    """``mean((log(max(y_pred, eps) + 1) - log(max(y_true, eps) + 1))^2)`` over the last axis."""

    name = "mean_squared_logarithmic_error"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        first = torch.log1p(y_pred.clamp_min(EPSILON))
        second = torch.log1p(y_true.clamp_min(EPSILON))
        return (first - second).square().mean(dim=-1)


def _signed_labels(y_true: torch.Tensor) -> torch.Tensor:
    """Keras' hinge targets: labels in {0, 1} become {-1, 1}; {-1, 1} stay."""
    if y_true.numel() and bool(((y_true == 0) | (y_true == 1)).all()):
        return 2.0 * y_true - 1.0
    return y_true


class Hinge(Loss):
    """``mean(max(1 - y_true * y_pred, 0))`` over the last axis (labels -1/1 or 0/1)."""

    name = "hinge"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return (1.0 - _signed_labels(y_true) * y_pred).clamp_min(0.0).mean(dim=-1)


class SquaredHinge(Loss):
    """``mean(max(1 - y_true * y_pred, 0)^2)`` over the last axis (labels -1/1 or 0/1)."""

    name = "squared_hinge"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return (1.0 - _signed_labels(y_true) * y_pred).clamp_min(0.0).square().mean(dim=-1)


class CategoricalHinge(Loss):
    """``max(max((1 - y_true) * y_pred) - sum(y_true * y_pred) + 1, 0)`` (one-hot targets)."""

    name = "categorical_hinge"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        pos = (y_true * y_pred).sum(dim=-1)
        neg = ((1.0 - y_true) * y_pred).amax(dim=-1)
        return (neg - pos + 1.0).clamp_min(0.0)


class CosineSimilarity(Loss):
    """``-sum(l2_normalize(y_true) * l2_normalize(y_pred))`` over the last axis (Keras' sign:
    minimising it aligns the vectors)."""

    name = "cosine_similarity"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        def unit(t: torch.Tensor) -> torch.Tensor:
            return t * torch.rsqrt(t.square().sum(dim=-1, keepdim=True).clamp_min(1e-12))

        return -(unit(y_true) * unit(y_pred)).sum(dim=-1)


_TORCH_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)


class CustomLoss(Loss):
    """Wraps a user callable (see the module docstring for the calling convention)."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__(False)
        self.fn = fn
        self.torch_style = isinstance(fn, nn.Module)
        self.name = getattr(fn, "__name__", type(fn).__name__)
        if isinstance(fn, _TORCH_INDEX_LOSSES):
            self.target_kind = "index"

    def _align(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        if self.target_kind == "index":
            return y_true
        return super()._align(y_true, y_pred)

    def _raw(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
        out = self.fn(y_pred, y_true) if self.torch_style else self.fn(y_true, y_pred)
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(out, dtype=y_pred.dtype, device=y_pred.device)
        return out

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        out = self._raw(y_true, y_pred)
        if out.dim() == 0:
            raise ValueError(
                f"loss {self.name!r} returns a scalar, so it cannot be weighted per sample "
                f"(class_weight / sample_weight); return one value per sample instead"
            )
        return out

    def mean(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        return self._raw(y_true, y_pred).mean()

    def check_targets(self, y_true: torch.Tensor, output_shape: tuple[int, ...]) -> None:
        pass

    def __repr__(self) -> str:
        return f"CustomLoss({self.fn!r})"


LOSSES: dict[str, Callable[[], Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
    "huber": Huber,
    "huber_loss": Huber,
    "kl_divergence": KLDivergence,
    "kld": KLDivergence,
    "log_cosh": LogCosh,
    "logcosh": LogCosh,
    "poisson": Poisson,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mape": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "msle": MeanSquaredLogarithmicError,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "cosine_similarity": CosineSimilarity,
}


def get(loss: str | Loss | Callable[..., torch.Tensor]) -> Loss:
    """Resolve a loss given by name, :class:`Loss` instance or class, built-in function
    (``losses.categorical_crossentropy``: the same as its name) or custom callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.lower()
        if key not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}. Valid names: {', '.join(sorted(LOSSES))}.")
        return LOSSES[key]()
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    builtin = builtin_name(loss)
    if builtin is not None:
        return LOSSES[builtin]()
    if callable(loss):
        return CustomLoss(loss)
    raise ValueError(f"loss must be a name, a Loss or a callable, got {type(loss).__name__}")


def builtin_name(fn: Any) -> str | None:
    """The name of a built-in loss function of this module (``categorical_crossentropy``...)."""
    return _FUNCTION_NAMES.get(id(fn)) if callable(fn) else None


def _function(name: str) -> Callable[..., torch.Tensor]:
    cls = LOSSES[name]

    def loss_fn(y_true: Any, y_pred: Any, from_logits: bool = False) -> torch.Tensor:
        return cls(from_logits=from_logits, reduction="none")(y_true, y_pred)

    loss_fn.__name__ = loss_fn.__qualname__ = name
    loss_fn.__doc__ = f"Per-sample {name} (Keras' loss function; see :class:`{cls.__name__}`)."
    return loss_fn


categorical_crossentropy = _function("categorical_crossentropy")
sparse_categorical_crossentropy = _function("sparse_categorical_crossentropy")
binary_crossentropy = _function("binary_crossentropy")
mean_squared_error = mse = _function("mean_squared_error")
mean_absolute_error = mae = _function("mean_absolute_error")
mean_absolute_percentage_error = mape = _function("mean_absolute_percentage_error")
mean_squared_logarithmic_error = msle = _function("mean_squared_logarithmic_error")
huber = _function("huber")
kl_divergence = kld = _function("kl_divergence")
log_cosh = logcosh = _function("log_cosh")
poisson = _function("poisson")
hinge = _function("hinge")
squared_hinge = _function("squared_hinge")
categorical_hinge = _function("categorical_hinge")
cosine_similarity = _function("cosine_similarity")

_FUNCTION_NAMES: dict[int, str] = {
    id(fn): fn.__name__
    for fn in (
        categorical_crossentropy,
        sparse_categorical_crossentropy,
        binary_crossentropy,
        mean_squared_error,
        mean_absolute_error,
        mean_absolute_percentage_error,
        mean_squared_logarithmic_error,
        huber,
        kl_divergence,
        log_cosh,
        poisson,
        hinge,
        squared_hinge,
        categorical_hinge,
        cosine_similarity,
    )
}
