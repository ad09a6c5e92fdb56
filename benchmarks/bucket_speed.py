"""Launches and time of one ``step()``: the eager path tensor by tensor against bucketed.

The eager path (every rule without a torch kernel on accelerators, and the classic rules where
torch's path does not apply) runs a rule's torch ops once per tensor, or once per bucket of
small tensors (:mod:`optimist.optim.bucket`). Per optimizer and parameter set, for both
(``foreach=False`` / ``foreach=True``; on an accelerator ``foreach=None`` buckets too):

* **ops**: the tensor ops one step dispatches to the device (a ``TorchDispatchMode`` count,
  views excluded: on a GPU each is about one kernel launch; a ``_foreach_`` op is one launch
  per ~100 tensors there), and how many of them read a device value back to the host
  (``.item()``: a sync);
* **kernels** (CUDA only): the kernels the step launched (``torch.profiler``);
* **time**: on the CPU the minimum over interleaved rounds of the calling thread's CPU time
  (1 thread: what the Python and dispatch side costs, which is what bounds a GPU step of
  small tensors); on CUDA the minimum over rounds of CUDA-event time per step
  (``--steps`` steps a round).

Parameter sets (float32): ``tiny`` 1000 tensors of 64; ``12x`` 10M elements in 12 tensors
(10 matrices of 10^6, 2 vectors: all below the 2^20 elements above which a tensor is stepped
alone); ``10M``, ``50M``: the 99 model-shaped tensors of ``step_speed.py`` (the embedding and
larger matrices there stay one call each).

    python benchmarks/bucket_speed.py                       # CPU, every row, tiny and 12x
    python benchmarks/bucket_speed.py --device cuda --sizes tiny,12x,10M --repeats 20
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optimist.optim as oo  # noqa: E402
from step_speed import param_set  # noqa: E402

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "lion": ("Lion", {"lr": 1e-4, "weight_decay": 0.1}),
    "adopt": ("ADOPT", {"lr": 1e-3}),
    "ademamix": ("AdEMAMix", {"lr": 1e-3}),
    "adan": ("Adan", {"lr": 1e-3}),
    "sophiag": ("SophiaG", {"lr": 1e-4}),
    "adamw-bf16": ("AdamW", {"lr": 1e-3, "state_dtype": "bfloat16"}),
    "adamw-int8": ("AdamW", {"lr": 1e-3, "state_dtype": "int8"}),
}


def shapes(size: str) -> list[tuple[int, ...]]:
    if size == "tiny":
        return [(64,)] * 1000
    if size == "12x":  # 10M in 12 tensors, all at most TENSOR_MAX = 2^20 elements
        return [(1000, 1000)] * 10 + [(1000,)] * 2
    return param_set(size)


def make_params(size: str, device: str) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape in shapes(size):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-3).to(device)
        out.append(p)
    return out


class OpCounter(TorchDispatchMode):
    """Counts the ops that reach the backend (views left out) and device-to-host reads."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.syncs = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if not func.is_view:
            self.ops[func.__name__] += 1
            if func.__name__.startswith("_local_scalar_dense") and not args[0].is_cpu:
                self.syncs += 1
        return func(*args, **(kwargs or {}))


def count(opt: torch.optim.Optimizer, device: str) -> tuple[int, int, int | None]:
    """(ops, host syncs, CUDA kernels) of one step."""
    with OpCounter() as counter:
        opt.step()
    kernels = None
    if device.startswith("cuda"):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            opt.step()
            torch.cuda.synchronize()
        kernels = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    return sum(counter.ops.values()), counter.syncs, kernels


def seconds(opt: torch.optim.Optimizer, device: str, steps: int) -> float:
    """Seconds per step of one round."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            opt.step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / steps
    t0 = time.thread_time()
    for _ in range(steps):
        opt.step()
    return (time.thread_time() - t0) / steps


def measure(name: str, size: str, device: str, repeats: int, steps: int) -> dict[str, Any]:
    cls, kwargs = ROWS[name]
    opts = {
        mode: getattr(oo, cls)(make_params(size, device), foreach=mode == "bucketed", **kwargs)
        for mode in ("per tensor", "bucketed")
    }
    out: dict[str, Any] = {}
    for mode, opt in opts.items():
        opt.step()  # state made
        out[mode] = count(opt, device)
    best = dict.fromkeys(opts, float("inf"))
    for r in range(repeats):
        for mode in list(opts)[:: 1 if r % 2 == 0 else -1]:
            best[mode] = min(best[mode], seconds(opts[mode], device, steps))
    return {"counts": out, "seconds": best, "tensors": len(shapes(size))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    ap.add_argument("--optimizers", default=",".join(ROWS), help=f"of {list(ROWS)}")
    ap.add_argument("--sizes", default="tiny,12x", help="tiny, 12x, 10M, 50M, ...")
    ap.add_argument("--repeats", type=int, default=5, help="rounds (the minimum is kept)")
    ap.add_argument("--steps", type=int, default=3, help="steps per round")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clock = "CUDA events" if args.device.startswith("cuda") else "thread CPU time, 1 thread"
    print(f"torch {torch.__version__}, {args.device}, {clock}, min of {args.repeats} rounds")
    print(
        "| optimizer | params | ops/step per tensor → bucketed | syncs | kernels | "
        "ms/step per tensor | bucketed | speed-up | µs/tensor bucketed |"
    )
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        for name in args.optimizers.split(","):
            r = measure(name, size, args.device, args.repeats, args.steps)
            (o1, s1, k1), (o2, s2, k2) = r["counts"]["per tensor"], r["counts"]["bucketed"]
            t1, t2 = r["seconds"]["per tensor"], r["seconds"]["bucketed"]
            kernels = "–" if k1 is None else f"{k1} → {k2}"
            print(
                f"| {name} | {size} | {o1} → {o2} | {s1} → {s2} | {kernels} | {t1 * 1e3:.3f} | "
                f"{t2 * 1e3:.3f} | {t1 / t2:.1f}x | {t2 * 1e6 / r['tensors']:.1f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
