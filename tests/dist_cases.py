"""Multi-process cases for tests/test_distributed.py: each runs on every rank of a gloo group
(CPU, loopback, file rendezvous) and its single-process twin runs the same steps on the
concatenated batch. ``spawn(...)`` starts the ranks with a deadline so nothing hangs."""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

import optimist
import optimist.optim as oo
from optimist import transforms as T
from optimist.optim import distributed as optimist_distributed
from optimist.optim.checkpoint import TrainState

with warnings.catch_warnings():  # importing it scripts torch's functional optimizers (torch.jit)
    warnings.filterwarnings("ignore", "`torch.jit.(script|interface)` is deprecated")
    from torch.distributed.optim import ZeroRedundancyOptimizer

WORLD = 2
STEPS = 3
OPTIMIZERS: dict[str, Callable] = {
    "adam": lambda params: oo.Adam(params, lr=0.01),
    "sgd_momentum": lambda params: oo.SGD(params, lr=0.05, momentum=0.9),
    "adamw_int8": lambda params: oo.AdamW(params, lr=0.01, weight_decay=0.1, state_dtype="int8"),
    "lion": lambda params: oo.Lion(params, lr=0.01),
}
# whole-tensor work on sharded parameters (optimist.optim.distributed): Newton-Schulz on the
# gathered matrix, factored moments of the gathered gradient, trust ratios of all-reduced norms
TENSORWISE: dict[str, Callable] = {
    "muon": lambda params: oo.Muon(params, lr=0.02, adamw_lr=0.01),
    "adafactor": lambda params: oo.Adafactor(params, lr=0.01, weight_decay=0.1),
    "lamb": lambda params: oo.LAMB(params, lr=0.01, weight_decay=0.1),
    "lars": lambda params: oo.LARS(params, lr=0.5, momentum=0.9, weight_decay=0.01),
}
GUARDED_LAMB = lambda params: oo.LAMB(params, lr=0.01, skip_nonfinite=True)  # noqa: E731


def muon_groups(params: Iterable[torch.Tensor]) -> list[dict[str, object]]:
    """Muon's two groups made before ZeroRedundancyOptimizer sees them (it keeps the groups it
    was given; Muon would split a mixed group into two)."""
    params = list(params)
    return [{"params": [p for p in params if p.ndim >= 2], "use_muon": True},
            {"params": [p for p in params if p.ndim < 2], "use_muon": False}]  # fmt: skip


GROUPS: dict[str, Callable] = {"muon": muon_groups}
# clip_by_global_norm small enough to act on every step, skip_nonfinite for the NaN step
GUARDED = optimist.chain(T.clip_by_global_norm(0.05), T.skip_nonfinite(), T.scale_by_adam())
NAN_STEP = 1
# sharded checkpoints: int8 (decoded to float32 in the file) and bfloat16 state
CHECKPOINTED: dict[str, Callable] = {
    "adamw_int8": OPTIMIZERS["adamw_int8"],
    "adam_bf16": lambda params: oo.Adam(params, lr=0.01, state_dtype="bfloat16"),
}


def mlp() -> torch.nn.Module:
    # 64 x 64 = 4096 weights: int8 state; each rank's half (2048) is whole 256-element blocks
    torch.manual_seed(0)
    layers = [torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64)]
    return torch.nn.Sequential(*layers).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 64, (8,), generator=g)


def mnist_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(32, 10)).double()


def mnist_batch() -> tuple[torch.Tensor, torch.Tensor]:
    from optimist.datasets import mnist

    (x, y), _ = mnist.load_data(copy=False)
    x = torch.from_numpy(np.asarray(x[:32], dtype=np.float64) / 255.0)
    return x, torch.from_numpy(np.asarray(y[:32], dtype=np.int64))


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    out = []
    for p in model.parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        out.append(p.detach().clone())
    return out


def train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    nan_on: Callable[[torch.nn.Module, torch.optim.Optimizer], None] | None = None,
    steps: int = STEPS,
) -> list[torch.Tensor]:
    """``steps`` steps of cross-entropy on ``data``; ``nan_on`` poisons a gradient at NAN_STEP."""
    x, y = data
    for step in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if nan_on is not None and step == NAN_STEP:
            nan_on(model, opt)
        opt.step()
    return _params(model)


def _skipped(opt: torch.optim.Optimizer) -> int:
    return getattr(opt, "optim", opt).skipped_steps


# --- the cases: name -> (rank function, single-process function) ---------------------------------


def _half(data: tuple[torch.Tensor, torch.Tensor], rank: int) -> tuple[torch.Tensor, ...]:
    return tuple(t.chunk(WORLD)[rank] for t in data)


def _nan_in_rank1_part(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """A NaN in rank 1's own part only: its ZeRO partition, or its local shard (FSDP2).

    (Any poisoned gradient skips the whole step, so the one-process twin poisons another.)"""
    if dist.get_rank() == 1:
        if isinstance(opt, ZeroRedundancyOptimizer):
            g = opt.optim.param_groups[0]["params"][0].grad
        else:
            g = model[2].weight.grad.to_local()
        g.view(-1)[-1] = float("nan")


def run_rank(rank: int) -> dict[str, object]:
    """Every case on this rank; rank-0 parameters and every rank's skip counts."""
    data = _half(batch(), rank)
    out = sharded_cases(OPTIMIZERS, data)
    model = DistributedDataParallel(mnist_mlp())
    mnist = _half(mnist_batch(), rank)
    out["ddp/mnist"] = train(model, oo.Adam(model.parameters(), lr=0.01), mnist)
    model = DistributedDataParallel(mlp())
    out["ddp/guarded"] = train(model, GUARDED(model.parameters(), lr=0.01), data)
    for kind in ("zero", "fsdp"):
        model = mlp()
        if kind == "zero":
            model = DistributedDataParallel(model)
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=GUARDED, lr=0.01)
        else:
            fully_shard(model)
            opt = GUARDED(model.parameters(), lr=0.01)
        out[f"{kind}/guarded_nan"] = train(model, opt, data, _nan_in_rank1_part)
        out[f"{kind}/skipped@{rank}"] = _skipped(opt)
    out.update(checkpoint_cases(rank, data))
    return out


def sharded_cases(
    optimizers: dict[str, Callable], data: tuple[torch.Tensor, ...]
) -> dict[str, object]:
    """Each optimizer under ZeroRedundancyOptimizer (over DDP) and under FSDP2 fully_shard."""
    out: dict[str, object] = {}
    for name, make in optimizers.items():
        groups = GROUPS.get(name, list)
        model = DistributedDataParallel(mlp())
        opt = ZeroRedundancyOptimizer(groups(model.parameters()), optimizer_class=make)
        out[f"zero/{name}"] = train(model, opt, data)
        model = mlp()
        fully_shard(model)
        out[f"fsdp/{name}"] = train(model, make(groups(model.parameters())), data)
    return out


def tensorwise_rank(rank: int) -> dict[str, object]:
    """TENSORWISE under ZeRO and FSDP2, and LAMB's skip_nonfinite with a NaN on rank 1 only."""
    data = _half(batch(), rank)
    out = sharded_cases(TENSORWISE, data)
    for kind in ("zero", "fsdp"):
        model = mlp()
        if kind == "zero":
            model = DistributedDataParallel(model)
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=GUARDED_LAMB)
        else:
            fully_shard(model)
            opt = GUARDED_LAMB(model.parameters())
        out[f"{kind}/lamb_nan"] = train(model, opt, data, _nan_in_rank1_part)
        out[f"{kind}/lamb_skipped@{rank}"] = _skipped(opt)
    out.update(checkpoint_cases(rank, data, TENSORWISE))
    return out


def run_single_tensorwise() -> dict[str, object]:
    """tensorwise_rank's cases in one process on the whole batch."""
    out: dict[str, object] = {}
    for name, make in TENSORWISE.items():
        model = mlp()
        opt = make(GROUPS.get(name, list)(model.parameters()))
        out[f"zero/{name}"] = out[f"fsdp/{name}"] = train(model, opt, batch())
    model = mlp()
    opt = GUARDED_LAMB(model.parameters())
    out["zero/lamb_nan"] = out["fsdp/lamb_nan"] = train(model, opt, batch(), _nan_last_weight)
    out["lamb_skipped"] = opt.skipped_steps
    return out


def checkpoint_cases(
    rank: int,
    data: tuple[torch.Tensor, ...],
    optimizers: dict[str, Callable] = CHECKPOINTED,
    net: Callable[[], torch.nn.Module] = mlp,
) -> dict[str, object]:
    """FSDP2: train, save (every rank), train on; a fresh model + optimizer loads and trains on."""
    out: dict[str, object] = {}
    for name, make in optimizers.items():
        model = net()
        fully_shard(model)
        opt = make(model.parameters())
        train(model, opt, data)
        folder = Path(os.environ["OPTIMIST_TEST_CHECKPOINTS"]) / name
        dcp.save({"train": TrainState(model, opt)}, checkpoint_id=folder)
        out[f"dcp/{name}/continued"] = train(model, opt, data)
        model = net()
        fully_shard(model)
        opt = make(model.parameters())
        dcp.load({"train": TrainState(model, opt)}, checkpoint_id=folder)
        out[f"dcp/{name}/reloaded"] = train(model, opt, data)
    return out


def load_on_one(
    name: str,
    folder: Path,
    make: Callable | None = None,
    net: Callable[[], torch.nn.Module] = mlp,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """One process (no process group) loads the 2-rank checkpoint of ``name`` (by default one
    of CHECKPOINTED, on ``mlp`` and ``batch()``) and trains on."""
    model = net()
    opt = (make or CHECKPOINTED[name])(model.parameters())
    dcp.load({"train": TrainState(model, opt)}, checkpoint_id=folder / name)
    return train(model, opt, batch() if data is None else data)


def _nan_last_weight(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    model[2].weight.grad.view(-1)[-1] = float("nan")


def run_single() -> dict[str, object]:
    """The same cases in one process on the whole batch."""
    out: dict[str, object] = {}
    data = batch()
    for name, make in OPTIMIZERS.items():
        model = mlp()
        out[f"zero/{name}"] = out[f"fsdp/{name}"] = train(model, make(model.parameters()), data)
    model = mnist_mlp()
    out["ddp/mnist"] = train(model, oo.Adam(model.parameters(), lr=0.01), mnist_batch())
    model = mlp()
    out["ddp/guarded"] = train(model, GUARDED(model.parameters(), lr=0.01), data)
    model = mlp()
    opt = GUARDED(model.parameters(), lr=0.01)
    out["zero/guarded_nan"] = out["fsdp/guarded_nan"] = train(model, opt, data, _nan_last_weight)
    out["skipped"] = opt.skipped_steps
    return out


# --- launching ---------------------------------------------------------------------------------


def _entry(rank: int, folder: str, case: str) -> None:
    os.environ["OPTIMIST_TEST_CHECKPOINTS"] = f"{folder}/checkpoints"
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD
    )
    try:
        with (
            open(f"{folder}/out{rank}.txt", "w") as out,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
        ):
            result = _case(case)(rank)
        torch.save(result, f"{folder}/rank{rank}.pt")
        # no rank tears its gloo connections down while another still uses them
        dist.barrier()
    finally:
        # torch's destroy_process_group frees nothing after FSDP2/DTensor work (DTensor's
        # caches keep the mesh, the mesh its group): the gloo threads ran on into interpreter
        # shutdown, where rank 1 aborted once in a CI run (README, "Why a rank sometimes
        # aborted at exit"); this one frees the group
        optimist_distributed.destroy_process_group()


def _case(case: str) -> Callable[[int], dict[str, object]]:
    """A function here by name, or ``"module:function"`` of another test module."""
    module, _, name = case.rpartition(":")
    return getattr(importlib.import_module(module), name) if module else globals()[name]


def spawn(folder: Path, case: str = "run_rank", timeout: float = 240.0) -> list[dict[str, object]]:
    """Run ``case(rank)`` (a function here, or ``"module:function"``) on WORLD processes; their
    results (TimeoutError past ``timeout``); what each rank printed is in
    ``folder/out<rank>.txt``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = mp.start_processes(_entry, args=(str(folder), case), nprocs=WORLD, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the {WORLD} ranks did not finish within {timeout:.0f} s")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# --- fit(..., strategy="ddp") --------------------------------------------------------------------


class StopOnRank1(optimist.training.callbacks.Callback):
    """Asks to stop after epoch index 1 on rank 1 only."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 1 and dist.is_initialized() and dist.get_rank() == 1:
            self.model.stop_training = True


def fit_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=96)
    x = np.eye(3, 6)[labels] * 2 + 0.3 * rng.standard_normal((96, 6))
    return x.astype(np.float32), labels.astype(np.int64)


class StopOnEpoch0(optimist.training.callbacks.Callback):
    """Asks to stop at the end of the first epoch."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.model.stop_training = True


class StopAtBatch(optimist.training.callbacks.Callback):
    """Asks to stop after batch 2 of the first epoch (under DDP: on rank 1 only)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        ranked = dist.is_initialized() and dist.get_rank() != 1
        if batch == 2 and self.model.epoch == 0 and not ranked:
            self.model.stop_training = True


def fit_input(source: str) -> tuple[object, object]:
    """``fit``'s x and y: the arrays, a Dataset, a DataLoader (batch 16: the global batch), or
    a DataLoader on a DistributedSampler (batch 8 per rank)."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    x, y = fit_data()
    if source == "arrays":
        return x, y
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    if source == "dataset":
        return data, None
    if source == "loader":
        return DataLoader(data, batch_size=16), None
    sampler = DistributedSampler(data, shuffle=False, drop_last=True)
    return DataLoader(data, batch_size=8, sampler=sampler), None


def fit_model(  # noqa: ANN201
    strategy: str | None,
    callbacks: list,
    folder: Path | None = None,
    source: str = "arrays",
    shuffle: bool = False,
):
    from optimist.layers import Dense
    from optimist.training.callbacks import CSVLogger

    torch.manual_seed(0)
    model = optimist.Sequential([Dense(8, activation="relu", input_shape=(6,)), Dense(3)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if folder is not None:
        callbacks = [*callbacks, CSVLogger(folder / f"log{dist.get_rank()}.csv")]
    x, y = fit_input(source)
    history = model.fit(x, y, batch_size=16, epochs=4, shuffle=shuffle, verbose=2,
                        callbacks=callbacks, strategy=strategy)  # fmt: skip
    return history.history, [p.detach().clone() for p in model.parameters()]


def fit_rank(rank: int) -> dict[str, object]:
    folder = Path(os.environ["OPTIMIST_TEST_CHECKPOINTS"]).parent
    history, weights = fit_model("ddp", [], folder)
    out: dict[str, object] = {"history": history, "weights": weights}
    out["stopped"], _ = fit_model("ddp", [StopOnRank1()])
    out["stopped_mid"] = fit_model("ddp", [StopAtBatch()])
    for source in ("dataset", "loader", "sampler"):
        out[source] = fit_model("ddp", [], source=source)
    out["shuffled"] = fit_model("ddp", [], source="dataset", shuffle=True)
    return out
