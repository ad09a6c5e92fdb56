"""The learning-rate range test (L. Smith, 2015/2017): raise the LR exponentially, watch the loss.

``lr_finder`` runs its own short plain-PyTorch loop (the monitor does not depend on
``optimist.training``) and puts the model, the optimizer and torch's random generator back as they
were, so it can run before ``fit`` without changing what ``fit`` then does.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mse": nn.functional.mse_loss,
    "mean_squared_error": nn.functional.mse_loss,
    "cross_entropy": nn.functional.cross_entropy,
    "sparse_categorical_crossentropy": nn.functional.cross_entropy,
    "binary_crossentropy": nn.functional.binary_cross_entropy_with_logits,
}


@dataclass
class LRFinderResult:
    """The sweep: ``lrs`` and smoothed ``losses``, the ``suggestion`` (the LR where the smoothed
    loss falls fastest, or ``None`` if it never fell), and why the sweep ``stopped``."""

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    stopped: str

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Loss against LR (log axis) with the suggestion marked; PNG or SVG by suffix."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        from optimist.monitor.plots import save_figure

        fig, ax = plt.subplots(figsize=(6, 4))
        try:
            ax.plot(self.lrs, self.losses)
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.set_ylabel("loss (smoothed)")
            if self.suggestion is not None:
                ax.axvline(self.suggestion, color="red", ls="--", label=f"{self.suggestion:.2g}")
                ax.legend()
            ax.set_title("LR range test")
            fig.tight_layout()
            return save_figure(fig, path)
        finally:
            plt.close(fig)


def _batches(data: Any, batch_size: int, seed: int) -> Iterator[tuple[Any, Any]]:
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], tuple):
        x, y = (
            torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a for a in data
        )
        if len(x) != len(y):
            raise ValueError(f"x and y have different lengths: {len(x)} and {len(y)}")
        if len(x) == 0:
            raise ValueError("lr_finder got no data")
        gen = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = order[i : i + batch_size]
                yield x[idx], y[idx]
    if not isinstance(data, Iterable):
        raise TypeError(
            f"data must be (x, y) arrays/tensors or an iterable of (x, y) batches, got "
            f"{type(data).__name__}"
        )
    batches = list(itertools.islice(iter(data), 10_000))
    if not batches:
        raise ValueError("lr_finder got no data")
    yield from itertools.cycle(batches)


def _make_optimizer(optimizer: Any, model: nn.Module) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        from optimist.optim import optimizer as by_name

        return by_name(optimizer, model.parameters())
    raise TypeError(f"optimizer must be a name or a torch.optim.Optimizer, got {optimizer!r}")


def lr_finder(
    model: nn.Module,
    data: Any,
    optimizer: Any = "adam",
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "cross_entropy",
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    batch_size: int = 32,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
    seed: int = 0,
) -> LRFinderResult:
    """Smith's LR range test; returns a :class:`LRFinderResult` (``.suggestion``, ``.plot()``).

    ``data``: ``(x, y)`` arrays/tensors (shuffled into ``batch_size`` batches) or an iterable of
    ``(x, y)`` batches (cycled). ``optimizer``: a name (``"adam"``, ``"sgd"``...) or an optimizer
    of ``model``; ``loss``: a name (``"cross_entropy"``, ``"mse"``, ``"binary_crossentropy"``) or
    ``loss(output, target)``. The LR grows exponentially from ``start_lr`` to ``end_lr`` over at
    most ``steps`` steps and stops early once the smoothed loss exceeds ``diverge_factor`` x its
    best. The model's and the optimizer's state and torch's CPU random state are restored.
    """
    if not (0.0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ValueError(
            f"need 0 < start_lr < end_lr. Received: start_lr={start_lr}, end_lr={end_lr}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"`steps` must be an integer >= 2. Received: steps={steps!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    loss_fn = _LOSSES.get(loss) if isinstance(loss, str) else loss
    if loss_fn is None or not callable(loss_fn):
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(_LOSSES)} or a callable")
    opt = _make_optimizer(optimizer, model)
    model_state = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    groups = [
        copy.deepcopy({k: v for k, v in g.items() if k != "params"}) for g in opt.param_groups
    ]
    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    lrs: list[float] = []
    losses: list[float] = []
    stopped = "reached end_lr"
    try:
        with torch.random.fork_rng(devices=[]):
            model.train()
            factor = (end_lr / start_lr) ** (1.0 / (steps - 1))
            avg, best = 0.0, math.inf
            for i, (xb, yb) in enumerate(_batches(data, batch_size, seed)):
                if i >= steps:
                    break
                lr = start_lr * factor**i
                for group in opt.param_groups:
                    group["lr"] = lr
                xb, yb = xb.to(device), yb.to(device)
                if xb.is_floating_point():
                    xb = xb.to(next(model.parameters()).dtype)
                out = model(xb)
                value = loss_fn(out, yb)
                opt.zero_grad()
                value.backward()
                opt.step()
                v = float(value.detach())
                if not math.isfinite(v):
                    stopped = f"the loss became {v} at lr={lr:.3g}"
                    break
                avg = smoothing * avg + (1 - smoothing) * v
                smooth = avg / (1 - smoothing ** (i + 1))
                lrs.append(lr)
                losses.append(smooth)
                best = min(best, smooth)
                if smooth > diverge_factor * best:
                    stopped = f"the loss passed {diverge_factor:g}x its best at lr={lr:.3g}"
                    break
    finally:
        model.load_state_dict(model_state)
        opt.load_state_dict(opt_state)
        # the group dicts exactly as they were (load_state_dict may add default keys)
        for group, saved in zip(opt.param_groups, groups, strict=True):
            for key in [k for k in group if k != "params" and k not in saved]:
                del group[key]
            group.update(saved)
        model.train(was_training)
    return LRFinderResult(lrs, losses, _suggest(lrs, losses), stopped)


def _suggest(lrs: list[float], losses: list[float]) -> float | None:
    """The LR of the steepest fall of the smoothed loss against log LR, before its minimum."""
    skip = len(lrs) // 10  # the first readings of the running average are the noisiest
    end = int(np.argmin(losses)) + 1
    if end - skip < 3:
        return None
    log_lr = np.log(np.asarray(lrs[skip:end]))
    slope = np.gradient(np.asarray(losses[skip:end]), log_lr)
    i = int(np.argmin(slope))
    return float(lrs[skip + i]) if slope[i] < 0 else None
