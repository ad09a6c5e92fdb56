"""Time one ``step()`` of Prodigy, SophiaG and Lookahead against the peers installed here.

Contenders (each skipped if its package is missing): optimist's ``Prodigy`` vs the authors'
``prodigyopt`` and ``pytorch_optimizer.Prodigy``; ``SophiaG`` vs the authors' ``sophia-opt``;
``Lookahead(Adam)`` vs ``pytorch_optimizer.Lookahead(torch.optim.Adam(fused=True))`` (the
minimum over steps is a step without synchronisation). Rounds are interleaved so that load from
other processes hits every contender alike; each figure is the minimum over ``--steps`` steps of
every round. The ``add_`` roofline (in-place ``a.add_(b)`` over 2^26 float32, 12 bytes per
element) is measured in the same rounds.

    python benchmarks/adaptive_speed.py --size 10M --threads 1
    python benchmarks/adaptive_speed.py --size tiny   # 1000 tensors of 100 elements: us/tensor
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimist.optim as oo  # noqa: E402
from step_speed import model_shapes  # noqa: E402


def contenders() -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    out: dict[str, Callable] = {"optimist Prodigy": lambda ps: oo.Prodigy(ps)}
    if importlib.util.find_spec("prodigyopt"):
        import prodigyopt

        out["prodigyopt Prodigy"] = lambda ps: prodigyopt.Prodigy(ps)
    have_po = importlib.util.find_spec("pytorch_optimizer") is not None
    if have_po:
        import pytorch_optimizer as po

        out["pytorch_optimizer Prodigy"] = lambda ps: po.Prodigy(ps)
    out["optimist SophiaG"] = lambda ps: oo.SophiaG(ps)
    if importlib.util.find_spec("sophia_opt"):
        import sophia_opt

        out["sophia-opt SophiaG"] = lambda ps: sophia_opt.SophiaG(ps)
    out["optimist Lookahead(Adam)"] = lambda ps: oo.Lookahead(oo.Adam(ps))
    if have_po:
        out["pytorch_optimizer Lookahead(torch Adam fused)"] = lambda ps: po.Lookahead(
            torch.optim.Adam(ps, fused=True)
        )
    out["optimist Adam (for scale)"] = lambda ps: oo.Adam(ps)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10M", help="10M, 50M, ... or tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tiny = args.size == "tiny"
    shapes = [(100,)] * 1000 if tiny else model_shapes(int(float(args.size.rstrip("M")) * 1e6))
    n = sum(math.prod(s) for s in shapes)

    def params() -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        ps = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        return ps

    table = contenders()
    best = dict.fromkeys(table, math.inf)
    a, b = torch.randn(2**26), torch.randn(2**26)
    roof = math.inf
    for _ in range(args.rounds):
        for name, make in table.items():
            ps = params()
            opt = make(ps)
            opt.step()  # state creation
            for _ in range(args.steps):
                start = time.perf_counter()
                opt.step()
                best[name] = min(best[name], time.perf_counter() - start)
            del opt, ps
            gc.collect()
        for _ in range(3):
            start = time.perf_counter()
            a.add_(b, alpha=1e-9)
            roof = min(roof, time.perf_counter() - start)
    print(
        f"{n / 1e6:.1f}M parameters in {len(shapes)} tensors, {args.threads} thread(s); "
        f"add_ roofline {12 * 2**26 / roof / 1e9:.1f} GB/s"
    )
    for name, seconds in best.items():
        figure = (
            f"{seconds * 1e6 / len(shapes):8.2f} us/tensor" if tiny else f"{seconds * 1e3:8.2f} ms"
        )
        print(f"{name:48s} {figure}")


if __name__ == "__main__":
    main()
