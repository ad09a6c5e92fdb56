"""Losses by name, Keras semantics, computed stably.

Every loss is called as ``loss(y_true, y_pred, sample_weight=None, from_logits=False)`` and
returns the scalar mean over the batch (Keras' ``"sum_over_batch_size"``: per-sample losses times
their weights, summed, divided by the number of samples). When ``from_logits`` is true, ``y_pred``
holds pre-activation logits and the cross-entropies use ``log_softmax`` /
``binary_cross_entropy_with_logits`` (no overflow, no NaN at extreme logits). The training engine
sets ``from_logits`` itself when the model's last layer has a ``softmax`` (categorical losses) or
``sigmoid`` (binary cross-entropy) activation, and still returns probabilities from ``predict``.

Custom losses: any callable. A ``torch.nn`` loss module (``torch.nn.MSELoss()`` ...) is called
PyTorch-style as ``fn(y_pred, y_true)``; any other callable Keras-style as ``fn(y_true, y_pred)``.
Either may return a scalar or per-sample values (then averaged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

EPSILON = 1e-7  # Keras' backend epsilon, used to clip probabilities


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return str((None, *shape[1:]))


class Loss:
    """Base class. Subclasses implement ``per_sample`` and may override ``mean``."""

    name = "loss"
    #: "float" targets are cast to the default float dtype, "index" targets to int64.
    target_kind = "float"
    #: the final activation this loss can fold into a from-logits computation
    logits_activation: str | None = None

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def __call__(
        self,
        y_true: torch.Tensor,
        y_pred: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        from_logits: bool = False,
    ) -> torch.Tensor:
        logits = from_logits or self.from_logits
        y_true = self._align(y_true, y_pred)
        if sample_weight is None:
            return self.mean(y_true, y_pred, logits)
        per = self.per_sample(y_true, y_pred, logits)
        w = sample_weight.reshape(-1, *([1] * (per.dim() - 1))).to(per.dtype)
        return (per * w).mean()

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
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


def _probs_clipped(y_pred: torch.Tensor) -> torch.Tensor:
    p = y_pred / y_pred.sum(dim=-1, keepdim=True)
    return p.clamp(EPSILON, 1.0 - EPSILON)


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or probability) targets on the last axis."""

    name = "categorical_crossentropy"
    logits_activation = "softmax"

    def per_sample(self, y_true: torch.Tensor, y_pred: torch.Tensor, logits: bool) -> torch.Tensor:
        logp = torch.log_softmax(y_pred, dim=-1) if logits else _probs_clipped(y_pred).log()
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

    def __init__(self, delta: float = 1.0, from_logits: bool = False) -> None:
        super().__init__(from_logits)
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
}


def get(loss: str | Loss | Callable[..., torch.Tensor]) -> Loss:
    """Resolve a loss given by name, :class:`Loss` instance or callable."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        key = loss.lower()
        if key not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}. Valid names: {', '.join(sorted(LOSSES))}.")
        return LOSSES[key]()
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if callable(loss):
        return CustomLoss(loss)
    raise ValueError(f"loss must be a name, a Loss or a callable, got {type(loss).__name__}")


def categorical_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return CategoricalCrossentropy()(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return SparseCategoricalCrossentropy()(y_true, y_pred)


def binary_crossentropy(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return BinaryCrossentropy()(y_true, y_pred)


def mean_squared_error(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return MeanSquaredError()(y_true, y_pred)


def mean_absolute_error(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return MeanAbsoluteError()(y_true, y_pred)
