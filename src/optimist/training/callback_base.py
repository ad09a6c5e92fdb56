"""The callback protocol of ``fit``, ``evaluate`` and ``predict``: :class:`Callback` (every
hook, doing nothing) and :class:`CallbackList` (each hook to a list of callbacks in order, the
per-batch hooks only where one of them defines them). The built-in callbacks:
:mod:`optimist.training.callbacks`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Logs = dict[str, Any]

__all__ = ["Callback", "CallbackList"]


class Callback:
    """Base class; every hook does nothing. Hooks and their order follow Keras."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_test_begin(self, logs: Logs | None = None) -> None: ...
    def on_test_end(self, logs: Logs | None = None) -> None: ...
    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_predict_begin(self, logs: Logs | None = None) -> None: ...
    def on_predict_end(self, logs: Logs | None = None) -> None: ...
    def on_predict_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...
    def on_predict_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...


def _overrides(cb: Callback, hook: str) -> bool:
    if not isinstance(cb, Callback):  # duck-typed (optimist.monitor.Monitor): the hooks it has
        return callable(getattr(cb, hook, None))
    return hook in vars(cb) or getattr(type(cb), hook, None) is not getattr(Callback, hook)


class CallbackList:
    """Dispatches each hook to a list of callbacks (in order)."""

    def __init__(self, callbacks: Iterable[Callback] | None, model: Any, params: dict[str, Any]):
        self.callbacks = list(callbacks or [])
        for cb in self.callbacks:
            if not isinstance(cb, Callback) and not callable(getattr(cb, "set_model", None)):
                raise ValueError(
                    f"callbacks must be optimist.callbacks.Callback instances, got "
                    f"{type(cb).__name__}"
                )
            cb.set_model(model)
            cb.set_params(params)
        # Per-batch hooks cost a host sync each batch: only call them when someone listens.
        self.wants = {
            hook: any(_overrides(cb, hook) for cb in self.callbacks)
            for hook in (
                "on_train_batch_begin",
                "on_train_batch_end",
                "on_test_batch_begin",
                "on_test_batch_end",
                "on_predict_batch_begin",
                "on_predict_batch_end",
            )
        }
        self.train_batch_logs = self.wants["on_train_batch_end"]

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)  # a duck-typed callback may leave hooks out
            if fn is not None:
                fn(*args)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self._call("on_epoch_end", epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_train_batch_begin"]:
            self._call("on_train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_train_batch_end"]:
            self._call("on_train_batch_end", batch, logs)

    def on_test_begin(self, logs: Logs | None = None) -> None:
        self._call("on_test_begin", logs)

    def on_test_end(self, logs: Logs | None = None) -> None:
        self._call("on_test_end", logs)

    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_test_batch_begin"]:
            self._call("on_test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_test_batch_end"]:
            self._call("on_test_batch_end", batch, logs)

    def on_predict_begin(self, logs: Logs | None = None) -> None:
        self._call("on_predict_begin", logs)

    def on_predict_end(self, logs: Logs | None = None) -> None:
        self._call("on_predict_end", logs)

    def on_predict_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_predict_batch_begin"]:
            self._call("on_predict_batch_begin", batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self.wants["on_predict_batch_end"]:
            self._call("on_predict_batch_end", batch, logs)
