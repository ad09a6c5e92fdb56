"""optimist on torch.distributed: DDP throughput and optimizer-state bytes per rank.

* **throughput**: an MNIST MLP (784-256-256-10, float32) trained with optimist's Adam for
  ``--steps`` steps of a ``--batch`` global batch, by one process and by ``--world`` gloo
  processes under ``DistributedDataParallel`` (each rank a ``batch / world`` slice, one thread
  per process); samples per second after ``--warmup`` steps, median of ``--rounds``.
* **state bytes**: bytes of optimizer state each rank holds (DTensor state counted by its local
  shard) for Adam (float32 state), AdamW with int8 state, Muon (its AdamW fallback for the
  biases) and Adafactor, in one process, under ``ZeroRedundancyOptimizer`` and under FSDP2's
  ``fully_shard``. Adafactor keeps its small factored moments of the whole gradient on every
  rank under FSDP2 (``optimist.optim.distributed``), so its fraction stays near 1.
* **stop flag**: the cost of ``fit(strategy="ddp")``'s per-batch stop agreement (one float64
  all-reduce, made only when a callback has a train-batch hook), against the DDP step time.

Processes meet through a file on local disk (no network). On CPU the ranks share the machine's
cores, so the DDP speed-up is bounded by the core count; it is reported as measured.

    python benchmarks/distributed.py [--world 2] [--steps 30] [--rounds 3] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import optimist.optim as oo
from optimist.datasets import mnist
from optimist.optim.distributed import local

STATE = {
    "adam (float32 state)": lambda params: oo.Adam(params, lr=1e-3),
    "adamw int8 state": lambda params: oo.AdamW(params, lr=1e-3, state_dtype="int8"),
    "muon": lambda params: oo.Muon(params, lr=1e-3),
    "adafactor": lambda params: oo.Adafactor(params, lr=1e-3),
    "soap": lambda params: oo.SOAP(params, lr=1e-3),
    "prodigy": lambda params: oo.Prodigy(params),
}


def groups(name: str, net: torch.nn.Module) -> list:
    """The parameters, in Muon's two groups for Muon (ZeRO keeps the groups it is given)."""
    params = list(net.parameters())
    if name != "muon":
        return params
    return [{"params": [p for p in params if p.ndim >= 2], "use_muon": True},
            {"params": [p for p in params if p.ndim < 2], "use_muon": False}]  # fmt: skip


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)]
    return torch.nn.Sequential(*layers, torch.nn.ReLU(), torch.nn.Linear(256, 10))


def data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    (x, y), _ = mnist.load_data(copy=False)
    x = torch.from_numpy(np.asarray(x[:n], dtype=np.float32).reshape(n, -1) / 255.0)
    return x, torch.from_numpy(y[:n].astype(np.int64))


def state_bytes(opt: torch.optim.Optimizer) -> int:
    opt = getattr(opt, "optim", opt)  # ZeRO's local optimizer
    values = [v for s in opt.state.values() for v in s.values()]
    values += [t for v in values if isinstance(v, list) for t in v]  # SOAP's GG and Q
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    return sum(local(v).numel() * v.element_size() for v in tensors)


def throughput(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> float:  # noqa: ANN001
    opt = oo.Adam(net.parameters(), lr=1e-3)
    per = len(x) // args.steps
    rates = []
    for _ in range(args.rounds):
        for step in range(args.warmup + args.steps):
            if step == args.warmup:
                start = time.perf_counter()
            i = step % args.steps
            xb, yb = x[i * per : (i + 1) * per], y[i * per : (i + 1) * per]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        rates.append(args.steps * per / (time.perf_counter() - start))
    return statistics.median(rates)


def one_step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def flag_seconds(args) -> float:  # noqa: ANN001
    """Median seconds of one one-number all-reduce (fit's per-batch stop agreement)."""
    flag = torch.zeros(1, dtype=torch.float64)
    times = []
    for _ in range(args.rounds):
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            dist.all_reduce(flag)
        times.append((time.perf_counter() - start) / args.steps)
    return statistics.median(times)


def rank_main(rank: int, args, folder: str) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=args.world
    )
    try:
        measure(rank, args, folder)
    finally:  # after measure()'s DDP objects are gone (destroying them later can hang)
        dist.destroy_process_group()


def measure(rank: int, args, folder: str) -> None:  # noqa: ANN001
    """This rank's throughput and state bytes, saved to ``folder/rank<rank>.pt``."""
    x, y = data(args.batch * args.steps)
    # this rank's slice of every global batch
    per = args.batch // args.world
    idx = torch.cat([torch.arange(b * args.batch + rank * per, b * args.batch + (rank + 1) * per)
                     for b in range(args.steps)])  # fmt: skip
    rate = throughput(DistributedDataParallel(model()), x[idx], y[idx], args) * args.world
    out = {"ddp samples/s": rate, "stop flag s": flag_seconds(args)}
    xb, yb = x[:per], y[:per]
    for name, make in STATE.items():
        net = DistributedDataParallel(model())
        opt = ZeroRedundancyOptimizer(groups(name, net), optimizer_class=make)
        one_step(net, opt, xb, yb)
        out[f"zero {name}"] = state_bytes(opt)
        net = model()
        fully_shard(net)
        opt = make(groups(name, net))
        one_step(net, opt, xb, yb)
        out[f"fsdp2 {name}"] = state_bytes(opt)
    torch.save(out, f"{folder}/rank{rank}.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    torch.set_num_threads(1)
    x, y = data(args.batch * args.steps)
    single_rate = throughput(model(), x, y, args)
    single_state = {}
    for name, make in STATE.items():
        net = model()
        opt = make(groups(name, net))
        one_step(net, opt, x[: args.batch], y[: args.batch])
        single_state[name] = state_bytes(opt)

    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(rank_main, args=(args, folder), nprocs=args.world)
        ranks = [torch.load(Path(folder) / f"rank{r}.pt") for r in range(args.world)]

    sep = " | " if args.markdown else "  "
    lines = [f"{'what':<34}{sep}{'1 process':>12}{sep}{'per rank (' + str(args.world) + ')':>26}"]
    if args.markdown:
        lines = ["| what | 1 process | per rank |", "|---|---:|---:|"]
    rate = ranks[0]["ddp samples/s"]

    def row(what: str, one: str, per_rank: str) -> None:
        if args.markdown:
            lines.append(f"| {what} | {one} | {per_rank} |")
        else:
            lines.append(f"{what:<34}{sep}{one:>12}{sep}{per_rank:>26}")

    row("train samples/s (Adam, MLP)", f"{single_rate:,.0f}",
        f"{rate:,.0f} total ({rate / single_rate:.2f}x)")  # fmt: skip
    for name in STATE:
        for kind in ("zero", "fsdp2"):
            per = [r[f"{kind} {name}"] for r in ranks]
            frac = max(per) / single_state[name]
            row(f"{kind} state bytes, {name}", f"{single_state[name]:,}",
                " / ".join(f"{b:,}" for b in per) + f" (max {frac:.2f})")  # fmt: skip
    flag = ranks[0]["stop flag s"]
    step = args.batch / rate
    row("stop flag all-reduce per batch", "-",
        f"{flag * 1e6:,.0f} us ({flag / step:.1%} of a {step * 1e3:.1f} ms step)")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
