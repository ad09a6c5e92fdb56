"""``Model.evaluate`` / ``predict`` (and their ``*_on_batch`` forms): batches in eval mode
without gradients.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from optimist.training import data as _data
from optimist.training.callback_base import Callback, CallbackList
from optimist.training.loop import _check_int
from optimist.training.progress import Progress, resolve_verbose


def _concat_outputs(outputs: list[Any]) -> Any:
    if not outputs:
        return np.zeros((0,), dtype=np.float32)
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs).cpu().numpy()
    if isinstance(first, (tuple, list)):
        return [torch.cat([o[i] for o in outputs]).cpu().numpy() for i in range(len(first))]
    if isinstance(first, dict):
        return {k: torch.cat([o[k] for o in outputs]).cpu().numpy() for k in first}
    raise ValueError(f"cannot collect model outputs of type {type(first).__name__}")


class InferenceMixin:
    """Evaluation and prediction of :class:`Model`."""

    def _evaluate_source(
        self,
        source: Any,
        batch_size: int | None,
        cbs: CallbackList | None,
        verbose: int,
        desc: str,
        steps: int | None = None,
    ) -> dict[str, float]:
        was_training = self.training
        self.eval()
        metrics, loss_fn, fold, forward, penalized, loss_sum = self._begin_pass()
        seen = 0
        total = source.steps(batch_size) if isinstance(source, _data.ArrayData) else source.steps()
        progress = Progress(verbose, steps or total, desc)
        if cbs is not None:
            cbs.on_test_begin()
        first = not isinstance(source, _data.ArrayData)
        logs: dict[str, float] = {}

        def running() -> dict[str, float]:
            return self._running_logs(loss_sum, seen)

        try:
            with torch.no_grad():
                for step, (xb, yb, wb) in enumerate(self._batches(source, batch_size, False, None)):
                    if steps is not None and step >= steps:
                        break
                    if cbs is not None:
                        cbs.on_test_batch_begin(step)
                    if first:
                        self._check_batch(xb, yb)
                        first = False
                    multi = isinstance(xb, tuple)
                    out = forward(*xb) if multi else forward(xb)
                    loss = loss_fn(yb, out, wb, fold)
                    if penalized:
                        loss = loss + self._penalty(penalized)
                    n = (xb[0] if multi else xb).shape[0]
                    seen += n
                    loss_sum.add(loss, n)
                    for m in metrics:
                        m.update(yb, out, fold)
                    if cbs is not None and cbs.wants["on_test_batch_end"]:
                        cbs.on_test_batch_end(step, running())
                    progress.step(step + 1, running)
            logs = self._running_logs(loss_sum, seen)
        finally:
            self.train(was_training)
            progress.close(logs)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    def evaluate(
        self,
        x: Any = None,
        y: Any = None,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        sample_weight: Any = None,
        steps: int | None = None,
        callbacks: Iterable[Callback] | None = None,
        return_dict: bool = False,
    ) -> float | list[float] | dict[str, float]:
        """Loss and metrics on the data, in eval mode without gradients.

        Returns the loss alone if there are no metrics, else ``[loss, *metrics]``, or a dict with
        ``return_dict=True`` (as Keras)."""
        self._require_compiled("evaluate")
        verbose = resolve_verbose(verbose)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("steps", steps, 1, allow_none=True)
        if _data.is_loader_like(x):
            if y is not None:
                raise ValueError("when x is a DataLoader/Dataset it provides the targets: y=None")
            source: Any = _data.LoaderData(x, batch_size, False, None)
        else:
            source = self._arrays(x, y, sample_weight, "")
            self._prepare_model(source.x)
            source = self._move(source)
            self._check_arrays(source, "")
        cbs = CallbackList(callbacks, self, {"steps": steps, "verbose": verbose})
        logs = self._evaluate_source(source, batch_size, cbs, verbose, "Evaluate", steps)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(
        self,
        x: Any,
        batch_size: int | None = 32,
        verbose: int | str = "auto",
        steps: int | None = None,
        callbacks: Iterable[Callback] | None = None,
    ) -> Any:
        """Model outputs (probabilities for a softmax/sigmoid model) as NumPy arrays, computed
        in eval mode without gradients, ``batch_size`` samples at a time."""
        verbose = resolve_verbose(verbose)
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("steps", steps, 1, allow_none=True)
        if _data.is_loader_like(x):
            source: Any = _data.LoaderData(x, batch_size, False, None)
            batches = source.batches(
                None,
                x_kind=self._x_kind(),
                y_kind="float",
                device=self._device(),
                need_y=False,
                dtype=self._dtype(),
            )
            total = source.steps()
        else:
            arr = self._arrays(x, None, None, "", need_y=False, check=False)
            self._prepare_model(arr.x)
            arr = self._move(arr)
            batches = arr.batches(batch_size, False, None)
            total = arr.steps(batch_size)
        cbs = CallbackList(callbacks, self, {"steps": steps, "verbose": verbose})
        progress = Progress(verbose, steps or total, "Predict")
        outputs: list[Any] = []
        was_training = self.training
        self.eval()
        cbs.on_predict_begin()
        try:
            with torch.no_grad():
                for step, (xb, _, _) in enumerate(batches):
                    if steps is not None and step >= steps:
                        break
                    cbs.on_predict_batch_begin(step)
                    out = self._plain_call(*xb) if isinstance(xb, tuple) else self._plain_call(xb)
                    outputs.append(out)
                    cbs.on_predict_batch_end(step, {"outputs": out})
                    progress.step(step + 1)
        finally:
            self.train(was_training)
            progress.close()
        cbs.on_predict_end()
        return _concat_outputs(outputs)

    def test_on_batch(
        self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False
    ) -> float | list[float] | dict[str, float]:
        """Loss (and metrics) on this batch in inference mode (Keras' ``test_on_batch``)."""
        return self.evaluate(
            x, y, batch_size=None, verbose=0, sample_weight=sample_weight, return_dict=return_dict
        )

    def predict_on_batch(self, x: Any) -> Any:
        return self.predict(x, batch_size=None, verbose=0)
