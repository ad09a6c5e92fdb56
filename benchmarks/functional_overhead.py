"""What a step of ``optimist.optim.functional`` costs against the class's step.

The functional builds the optimizer's class over the parameters on every call (so that it runs
the class's own dispatch); this prints both per step for Adam, interleaved round after round
(minimum of ``--repeats``), thread clock, 1 thread.

    python benchmarks/functional_overhead.py
    python benchmarks/functional_overhead.py --shapes 10x1000 4x1000000
"""

from __future__ import annotations

import argparse
import time

import torch

from optimist.optim import Adam
from optimist.optim import functional as F


def measure(tensors: int, numel: int, repeats: int, calls: int) -> tuple[float, float]:
    """Seconds per step of the class and of the functional (min over ``repeats`` rounds)."""
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(numel, generator=gen).requires_grad_() for _ in range(tensors)]
    b = [p.detach().clone() for p in a]
    grads = [torch.randn(numel, generator=gen) for _ in range(tensors)]
    for p, g in zip(a, grads, strict=True):
        p.grad = g
    opt = Adam(a, lr=1e-3)
    states, steps = F.init_states("adam", b)
    best_class = best_functional = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        for _ in range(calls):
            opt.step()
        best_class = min(best_class, (time.thread_time() - start) / calls)
        start = time.thread_time()
        for _ in range(calls):
            F.step("adam", b, grads, states, steps, lr=1e-3)
        best_functional = min(best_functional, (time.thread_time() - start) / calls)
    return best_class, best_functional


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["10x1000", "100x1000", "4x1000000"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for shape in args.shapes:
        tensors, numel = (int(x) for x in shape.split("x"))
        cls, fn = measure(tensors, numel, args.repeats, args.calls)
        print(
            f"adam, {tensors} tensors x {numel}: class {cls * 1e6:.0f} us, "
            f"functional {fn * 1e6:.0f} us, ratio {fn / cls:.2f}"
        )


if __name__ == "__main__":
    main()
