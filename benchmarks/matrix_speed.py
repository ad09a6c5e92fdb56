"""Step time of the matrix optimizers (Muon, Adafactor, SOAP) against their peers.

Rows (float32 weight matrices of a transformer-like block stack, the same gradients for every
contender, all contenders of a row timed in the same run, interleaved round by round; one
timed call is ``--chunk`` steps, 10 by default, so SOAP's eigenbasis refresh every 10 steps is
inside every sample; the mean over all samples is reported, per step; ratio = peer / optimist,
> 1: optimist is faster). The mean, not the fastest sample: heavyball refreshes SOAP's
eigenbasis when a running sum of ``1 / precondition_frequency`` crosses an integer, which in
floating point drifts against the 10-step samples, so some of its samples hold no refresh and
its fastest sample is a step without one; over all samples every contender refreshes once
per 10 steps, give or take one.

* ``Muon``: ``optimist.optim.Muon`` (Newton-Schulz batched over same-shape weights) vs
  ``torch.optim.Muon`` (one matrix at a time);
* ``Adafactor``: ``optimist.optim.Adafactor`` vs ``torch.optim.Adafactor``;
* ``SOAP``: ``optimist.optim.SOAP`` vs ``pytorch_optimizer.SOAP`` and ``heavyball.SOAP`` in
  eager mode (``heavyball.utils.compile_mode = None``; its default compiles every step
  function first), all at precondition_frequency 10 and no dimension merging.

``--compile`` also times ``torch.compile`` of the batched Newton-Schulz: its compile time, its
step time against eager, and the steps it needs to pay back the compile.

    python benchmarks/matrix_speed.py --threads 1
    python benchmarks/matrix_speed.py --size medium --repeats 5 --compile --markdown
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import optimist.optim as oo  # noqa: E402
from optimist.optim.muon import newton_schulz  # noqa: E402
from step_speed import print_table, time_interleaved  # noqa: E402

# A block of a transformer: attention (4 square), MLP (up and down); ``blocks`` of them.
SIZES = {"tiny": (64, 16), "small": (256, 4), "medium": (512, 6)}


def shapes(size: str) -> list[tuple[int, int]]:
    width, blocks = SIZES[size]
    block = [(width, width)] * 4 + [(4 * width, width), (width, 4 * width)]
    return block * blocks


def make_params(shape_list, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).mul_(0.02).requires_grad_() for s in shape_list]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def contenders(row: str, shape_list) -> dict[str, Callable[[], None]]:
    """The optimizers of a row, each on its own copy of the parameters (same values)."""
    builders: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {}
    if row == "Muon":
        builders["optimist"] = lambda ps: oo.Muon(ps)
        builders["torch.optim"] = lambda ps: torch.optim.Muon(ps)
    elif row == "Adafactor":
        builders["optimist"] = lambda ps: oo.Adafactor(ps)
        builders["torch.optim"] = lambda ps: torch.optim.Adafactor(ps)
    else:
        builders["optimist"] = lambda ps: oo.SOAP(ps)
        if importlib.util.find_spec("pytorch_optimizer"):
            import pytorch_optimizer

            builders["pytorch_optimizer"] = lambda ps: pytorch_optimizer.SOAP(ps)
        if importlib.util.find_spec("heavyball"):
            import heavyball
            import heavyball.utils

            heavyball.utils.compile_mode = None  # eager

            builders["heavyball (eager)"] = lambda ps: heavyball.SOAP(
                ps, precondition_frequency=10, max_precond_dim=10000, merge_dims=False
            )
    out = {}
    for name, build in builders.items():
        params = make_params(shape_list)
        grads = [p.grad.clone() for p in params]
        opt = build(params)

        def step(opt=opt, params=params, grads=grads) -> None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g  # some peers clear or modify .grad
            opt.step()

        out[name] = step
    return out


def chunked(fn: Callable[[], None], chunk: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(chunk):
            fn()

    return run


def compile_row(shape_list, repeats: int) -> list[str]:
    """torch.compile of the batched Newton-Schulz on the largest same-shape batch."""
    from collections import Counter

    shape, count = Counter(shape_list).most_common(1)[0]
    batch = torch.randn(count, *shape)
    args = ((3.4445, -4.775, 2.0315), 5, 1e-7)
    compiled = torch.compile(newton_schulz, dynamic=False)
    t0 = time.perf_counter()
    compiled(batch, *args)
    compile_s = time.perf_counter() - t0
    times = time_interleaved(
        {"eager": lambda: newton_schulz(batch, *args), "compiled": lambda: compiled(batch, *args)},
        repeats,
    )
    saved = times["eager"] - times["compiled"]
    payback = f"{compile_s / saved:.0f} steps" if saved > 0 else "never (not faster)"
    return [
        f"NS {count}x{shape[0]}x{shape[1]}",
        f"{times['eager'] * 1e3:.2f} ms eager",
        f"{times['compiled'] * 1e3:.2f} ms compiled",
        f"compile {compile_s:.1f} s",
        f"pays back after {payback}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--rows", default="Muon,Adafactor,SOAP")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per contender")
    ap.add_argument("--chunk", type=int, default=10, help="steps per timed call")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of NS")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape_list = shapes(args.size)
    n = sum(a * b for a, b in shape_list)
    print(
        f"{len(shape_list)} matrices, {n / 1e6:.1f}M parameters, {args.threads} thread(s), "
        f"mean of {args.repeats} calls of {args.chunk} steps, ms per step"
    )
    rows = []
    for row in args.rows.split(","):
        fns = contenders(row, shape_list)
        samples: dict[str, list[float]] = {}
        time_interleaved(
            {k: chunked(f, args.chunk) for k, f in fns.items()}, args.repeats, rounds=samples
        )
        times = {k: statistics.fmean(v) for k, v in samples.items()}
        ours = times.pop("optimist") / args.chunk
        for peer, t in times.items():
            t /= args.chunk
            rows.append([row, peer, f"{ours * 1e3:.1f}", f"{t * 1e3:.1f}", f"{t / ours:.2f}x"])
    print_table(
        ["optimizer", "peer", "optimist ms", "peer ms", "peer/optimist"], rows, args.markdown
    )
    if args.compile:
        print()
        print("  ".join(compile_row(shape_list, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
