"""``fit(..., strategy="ddp")``: data-parallel training on ``torch.distributed``.

Every process (launched by ``torchrun``, the process group initialised before ``fit``) holds
the whole model; :class:`DDPStrategy` is all ``fit`` needs for it:

* ``batch_size`` is the global batch, ``batch_size / N`` rows per rank. Arrays are dealt out
  by rows (rank ``r`` takes rows ``r, r + N, ...``; the remainder after a multiple of N rows is
  dropped so every rank runs the same number of steps). A ``Dataset``, or a ``DataLoader``
  (whose ``batch_size`` is then the global batch), is re-batched by ``batch_size / N`` over a
  ``DistributedSampler`` with ``drop_last=True``: the same rows as for arrays; ``shuffle`` (a
  ``RandomSampler``) becomes the sampler's shuffle, seeded alike on every rank and reshuffled
  each epoch by ``set_epoch``. A ``DataLoader`` already built on a ``DistributedSampler`` is
  used as it is (its ``batch_size`` is per rank) and gets ``set_epoch`` too. Without
  shuffling, step ``k`` of the N ranks together sees exactly batch ``k`` of one process;
* the forward pass runs through ``DistributedDataParallel``, which averages the gradients, so
  every rank's optimizer takes the same step;
* the epoch's loss and metrics are summed over the ranks before they reach the logs, so
  history, callbacks and the progress bar see the numbers of the whole data;
* the loss's NaN check and ``stop_training`` are agreed by all ranks: at each epoch's end and,
  when a callback other than the writers below has a train-batch hook (the only way a stop is
  asked mid-epoch), after every batch, so every rank stops after the same batch (one
  one-number all-reduce per batch, only then);
* only rank 0 prints (other ranks run with ``verbose=0``) and runs the callbacks that write
  files or warnings (``ModelCheckpoint``, ``CSVLogger``, ``optimist.monitor.Monitor``);
  ``BackupAndRestore`` restores on every rank (from one folder all of them read) and writes on
  rank 0 only; the ranks check that they start at the same epoch. Validation data is
  evaluated whole on every rank.

Teardown: ``DistributedDataParallel`` imports ``torch.distributed.nn.functional`` lazily
(through ``torch._dynamo``), whose collectives take ``group=group.WORLD`` as a default argument,
bound when the module is imported. Imported after ``init_process_group``, those defaults hold the
live default group: ``destroy_process_group()`` cannot free it, its gloo threads keep running
and the group is destroyed during interpreter shutdown, where a rank sometimes died with
SIGABRT ("terminate called without an active exception"). ``import optimist`` imports that
module first, so its defaults are None; :func:`start` warns when the group is bound anyway
(optimist imported after ``init_process_group``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from optimist import monitor as _monitor
from optimist.training import data as _data
from optimist.training.callback_base import _overrides as overrides
from optimist.training.callbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    ModelCheckpoint,
)

__all__ = ["STRATEGIES", "DDPStrategy", "start"]

STRATEGIES = (None, "ddp")
WRITERS = (ModelCheckpoint, CSVLogger, _monitor.Monitor)
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end")


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
    if _group_outlives_destroy():
        warnings.warn(
            "torch.distributed.nn.functional was imported after init_process_group: its "
            "group=WORLD defaults keep the default group alive after destroy_process_group(), "
            "to be torn down at interpreter exit (where gloo can abort); import optimist "
            "before init_process_group",
            RuntimeWarning,
            stacklevel=3,
        )
    return DDPStrategy(model)


def _group_outlives_destroy() -> bool:
    """True if torch.distributed.nn.functional's defaults hold the live default group."""
    import torch.distributed.nn.functional as functional  # DDP imports it in any case

    defaults = functional.all_reduce.__defaults__ or ()
    return any(d is not None and d is dist.group.WORLD for d in defaults)


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
        self._sampler: DistributedSampler | None = None
        self.stop_each_batch = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def verbose(self, verbose: int) -> int:
        return verbose if self.is_main else 0

    def callbacks(self, callbacks: Sequence[Callback]) -> list[Callback]:
        """The callbacks this rank runs (module docstring); sets ``stop_each_batch``."""
        kept = [cb for cb in callbacks if self.is_main or not isinstance(cb, WRITERS)]
        for cb in kept:
            if isinstance(cb, BackupAndRestore):
                cb.write = self.is_main
        self.stop_each_batch = any(
            not isinstance(cb, WRITERS) and any(overrides(cb, hook) for hook in BATCH_HOOKS)
            for cb in kept
        )
        return kept

    def local_batch_size(self, batch_size: int | None, n: int) -> int:
        """Rows per rank of a global batch of ``batch_size`` (None: the whole data)."""
        size = n - n % self.world if batch_size is None else batch_size
        if size % self.world:
            raise ValueError(
                f'strategy="ddp" splits each batch over {self.world} processes: batch_size must '
                f"be a multiple of {self.world}. Received: batch_size={size}"
            )
        return size // self.world

    def shard(self, train: Any, batch_size: int | None) -> tuple[Any, int | None]:
        """This rank's part of the training data, and its batch size (module docstring)."""
        if isinstance(train, _data.LoaderData):
            return self._shard_loader(train.loader), None
        local = self.local_batch_size(batch_size, train.n)
        usable = train.n - train.n % self.world
        if usable == 0:
            raise ValueError(f"{train.n} training samples cannot be split over {self.world} ranks")
        rows = slice(self.rank, usable, self.world)

        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            # contiguous: a strided batch takes another matmul path than the DataLoader's
            # collated one, and the same rows must give the same bits either way
            return None if t is None else t[rows].contiguous()

        return _data.ArrayData(part(train.x), part(train.y), part(train.sample_weight)), local

    def _shard_loader(self, loader: DataLoader) -> _data.LoaderData:
        if isinstance(loader.sampler, DistributedSampler):
            self._sampler = loader.sampler  # sharded by the user: its batch_size is per rank
            return _data.LoaderData(loader, None, False, None)
        dataset = loader.dataset
        plain = isinstance(loader.sampler, (SequentialSampler, RandomSampler)) and (
            type(loader.batch_sampler) is torch.utils.data.BatchSampler
        )
        if isinstance(dataset, IterableDataset) or not plain or loader.batch_size is None:
            raise ValueError(
                'strategy="ddp" re-batches a DataLoader over a DistributedSampler, which needs a '
                "map-style Dataset and batch_size= (no custom sampler or batch_sampler); build "
                "this one on a torch.utils.data.DistributedSampler yourself"
            )
        if len(dataset) < self.world:
            raise ValueError(
                f"{len(dataset)} training samples cannot be split over {self.world} ranks"
            )
        local = self.local_batch_size(loader.batch_size, len(dataset))
        shuffle = isinstance(loader.sampler, RandomSampler)
        seed = torch.zeros(1, dtype=torch.int64, device=self._device())
        if shuffle:  # drawn from the loader's generator (fit's is seeded), rank 0's for all
            draw = torch.randint(2**62, (1,), generator=loader.sampler.generator)
            seed.copy_(draw)
            dist.broadcast(seed, src=0)
        self._sampler = DistributedSampler(
            dataset, self.world, self.rank, shuffle=shuffle, seed=int(seed), drop_last=True
        )
        sharded = DataLoader(
            dataset,
            batch_size=local,
            sampler=self._sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
            persistent_workers=loader.persistent_workers,
        )
        return _data.LoaderData(sharded, None, False, None)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle the DistributedSampler for ``epoch`` (the same order on every rank)."""
        if self._sampler is not None:
            self._sampler.set_epoch(epoch)

    def agree_epoch(self, epoch: int) -> int:
        """``epoch`` (where ``fit`` starts, after any restore), checked equal on every rank."""
        mine = torch.tensor([epoch], dtype=torch.int64, device=self._device())
        every = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        epochs = [int(e) for e in every]
        if len(set(epochs)) > 1:
            raise RuntimeError(
                f"the ranks would start fit at different epochs {epochs} (by rank): they "
                "restored different backups; BackupAndRestore's backup_dir must be one folder "
                "that every rank reads"
            )
        return epoch

    def lost_rank(self, exc: BaseException, epoch: int, epochs: int, backup: bool) -> Exception:
        """``exc`` as one line if a collective failed because another rank died, else ``exc``."""
        text = "".join(c for c in str(exc) if c.isprintable()).strip()
        markers = ("gloo", "NCCL", "Connection", "connection", "timed out")
        if not isinstance(exc, dist.DistError) and not any(m in text for m in markers):
            return exc
        hint = (
            "start the same command again: BackupAndRestore resumes after the last finished epoch"
            if backup
            else "pass callbacks=[BackupAndRestore(folder)] to resume after such a crash"
        )
        return RuntimeError(
            f'fit(strategy="ddp") on rank {self.rank} lost another rank in epoch {epoch + 1}/'
            f"{epochs} (it died or hung; the launcher's report names it); {hint}. [{text[:160]}]"
        )

    def forward(self, fold: Any) -> nn.Module:
        """The training forward, wrapped once in ``DistributedDataParallel``."""
        if self._forward is None or self._forward.module.fold != fold:
            device = next(self.model.parameters()).device
            ids = [device.index] if device.type == "cuda" else None
            self._forward = DistributedDataParallel(_Forward(self.model, fold), device_ids=ids)
        return self._forward

    def _device(self) -> torch.device:
        """Where the collectives run: the model's device (gloo: CPU, NCCL: the rank's GPU)."""
        first = next(self.model.parameters(), None)
        return torch.device("cpu") if first is None else first.device

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
        (votes,) = self._sum([1.0 if stop else 0.0], self._device())
        return votes > 0


def _leaf(metric: Any) -> Any:
    """The metric holding the running total (``Accuracy`` delegates to the one it resolved)."""
    while getattr(metric, "kind", None) is not None:
        metric = metric.kind
    return metric
