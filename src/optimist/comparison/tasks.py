"""Built-in tasks (a registry: name, description, default budget) and user-defined ones.

Two kinds of task:

* a *function* task minimizes a 2-D test function (:mod:`optimist.comparison.functions`); its
  budget counts optimizer steps, its loss is ``f(x, y) - f(min)`` and its target is a gap of
  ``1e-3``;
* a *data* task trains a small network on a real data set; its budget counts epochs (passes over
  the training set, so every method sees the same number of examples), its loss is the
  cross-entropy, and its target a validation accuracy.

Data splits: the training set minus its last ``val_size`` examples is trained on; those
``val_size`` examples are the validation set (the first ``eval_size`` of them are scored during
training, all of them at the end, and the tuner looks only at validation loss); the official test
set is scored once at the end of each evaluation run. ``subsample=N`` keeps the first ``N``
training examples and at most ``N`` validation and test examples (for quick tests).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from optimist.comparison.functions import FUNCTIONS, TestFunction
from optimist.comparison.methods import Method

__all__ = [
    "TASKS",
    "DataTask",
    "FunctionTask",
    "Task",
    "TaskData",
    "get_task",
    "custom_task",
]


@dataclass
class TaskData:
    """Tensors of one data task: float inputs (or int64 ids) and int64 class labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None


@dataclass
class Task:
    """What every task has: a name, a one-line description and a default budget."""

    name: str
    description: str
    default_budget: float

    kind = "abstract"
    budget_unit = "steps"

    def total_steps(
        self,
        method: Method,
        budget: float | None = None,
        budget_steps: int | None = None,
        subsample: int | None = None,
    ) -> int:
        raise NotImplementedError

    def signature(self, subsample: int | None) -> dict[str, Any]:
        """What identifies this task's trials: changing any of it starts new trials."""
        return {"task": self.name, "kind": self.kind, "subsample": subsample}

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "budget_unit": self.budget_unit,
            "default_budget": self.default_budget,
        }


@dataclass
class FunctionTask(Task):
    """Minimize a 2-D test function from its start point."""

    function: TestFunction = field(default=None)  # type: ignore[assignment]
    target_gap: float = 1e-3

    kind = "function"
    budget_unit = "steps"

    def total_steps(self, method, budget=None, budget_steps=None, subsample=None) -> int:
        if budget_steps is not None:
            return int(budget_steps)
        return int(budget if budget is not None else self.default_budget)

    def default_lr(self, method: Method) -> float:
        base = method.name.partition("[")[0]  # adam[weight_decay=...] starts where adam does
        fallback = method.function_lr if method.function_lr is not None else method.default_lr
        return self.function.default_lrs.get(base, fallback)

    def signature(self, subsample: int | None) -> dict[str, Any]:
        f = self.function
        return {**super().signature(subsample), "start": f.start, "noise": f.noise}

    @property
    def target(self) -> dict[str, Any]:
        return {"metric": "loss", "threshold": self.target_gap, "mode": "below"}

    def as_dict(self) -> dict[str, Any]:
        f = self.function
        return {
            **super().as_dict(),
            "target": self.target,
            "function": {
                "start": list(f.start),
                "minima": [list(m) for m in f.minima],
                "f_min": f.f_min,
                "xlim": list(f.xlim),
                "ylim": list(f.ylim),
                "noise_sigma": f.noise,
                "default_lrs": dict(f.default_lrs),
            },
        }


@dataclass
class DataTask(Task):
    """Train ``model_fn()`` on ``loader()``'s data with the cross-entropy loss."""

    loader: Callable[[], TaskData] = field(default=None)  # type: ignore[assignment]
    model_fn: Callable[[], nn.Module] = field(default=None)  # type: ignore[assignment]
    target_accuracy: float = 0.9
    eval_size: int = 1000
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy"
    classification: bool = True
    version: str = "1"
    train_size: int | None = None
    """Train on the first ``train_size`` training examples only (validation and test stay)."""
    _cache: dict[Any, TaskData] = field(default_factory=dict, init=False, repr=False, compare=False)

    kind = "data"
    budget_unit = "epochs"

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes load the data themselves: do not ship tensors through a pipe.
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def data(self, subsample: int | None = None) -> TaskData:
        """The task's tensors (loaded once per process), cut to ``subsample`` if given."""
        if subsample not in self._cache:
            full = self.loader()
            n = self.train_size
            m = subsample
            if subsample is not None:
                n = subsample if n is None else min(n, subsample)
            self._cache[subsample] = TaskData(
                full.x_train[:n],
                full.y_train[:n],
                full.x_val[:m],
                full.y_val[:m],
                None if full.x_test is None else full.x_test[:m],
                None if full.y_test is None else full.y_test[:m],
            )
        return self._cache[subsample]

    def n_train(self, subsample: int | None = None) -> int:
        return len(self.data(subsample).y_train)

    def steps_per_epoch(self, method: Method, subsample: int | None = None) -> int:
        n = self.n_train(subsample)
        return math.ceil(n / method.batch_size(n))

    def total_steps(self, method, budget=None, budget_steps=None, subsample=None) -> int:
        if budget_steps is not None:
            return int(budget_steps)
        epochs = budget if budget is not None else self.default_budget
        return max(1, int(round(epochs * self.steps_per_epoch(method, subsample))))

    def default_lr(self, method: Method) -> float:
        return method.default_lr

    def loss_fn(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if callable(self.loss):
            return self.loss
        if self.loss == "cross_entropy":
            return nn.functional.cross_entropy
        if self.loss == "mse":
            return nn.functional.mse_loss
        raise ValueError(f"unknown loss {self.loss!r}; use 'cross_entropy', 'mse' or a callable")

    @property
    def target(self) -> dict[str, Any]:
        if self.classification:
            return {"metric": "val_acc", "threshold": self.target_accuracy, "mode": "above"}
        return {"metric": "val_loss", "threshold": self.target_accuracy, "mode": "below"}

    def signature(self, subsample: int | None) -> dict[str, Any]:
        model = getattr(self.model_fn, "__qualname__", type(self.model_fn).__name__)
        return {
            **super().signature(subsample),
            "version": self.version,
            "train_size": self.train_size,
            "eval_size": self.eval_size,
            "model": model,
            "loss": self.loss if isinstance(self.loss, str) else repr(self.loss),
        }

    def as_dict(self) -> dict[str, Any]:
        out = {**super().as_dict(), "target": self.target, "eval_size": self.eval_size}
        out["train_size"] = self.train_size
        data = self._cache.get(None) or next(iter(self._cache.values()), None)
        if data is not None:
            out["n_train"], out["n_val"] = len(data.y_train), len(data.y_val)
            out["n_test"] = 0 if data.y_test is None else len(data.y_test)
        return out


# --- data loaders ---------------------------------------------------------------------------


def _images(x: np.ndarray, scale: float, channel: bool) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).div_(scale)
    t = t.unsqueeze(1) if channel else t.reshape(len(t), -1)
    return t.contiguous()


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64)).contiguous()


def _image_split(load_data, val_size: int, scale: float = 255.0, channel: bool = False):
    (x_train, y_train), (x_test, y_test) = load_data()
    x, y = _images(x_train, scale, channel), _labels(y_train)
    return TaskData(
        x[:-val_size],
        y[:-val_size],
        x[-val_size:],
        y[-val_size:],
        _images(x_test, scale, channel),
        _labels(y_test),
    )


def _mnist(channel: bool = False) -> TaskData:
    from optimist.datasets import mnist

    return _image_split(mnist.load_data, 5000, channel=channel)


def _fashion() -> TaskData:
    from optimist.datasets import fashion_mnist

    return _image_split(fashion_mnist.load_data, 5000, channel=True)


def _digits() -> TaskData:
    from optimist.datasets import digits

    return _image_split(digits.load_data, 238, scale=16.0)


SHAKESPEARE_CONTEXT = 32


def _shakespeare() -> TaskData:
    from optimist.datasets import shakespeare

    (x_train, y_train), (x_test, y_test) = shakespeare.load_data(
        seq_len=SHAKESPEARE_CONTEXT, step=97, test_split=0.1
    )
    # Predict the character after a 32-character context: the last id of each target window.
    x_tr, y_tr = torch.from_numpy(x_train), torch.from_numpy(y_train[:, -1].copy())
    x_te, y_te = torch.from_numpy(x_test), torch.from_numpy(y_test[:, -1].copy())
    half = len(x_te) // 2
    return TaskData(x_tr, y_tr, x_te[:half], y_te[:half], x_te[half:], y_te[half:])


# --- models ---------------------------------------------------------------------------------


def _mlp(n_in: int, hidden: int = 10, n_out: int = 10) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


def _mnist_mlp() -> nn.Module:
    return _mlp(784)


def _mnist_logreg() -> nn.Module:
    return nn.Linear(784, 10)


def _digits_mlp() -> nn.Module:
    return _mlp(64)


def _fashion_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )


class _CharMLP(nn.Module):
    """Embed each of the context's characters, concatenate, one hidden layer, next-char logits."""

    def __init__(self, vocab: int = 128, context: int = SHAKESPEARE_CONTEXT) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.hidden = nn.Linear(16 * context, 128)
        self.out = nn.Linear(128, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids).flatten(1)
        return self.out(torch.tanh(self.hidden(h)))


def _char_mlp() -> nn.Module:
    from optimist.datasets import shakespeare

    return _CharMLP(vocab=max(len(shakespeare.vocabulary()), 1))


# --- the registry ---------------------------------------------------------------------------


def _function_tasks() -> list[Task]:
    return [
        FunctionTask(
            name=f.name, description=f.description, default_budget=f.default_steps, function=f
        )
        for f in FUNCTIONS.values()
    ]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        *_function_tasks(),
        DataTask(
            name="mnist-logreg",
            description="MNIST digits, multinomial logistic regression (784-10, softmax CE).",
            default_budget=1,
            loader=_mnist,
            model_fn=_mnist_logreg,
            target_accuracy=0.9,
        ),
        DataTask(
            name="mnist-mlp",
            description="MNIST digits, a 784-10-10 ReLU network with softmax cross-entropy.",
            default_budget=1,
            loader=_mnist,
            model_fn=_mnist_mlp,
            target_accuracy=0.9,
        ),
        DataTask(
            name="fashion-cnn",
            description="Fashion-MNIST clothes, a two-layer CNN (8 and 16 channels).",
            default_budget=1,
            loader=_fashion,
            model_fn=_fashion_cnn,
            target_accuracy=0.8,
        ),
        DataTask(
            name="shakespeare-char",
            description="Shakespeare, next character from 32 (embedding + one-hidden-layer MLP).",
            default_budget=1,
            loader=_shakespeare,
            model_fn=_char_mlp,
            target_accuracy=0.3,
        ),
        DataTask(
            name="digits-mlp",
            description="scikit-learn's 8x8 digits, a 64-10-10 ReLU network (no download needed).",
            default_budget=5,
            loader=_digits,
            model_fn=_digits_mlp,
            target_accuracy=0.9,
            eval_size=238,
        ),
    )
}
"""Every built-in task, by name."""

DATA_SOURCES = {
    "mnist-logreg": "mnist",
    "mnist-mlp": "mnist",
    "fashion-cnn": "fashion_mnist",
    "shakespeare-char": "shakespeare",
    "digits-mlp": "digits",
}
"""The ``optimist.datasets`` module each data task needs."""


def get_task(name: str) -> Task:
    """The built-in task called ``name``; ``KeyError`` lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def _as_tensor(a: Any, labels: bool) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if labels and not t.is_floating_point():
        return t.to(torch.int64).contiguous()
    return (t if labels or not t.is_floating_point() else t.to(torch.float32)).contiguous()


class _Given:
    """A picklable loader that returns data already in memory."""

    def __init__(self, data: TaskData) -> None:
        self.data = data

    def __call__(self) -> TaskData:
        return self.data


def custom_task(
    model_fn: Callable[[], nn.Module],
    data: Any,
    *,
    name: str = "custom",
    description: str = "a user-defined model and data set",
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    budget: float = 1,
    target: float | None = None,
    eval_size: int = 1000,
) -> DataTask:
    """A :class:`DataTask` for the user's ``model_fn`` and ``data``.

    ``data`` is ``(x_train, y_train, x_val, y_val)`` or ``((x_train, y_train), (x_val, y_val))``
    (arrays or tensors), optionally with a test pair after the validation pair.
    """
    flat: list[Any] = []
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            flat.extend(item)
        else:
            flat.append(item)
    if len(flat) not in (4, 6):
        raise ValueError(
            "data must be (x_train, y_train, x_val, y_val[, x_test, y_test]) or pairs of them"
        )
    classification = loss == "cross_entropy"
    tensors = [_as_tensor(a, labels=(i % 2 == 1) and classification) for i, a in enumerate(flat)]
    task_data = TaskData(*tensors)
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    task = DataTask(
        name=name,
        description=description,
        default_budget=budget,
        loader=_Given(task_data),
        model_fn=model_fn,
        target_accuracy=(0.9 if classification else 0.0) if target is None else target,
        eval_size=eval_size,
        loss=loss,
        classification=classification,
        version="data-" + digest.hexdigest()[:16],
    )
    return task
