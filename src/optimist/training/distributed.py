"""``fit(..., strategy="ddp")``: data-parallel training on ``torch.distributed``.

Every process (launched by ``torchrun``, the process group initialised before ``fit``) holds
the whole model; :class:`DDPStrategy` is all ``fit`` needs for it:

* the training arrays are dealt out by rows (rank ``r`` takes rows ``r, r + N, ...``; the
  remainder after a multiple of N rows is dropped so every rank runs the same number of
  steps) and ``batch_size`` is the global batch, ``batch_size / N`` rows per rank: without
  shuffling, step ``k`` of the N ranks together sees exactly batch ``k`` of one process;
* the forward pass runs through ``DistributedDataParallel``, which averages the gradients, so
  every rank's optimizer takes the same step;
* the epoch's loss and metrics are summed over the ranks before they reach the logs, so
  history, callbacks and the progress bar see the numbers of the whole data;
* the loss's NaN check and ``stop_training`` (``EarlyStopping``, ...) are agreed by all ranks;
* only rank 0 prints (other ranks run with ``verbose=0``) and runs the callbacks that write
  files or warnings (``ModelCheckpoint``, ``CSVLogger``, ``optimist.monitor.Monitor``);
  validation data is evaluated whole on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from optimist import monitor as _monitor
from optimist.training import data as _data
from optimist.training.callbacks import Callback, CSVLogger, ModelCheckpoint

__all__ = ["STRATEGIES", "DDPStrategy", "start"]

STRATEGIES = (None, "ddp")
WRITERS = (ModelCheckpoint, CSVLogger, _monitor.Monitor)


def start(model: nn.Module, strategy: str | None) -> DDPStrategy | None:
    """The strategy object for ``fit`` (None for one process); ValueError if it cannot run."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}. Received: strategy={strategy!r}")
    if strategy is None:
        return None
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            'strategy="ddp" needs an initialised process group: launch with torchrun and call '
            'torch.distributed.init_process_group("gloo" or "nccl") before fit'
        )
    return DDPStrategy(model)


class _Forward(nn.Module):
    """The model's training forward (logits when the loss folds its activation) as a module."""

    def __init__(self, model: nn.Module, fold: Any) -> None:
        super().__init__()
        self.model = model
        self.fold = fold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model._forward_logits(x) if self.fold else self.model._plain_call(x)


class DDPStrategy:
    """One rank's part of a data-parallel ``fit`` (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self._forward: DistributedDataParallel | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def verbose(self, verbose: int) -> int:
        return verbose if self.is_main else 0

    def callbacks(self, callbacks: Sequence[Callback]) -> list[Callback]:
        return [cb for cb in callbacks if self.is_main or not isinstance(cb, WRITERS)]

    def local_batch_size(self, batch_size: int | None, n: int) -> int:
        """Rows per rank of a global batch of ``batch_size`` (None: the whole data)."""
        size = n - n % self.world if batch_size is None else batch_size
        if size % self.world:
            raise ValueError(
                f'strategy="ddp" splits each batch over {self.world} processes: batch_size must '
                f"be a multiple of {self.world}. Received: batch_size={size}"
            )
        return size // self.world

    def shard(self, train: Any) -> _data.ArrayData:
        """This rank's rows of the training arrays (module docstring)."""
        if not isinstance(train, _data.ArrayData):
            raise ValueError(
                'strategy="ddp" takes arrays or tensors as x and y; for a DataLoader, build it '
                "with a torch.utils.data.DistributedSampler and train in a plain loop"
            )
        usable = train.n - train.n % self.world
        if usable == 0:
            raise ValueError(f"{train.n} training samples cannot be split over {self.world} ranks")
        rows = slice(self.rank, usable, self.world)

        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[rows]

        return _data.ArrayData(train.x[rows], part(train.y), part(train.sample_weight))

    def forward(self, fold: Any) -> nn.Module:
        """The training forward, wrapped once in ``DistributedDataParallel``."""
        if self._forward is None or self._forward.module.fold != fold:
            device = next(self.model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self._forward = DistributedDataParallel(_Forward(self.model, fold), device_ids=ids)
        return self._forward

    def _sum(self, values: list[float], device: torch.device) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def reduce(
        self, loss_sum: torch.Tensor, seen: int, metrics: Sequence[Any]
    ) -> tuple[torch.Tensor, int]:
        """Sum the epoch's loss and the metrics' running totals over the ranks."""
        leaves = [_leaf(m) for m in metrics]
        values = [float(loss_sum), float(seen)]
        for m in leaves:
            values += [float(m._total.sum()) if m._total is not None else 0.0, float(m._count)]
        summed = self._sum(values, loss_sum.device)
        for i, m in enumerate(leaves):
            total, count = summed[2 + 2 * i], summed[3 + 2 * i]
            m._total = torch.tensor(total, dtype=torch.float64)
            m._count = int(count)
        return torch.tensor(summed[0], dtype=torch.float64, device=loss_sum.device), int(summed[1])

    def all_finite(self, value: torch.Tensor) -> bool:
        """True if ``value`` is finite on every rank."""
        (bad,) = self._sum([0.0 if bool(torch.isfinite(value)) else 1.0], value.device)
        return bad == 0

    def agree_stop(self, stop: bool) -> bool:
        """True on every rank if any rank's callbacks asked to stop."""
        device = next(self.model.parameters()).device
        (votes,) = self._sum([1.0 if stop else 0.0], device)
        return votes > 0


def _leaf(metric: Any) -> Any:
    """The metric holding the running total (``Accuracy`` delegates to the one it resolved)."""
    while getattr(metric, "kind", None) is not None:
        metric = metric.kind
    return metric
