"""Metrics by name, accumulated without a host sync per batch (see :class:`Metric`).

A metric is fed batches with ``update(y_true, y_pred, from_logits)`` and read with ``result()``
(one ``.item()``). ``from_logits`` is ``False`` or ``"softmax"``/``"sigmoid"``: then ``y_pred``
are the pre-activation logits of that final activation (the engine folds it into the loss);
argmax-based metrics use them as they are, the others apply the activation first.

Names: ``accuracy``/``acc`` (categorical, sparse or binary chosen like Keras: from the loss, else
from the shapes), ``categorical_accuracy``, ``sparse_categorical_accuracy``, ``binary_accuracy``,
``top_k_accuracy`` (k=5; one-hot or integer labels), ``mae``/``mean_absolute_error``,
``mse``/``mean_squared_error``. A callable ``fn(y_true, y_pred)`` returning per-sample values or a
batch mean is averaged over samples. The key in the logs is the name given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "METRIC_NAMES",
    "MeanAbsoluteError",
    "MeanMetricWrapper",
    "MeanSquaredError",
    "Metric",
    "Precision",
    "Recall",
    "AUC",
    "F1Score",
    "FBetaScore",
    "SparseCategoricalAccuracy",
    "TopKAccuracy",
    "get",
]


class Metric:
    """Base class: a running mean ``total / count``.

    The total of batches on the CPU is kept as a Python number (``.item()`` costs nothing
    there, while an in-place add on a 0-d tensor is a kernel launch of several microseconds);
    that of batches on an accelerator as a tensor (no host sync per batch). ``_total`` reads
    both together as one tensor (for reductions across ranks)."""

    name = "metric"

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._host: float | int | None = None
        self._device_total: torch.Tensor | None = None
        self._count = 0

    def reset(self) -> None:
        self._host = None
        self._device_total = None
        self._count = 0

    @property
    def _total(self) -> torch.Tensor | None:
        host, dev = self._host, self._device_total
        if host is None:
            return dev
        t = torch.tensor(host, dtype=torch.int64 if isinstance(host, int) else torch.float64)
        return t if dev is None else dev + t.to(dev.device)

    @_total.setter
    def _total(self, value: torch.Tensor | None) -> None:
        self._host = None
        self._device_total = value

    def _add(self, value: torch.Tensor, count: int) -> None:
        if value.is_cpu and value.dim() == 0 and not _distributed_run():
            v = value.item()
            self._host = v if self._host is None else self._host + v
        elif self._device_total is None:
            value = value.detach()
            # counts (accuracy hits) stay int64: exact, and no dtype promotion per batch
            wide = value if not value.is_floating_point() else value.double()
            self._device_total = wide.clone()
        else:
            self._device_total.add_(value.detach())
        self._count += count

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        raise NotImplementedError  # pragma: no cover

    def result(self) -> float:
        total = self._total
        if total is None or self._count == 0:
            return float("nan")
        return float(total.sum().item()) / self._count

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _distributed_run() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _labels(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    """Integer class labels from one-hot or index targets, shaped like ``y_pred[..., 0]``."""
    if (
        y_true.dim() == y_pred.dim()
        and y_true.shape[-1] == y_pred.shape[-1]
        and y_pred.shape[-1] > 1
    ):
        return y_true.argmax(dim=-1)
    return y_true.reshape(y_pred.shape[:-1])


class CategoricalAccuracy(Metric):
    name = "categorical_accuracy"

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        labels = y_true if y_true.dtype == torch.long else y_true.argmax(dim=-1)  # see _labels
        hits = y_pred.argmax(dim=-1) == labels
        self._add(hits.sum(), hits.numel())


class SparseCategoricalAccuracy(Metric):
    name = "sparse_categorical_accuracy"

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        hits = y_pred.argmax(dim=-1) == y_true.reshape(y_pred.shape[:-1])
        self._add(hits.sum(), hits.numel())


class BinaryAccuracy(Metric):
    name = "binary_accuracy"

    def __init__(self, threshold: float = 0.5, name: str | None = None) -> None:
        super().__init__(name)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"BinaryAccuracy threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        if from_logits:
            y_pred = (
                torch.sigmoid(y_pred) if from_logits == "sigmoid" else torch.softmax(y_pred, -1)
            )
        y_true = y_true.reshape(y_pred.shape) if y_true.numel() == y_pred.numel() else y_true
        hits = (y_pred > self.threshold) == (y_true > 0.5)
        self._add(hits.sum(), hits.numel())


class Accuracy(Metric):
    """Keras' ``"accuracy"``: resolves to categorical, sparse or binary accuracy."""

    name = "accuracy"

    def __init__(self, name: str | None = None, loss_name: str | None = None) -> None:
        super().__init__(name)
        self.kind: Metric | None = {
            "categorical_crossentropy": CategoricalAccuracy(),
            "sparse_categorical_crossentropy": SparseCategoricalAccuracy(),
            "binary_crossentropy": BinaryAccuracy(),
        }.get(loss_name or "")

    def _resolve(self, y_true: torch.Tensor, y_pred: torch.Tensor) -> Metric:
        if y_pred.shape[-1] == 1:
            return BinaryAccuracy()
        if y_true.dim() < y_pred.dim() or y_true.shape[-1] == 1:
            return SparseCategoricalAccuracy()
        return CategoricalAccuracy()

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        if self.kind is None:
            self.kind = self._resolve(y_true, y_pred)
        self.kind.update(y_true, y_pred, from_logits)

    def reset(self) -> None:
        if self.kind is not None:
            self.kind.reset()

    def result(self) -> float:
        return self.kind.result() if self.kind is not None else float("nan")


class TopKAccuracy(Metric):
    """Fraction of samples whose true class is among the ``k`` largest predictions."""

    name = "top_k_accuracy"

    def __init__(self, k: int = 5, name: str | None = None) -> None:
        super().__init__(name)
        if k <= 0:
            raise ValueError(f"TopKAccuracy k must be positive, got {k}")
        self.k = int(k)

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        labels = _labels(y_true, y_pred).long()
        k = min(self.k, y_pred.shape[-1])
        top = y_pred.topk(k, dim=-1).indices
        hits = (top == labels.unsqueeze(-1)).any(dim=-1)
        self._add(hits.sum(), hits.numel())


class _ProbabilityMetric(Metric):
    def _probs(self, y_pred: torch.Tensor, from_logits: bool | str) -> torch.Tensor:
        # ``from_logits`` is False or the name of the folded activation ("softmax"/"sigmoid").
        if not from_logits:
            return y_pred
        if from_logits == "sigmoid":
            return torch.sigmoid(y_pred)
        return torch.softmax(y_pred, dim=-1)


class MeanAbsoluteError(_ProbabilityMetric):
    name = "mean_absolute_error"

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        if y_true.shape != y_pred.shape and y_true.numel() == y_pred.numel():
            y_true = y_true.reshape(y_pred.shape)
        err = (y_pred - y_true).abs()
        self._add(err.sum(), err.numel())


class MeanSquaredError(_ProbabilityMetric):
    name = "mean_squared_error"

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        if y_true.shape != y_pred.shape and y_true.numel() == y_pred.numel():
            y_true = y_true.reshape(y_pred.shape)
        err = (y_pred - y_true).square()
        self._add(err.sum(), err.numel())


class _ConfusionMetric(_ProbabilityMetric):
    """Counts true/false positives and false negatives of ``y_pred > threshold`` against
    ``y_true != 0``, element-wise (or on column ``class_id``), as Keras' confusion metrics."""

    def __init__(
        self,
        thresholds: float | None = None,
        top_k: int | None = None,
        class_id: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if top_k is not None:
            raise ValueError(f"{type(self).__name__}(top_k=...) is not supported")
        if isinstance(thresholds, (list, tuple)):
            if len(thresholds) != 1:
                raise ValueError(f"{type(self).__name__} takes one threshold, got {thresholds}")
            thresholds = thresholds[0]
        self.threshold = 0.5 if thresholds is None else float(thresholds)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        self.class_id = class_id
        self.reset()

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None  # tp, fp, fn

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        if y_true.shape != y_pred.shape:
            if y_true.numel() != y_pred.numel():
                raise ValueError(
                    f"{self.name}: targets of shape {tuple(y_true.shape)} do not match "
                    f"predictions of shape {tuple(y_pred.shape)}"
                )
            y_true = y_true.reshape(y_pred.shape)
        if self.class_id is not None:
            y_true, y_pred = y_true[..., self.class_id], y_pred[..., self.class_id]
        pred = y_pred > self.threshold
        true = y_true != 0
        counts = torch.stack([(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum()])
        self._counts = counts if self._counts is None else self._counts + counts

    def _ratio(self, part: int) -> float:
        if self._counts is None:
            return 0.0
        tp, other = (float(v) for v in self._counts[[0, part]].tolist())
        return tp / (tp + other) if tp + other else 0.0


class Precision(_ConfusionMetric):
    """``tp / (tp + fp)`` (0 when nothing is predicted positive), Keras' default threshold 0.5."""

    name = "precision"

    def result(self) -> float:
        return self._ratio(1)


class Recall(_ConfusionMetric):
    """``tp / (tp + fn)`` (0 when there are no positives), Keras' default threshold 0.5."""

    name = "recall"

    def result(self) -> float:
        return self._ratio(2)


class FBetaScore(_ProbabilityMetric):
    """Keras' F-beta score: per-class counts of ``y_pred > threshold`` (with ``threshold=None``,
    the largest prediction of each sample) against one-hot/multi-hot ``y_true``; ``average``
    ``None`` (one score per class, a list), ``"micro"``, ``"macro"`` or ``"weighted"``."""

    name = "fbeta_score"

    def __init__(
        self,
        average: str | None = None,
        beta: float = 1.0,
        threshold: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(
                f"Invalid `average` argument value. Expected one of: None, 'micro', 'macro', "
                f"'weighted'. Received: average={average!r}"
            )
        if not beta > 0:
            raise ValueError(f"`beta` must be > 0. Received: beta={beta}")
        self.average, self.beta = average, float(beta)
        self.threshold = None if threshold is None else float(threshold)
        self.reset()

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None  # rows: tp, fp, fn, support

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        if self.threshold is None:
            top = y_pred.amax(dim=-1, keepdim=True)
            pred = ((y_pred >= top) & (y_pred.abs() > 1e-9)).to(torch.float64)
        else:
            pred = (y_pred > self.threshold).to(torch.float64)
        true = y_true.reshape(y_pred.shape).to(torch.float64)
        dims = tuple(range(pred.dim())) if self.average == "micro" else tuple(range(pred.dim() - 1))
        counts = torch.stack(
            [
                (pred * true).sum(dims),
                (pred * (1 - true)).sum(dims),
                ((1 - pred) * true).sum(dims),
                true.sum(dims),
            ]
        )
        self._counts = counts if self._counts is None else self._counts + counts

    def result(self) -> Any:
        if self._counts is None:
            return float("nan")
        tp, fp, fn, support = self._counts
        eps = 1e-7  # Keras' backend epsilon
        precision = tp / (tp + fp + eps)
        recall = tp / (tp + fn + eps)
        b2 = self.beta**2
        score = (1 + b2) * precision * recall / (b2 * precision + recall + eps)
        if self.average == "weighted":
            return float((score * support / (support.sum() + eps)).sum())
        if self.average is not None:
            return float(score.mean())
        return score.tolist()


class F1Score(FBetaScore):
    """Keras' F1 score (:class:`FBetaScore` with ``beta=1``)."""

    name = "f1_score"

    def __init__(
        self, average: str | None = None, threshold: float | None = None, name: str | None = None
    ) -> None:
        super().__init__(average, 1.0, threshold, name)


class AUC(_ProbabilityMetric):
    """Area under the ROC curve, as Keras computes it: confusion counts at ``num_thresholds``
    evenly spaced thresholds over all elements, trapezoids between them."""

    name = "auc"

    def __init__(
        self,
        num_thresholds: int = 200,
        curve: str = "ROC",
        summation_method: str = "interpolation",
        name: str | None = None,
        from_logits: bool = False,
    ) -> None:
        super().__init__(name)
        if curve != "ROC" or summation_method != "interpolation":
            raise ValueError(
                "optimist's AUC computes curve='ROC' with summation_method='interpolation' "
                f"(Keras' defaults); got curve={curve!r}, summation_method={summation_method!r}"
            )
        if num_thresholds <= 1:
            raise ValueError(f"`num_thresholds` must be > 1. Received: {num_thresholds}")
        inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.thresholds = torch.tensor([-1e-7, *inner, 1.0 + 1e-7], dtype=torch.float64)
        self.from_logits = bool(from_logits)
        self.reset()

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None  # rows: tp, fp, fn, tn per threshold

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        if self.from_logits and not from_logits:
            y_pred = torch.sigmoid(y_pred)
        pred = y_pred.reshape(-1).to(torch.float64)
        true = (y_true.reshape(-1) != 0).to(torch.float64)
        above = (pred.unsqueeze(0) > self.thresholds.to(pred.device).unsqueeze(1)).to(torch.float64)
        tp = above @ true
        fp = above.sum(1) - tp
        fn = true.sum() - tp
        tn = (1 - true).sum() - fp
        counts = torch.stack([tp, fp, fn, tn])
        self._counts = counts if self._counts is None else self._counts + counts

    def result(self) -> float:
        if self._counts is None:
            return 0.0
        tp, fp, fn, tn = self._counts

        def ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.where(b > 0, a / torch.where(b > 0, b, 1), torch.zeros_like(a))

        tpr, fpr = ratio(tp, tp + fn), ratio(fp, fp + tn)
        return float(((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2).sum())


class MeanMetricWrapper(_ProbabilityMetric):
    """Averages ``fn(y_true, y_pred)`` (per-sample values or a batch mean) over samples."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], Any], name: str | None = None):
        super().__init__(name or getattr(fn, "__name__", type(fn).__name__))
        self.fn = fn

    def update(
        self, y_true: torch.Tensor, y_pred: torch.Tensor, from_logits: bool | str = False
    ) -> None:
        y_pred = self._probs(y_pred, from_logits)
        value = torch.as_tensor(self.fn(y_true, y_pred), device=y_pred.device)
        n = int(y_pred.shape[0])
        self._add(value.to(torch.float64).mean() * n, n)


_NAMES: dict[str, Callable[..., Metric]] = {
    "accuracy": Accuracy,
    "acc": Accuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_accuracy": TopKAccuracy,
    "top_k_categorical_accuracy": TopKAccuracy,
    "sparse_top_k_categorical_accuracy": TopKAccuracy,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "f1_score": F1Score,
}

METRIC_NAMES = tuple(sorted(_NAMES))


def get(metric: str | Metric | Callable[..., Any], loss_name: str | None = None) -> Metric:
    """Resolve a metric by name, instance or callable; the loss name guides ``"accuracy"``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        key = metric.lower()
        if key not in _NAMES:
            raise ValueError(f"Unknown metric {metric!r}. Valid names: {', '.join(METRIC_NAMES)}.")
        if key in ("accuracy", "acc"):
            return Accuracy(name=metric, loss_name=loss_name)
        return _NAMES[key](name=metric)
    if callable(metric):
        return MeanMetricWrapper(metric)
    raise ValueError(f"metric must be a name, a Metric or a callable, got {type(metric).__name__}")
