"""What a memory pass costs on this machine: per array read, per array written in place, per
array written elsewhere — and the floors that follow for the rules whose targets are ratios.

An optimizer step streams arrays that do not fit the caches. Counting bytes (every array read
plus every array written, as ``step_speed.py``'s roofline does) assumes a write costs what a
read costs. This script measures the primitive passes, in-place ``add_`` and friends, over
float32 arrays of ``--elements`` values, interleaved round after round (minimum of
``--repeats``), and prints:

* each pass in ns per element and ns per array read;
* the cost of a write in place (the line was just read: ``add_`` against ``dot``) and of a write
  to another array (``torch.add(out=)`` against ``add_``), as a share of one array read;
* the floors this gives for issue 8's and 12's ratio targets, if time is proportional to the
  arrays read: AdamW reads p, g, m, v (4), the clipped chain reads g once more (5), so the
  chain's floor is 5/4 of AdamW; Schedule-Free SGD reads y, z, g (3) while the ``schedulefree``
  package's foreach step makes three in-place passes of two arrays each (lerp y to z, add g to
  y, subtract g from z: 6), so 2x is its ceiling.

    python benchmarks/memory_streams.py                  # 1 thread, thread clock
    python benchmarks/memory_streams.py --threads 2      # wall clock
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch

# name: (arrays read, arrays written in place, arrays written elsewhere, the pass)
Pass = tuple[int, int, int, Callable[[list[torch.Tensor]], object]]
PASSES: dict[str, Pass] = {
    "sum(a)": (1, 0, 0, lambda t: t[0].sum()),
    "a.fill_(1)": (0, 0, 1, lambda t: t[0].fill_(1.0)),
    "a.copy_(b)": (1, 0, 1, lambda t: t[0].copy_(t[1])),
    "a.dot(b)": (2, 0, 0, lambda t: t[0].dot(t[1])),
    "a.add_(b)": (2, 1, 0, lambda t: t[0].add_(t[1], alpha=1e-9)),
    "torch.add(a, b, out=c)": (2, 0, 1, lambda t: torch.add(t[0], t[1], out=t[2])),
    "a.addcmul_(b, c)": (3, 1, 0, lambda t: t[0].addcmul_(t[1], t[2], value=1e-9)),
}


def measure(elements: int, repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Minimum seconds of each pass over three float32 arrays, interleaved round-robin."""
    arrays = [torch.randn(elements) for _ in range(3)]
    best = dict.fromkeys(PASSES, math.inf)
    with torch.no_grad():
        for _, _, _, run in PASSES.values():  # warm-up: pages touched, kernels loaded
            run(arrays)
        for _ in range(repeats):
            for name, (_, _, _, run) in PASSES.items():
                t0 = clock()
                run(arrays)
                best[name] = min(best[name], clock() - t0)
    return best


def analyse(best: dict[str, float], elements: int) -> dict[str, float]:
    """ns per element of one array read; a write in place and one elsewhere, in reads."""
    ns = {k: v / elements * 1e9 for k, v in best.items()}
    read = ns["a.dot(b)"] / 2  # the read-only pass of two arrays, per array
    return {
        "read": read,
        "in_place_write": (ns["a.add_(b)"] - ns["a.dot(b)"]) / read,
        "other_write": (ns["torch.add(a, b, out=c)"] - ns["a.dot(b)"]) / read,
    }


def table(best: dict[str, float], elements: int) -> str:
    ns = {k: v / elements * 1e9 for k, v in best.items()}
    out = ["pass                     reads  in place  elsewhere  ns/element  ns per array read"]
    for name, (reads, in_place, elsewhere, _) in PASSES.items():
        per_read = f"{ns[name] / reads:17.3f}" if reads else f"{'—':>17}"
        out.append(f"{name:24} {reads:5} {in_place:9} {elsewhere:10} {ns[name]:11.3f} {per_read}")
    a = analyse(best, elements)
    out += [
        "",
        f"one array read: {a['read']:.3f} ns per element",
        f"a write in place (add_ - dot): {a['in_place_write']:.2f} of a read",
        f"a write to another array (add out= - dot): {a['other_write']:.2f} of a read",
        "if time ~ arrays read: the chain's floor is 5/4 = 1.25x AdamW (target 1.2x); "
        "Schedule-Free SGD's ceiling is 6/3 = 2.0x schedulefree (target 2x)",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=int, default=2**25, help="float32 values per array")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    best = measure(args.elements, args.repeats, clock)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.elements} float32 per array "
        f"({args.elements * 4 / 2**20:.0f} MiB), minimum of {args.repeats} interleaved rounds, "
        f"{'thread' if args.threads == 1 else 'wall'} clock\n"
    )
    print(table(best, args.elements))


if __name__ == "__main__":
    main()
