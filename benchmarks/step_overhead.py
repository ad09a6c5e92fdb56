"""Where a large step's time goes outside the C++ loop: ``step()`` against the engine calls alone.

For each rule, on the model-shaped parameter set of ``step_speed.py`` (float32), this times with
every cache cold (a 64 MiB write before each timed call, as after a backward pass):

* ``step()``: the optimizer's whole step (torch's step wrapper, gathering the group's lists,
  the engine's ``plan`` and ``run``);
* ``plan + run``: the same two C++ calls, with the same arguments (recorded from a step), alone;
* ``gather``: the optimizer's gathering of its lists (``_gather_fast``, ``plan`` included).

The difference ``step() - (plan + run)`` is what the Python side costs a step (README, Speed:
before and after the gather remembered its state lookups and ``step`` left torch's wrapper out
while no hook or profiler listens). Minimum over ``--repeats`` interleaved rounds of the
thread's CPU time, 1 thread. The optimist imported is the one on ``PYTHONPATH``: point it at
another checkout's ``src`` to time that one with the same script.

    python benchmarks/step_overhead.py --size 10M --optimizers sgd,adagrad,rmsprop,adamw
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optimist.optim as oo  # noqa: E402
from optimist.optim import engine, gather  # noqa: E402
from step_speed import ROWS, make_params, param_set  # noqa: E402


class _Recorder:
    """The engine module, recording the arguments of ``plan`` and ``run`` as they are called."""

    def __init__(self, module: Any) -> None:
        self.module, self.calls = module, {}

    def __getattr__(self, name: str) -> Any:
        f = getattr(self.module, name)
        if name not in ("plan", "run"):
            return f

        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = (args, kwargs)
            return f(*args, **kwargs)

        return record


def measure(name: str, size: str, repeats: int) -> dict[str, float]:
    """Minimum thread-CPU milliseconds of ``step()``, ``plan + run`` and the gather, cold."""
    module = engine.load()
    recorder = _Recorder(module)
    engine.load = gather.load = lambda: recorder  # type: ignore[assignment]
    try:
        row = ROWS[name]
        opt = getattr(oo, row.optimist)(make_params(param_set(size)), **row.kwargs)
        for p in (p for g in opt.param_groups for p in g["params"]):
            p.grad = torch.randn_like(p)
        opt.step()
        opt.step()
    finally:
        engine.load = gather.load = lambda: module  # type: ignore[assignment]
    if "run" not in recorder.calls:
        raise SystemExit(f"{name}: its step does not run through the engine's plan and run")
    (plan_args, plan_kwargs), (run_args, run_kwargs) = recorder.calls["plan"], recorder.calls["run"]
    group = opt.param_groups[0]
    slots = opt._slots(group)

    def engine_calls() -> None:
        module.run(module.plan(*plan_args, **plan_kwargs), *run_args[1:], **run_kwargs)

    def gathering() -> None:
        opt._gather_fast(group, slots)

    contenders = {"step()": opt.step, "plan + run": engine_calls, "gather": gathering}
    flush = torch.empty(16 * 2**20)
    best = dict.fromkeys(contenders, float("inf"))
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for key in order:
            flush.add_(1.0)
            start = time.thread_time()
            contenders[key]()
            best[key] = min(best[key], time.thread_time() - start)
    return {k: v * 1e3 for k, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10M")
    parser.add_argument("--optimizers", default="sgd,adagrad,rmsprop,adamw")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.size}, caches cold, thread clock, "
          f"minimum of {args.repeats} interleaved rounds (ms)")  # fmt: skip
    print("| optimizer | step() | plan + run | gather (with plan) | step() − (plan + run) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.optimizers.split(","):
        t = measure(name, args.size, args.repeats)
        python_side = t["step()"] - t["plan + run"]
        print(f"| {name} | {t['step()']:.3f} | {t['plan + run']:.3f} | {t['gather']:.3f} | "
              f"{python_side:.3f} ({python_side / t['step()']:.0%}) |")  # fmt: skip


if __name__ == "__main__":
    main()
