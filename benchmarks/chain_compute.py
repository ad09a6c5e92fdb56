"""What a clipped chain's step costs the core apart from memory: nanoseconds per parameter, cached.

Times ``AdamW``, ``chain(clip_by_global_norm(1.0), add_decayed_weights(0.01, mask=no_bias_or_norm),
scale_by_adam())``, the same chain without the clip, and pass 0 alone (``grad_total``) on two
small parameter sets that stay in L2, and reports the slope between them (the per-step Python
cost cancels): the compute each step needs per parameter. At 10M parameters and one thread a
float32 AdamW step moves its 280 MB at about the rate it computes, so a chain whose update costs
more per parameter than AdamW's is slower by that, not only by its extra read of the gradients
(README, Speed). Minimum over ``--rounds`` interleaved rounds of the thread's CPU time, 1 thread.

    python benchmarks/chain_compute.py --rounds 40
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import optimist
from optimist import transforms as T
from optimist.optim import AdamW, native

SMALL = [(8, 8)] * 3 + [(8,)] * 3
LARGE = [(200, 200)] * 3 + [(200,)] * 3  # 120,600 parameters: p, g, m, v in 1.9 MB


def steps(shapes: list[tuple[int, ...]]) -> dict[str, Callable[[], object]]:
    """The step of each contender, each on its own copy of the same parameters and gradients."""

    def params() -> list[torch.nn.Parameter]:
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen)
        return ps

    def chain(*clip: T.Transform) -> torch.optim.Optimizer:
        decay = T.add_decayed_weights(0.01, mask=T.no_bias_or_norm)
        return optimist.chain(*clip, decay, T.scale_by_adam())(params(), lr=1e-3)

    clipped = chain(T.clip_by_global_norm(1.0))
    grads = [p.grad for p in clipped.param_groups[0]["params"]]
    mod = native.load()
    return {
        "AdamW": AdamW(params(), lr=1e-3, weight_decay=0.01).step,
        "chain": clipped.step,
        "chain without clip": chain().step,
        "pass 0": lambda: mod.grad_total(grads, 0.0),
    }


def per_call(fns: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Minimum thread-CPU seconds per call of each function over interleaved rounds."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.thread_time()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.thread_time() - t0) / calls)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--calls", type=int, default=100, help="calls per timed round")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        ap.error("--rounds and --calls must be at least 1")
    torch.set_num_threads(1)
    small = per_call(steps(SMALL), args.rounds, args.calls)
    large = per_call(steps(LARGE), args.rounds, args.calls)
    n = sum(torch.Size(s).numel() for s in LARGE) - sum(torch.Size(s).numel() for s in SMALL)
    print(f"torch {torch.__version__}, 1 thread, minimum of {args.rounds} rounds, thread clock")
    print(f"{'step':<20} {'ns per parameter':>16} {'per step (us)':>14}")
    for name in small:
        slope = (large[name] - small[name]) / n * 1e9
        print(f"{name:<20} {slope:>16.3f} {small[name] * 1e6:>14.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
