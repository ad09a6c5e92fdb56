"""What a memory pass costs on this machine: per array read, per array written in place, per
array written elsewhere — and the floors that follow for the rules whose targets are ratios.

An optimizer step streams arrays that do not fit the caches. Counting bytes (every array read
plus every array written, as ``step_speed.py``'s roofline does) assumes a write costs what a
read costs. This script measures the primitive passes, in-place ``add_`` and friends, over
float32 arrays of ``--elements`` values, interleaved round after round (minimum of
``--repeats``), and prints:

* each pass in ns per element, per array read, and against a model that adds up its arrays
  at three costs measured here: an array read (``sum(a)``: torch's sum runs on every thread,
  its ``dot``, a BLAS call, on one), a write in place (the line was just read: ``add_`` less
  two reads) and a write to another array (``torch.add(out=)`` less two reads);
* the floors that follow for issue 8's and 12's ratio targets (:func:`floors`): the clipped
  chain reads g once more than AdamW (the one-pass Adam step plus one ``sum``), and
  Schedule-Free SGD reads y, z, g and writes y, z where the ``schedulefree`` package's foreach
  step makes three in-place passes of two arrays (lerp y to z, add g to y, subtract g from z).
  With 1 thread a write in place costs almost nothing, so time follows the arrays read (chain
  floor about 5/4, SF-SGD ceiling about 6/3); with 2 threads writes cost more and the two move
  apart.

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
    # one pass that reads four arrays and writes three in place: torch's fused Adam kernel
    "Adam step (torch fused)": (4, 3, 0, lambda t: _fused_adam(t)),
}
ARRAYS = 4  # a, b, c and d (the Adam pass's v: non-negative)


_ADAM_STEP = torch.tensor(10.0)  # the step count the Adam pass reads (it does not advance it)


def _fused_adam(t: list[torch.Tensor]) -> None:
    torch._fused_adam_(
        [t[0]], [t[1]], [t[2]], [t[3]], [], [_ADAM_STEP], lr=1e-9, beta1=0.9, beta2=0.999,
        weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
    )  # fmt: skip


def measure(elements: int, repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Minimum seconds of each pass over ARRAYS float32 arrays, interleaved round-robin."""
    arrays = [torch.randn(elements) for _ in range(ARRAYS - 1)] + [torch.rand(elements)]
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
    # the read-only pass of one array (torch's sum runs on every thread; its dot, a BLAS call,
    # on one only)
    read = ns["sum(a)"]
    return {
        "read": read,
        "in_place_write": (ns["a.add_(b)"] - 2 * read) / read,
        "other_write": (ns["torch.add(a, b, out=c)"] - 2 * read) / read,
    }


def floors(best: dict[str, float], elements: int) -> tuple[float, float]:
    """The chain's floor over AdamW and Schedule-Free SGD's ceiling over ``schedulefree``, from
    the passes measured: AdamW is the one-pass Adam step (p, g, m, v read, p, m, v written in
    place) and the clipped chain adds one read of g (``sum(a)``); ``schedulefree``'s foreach
    step is three in-place passes of two arrays (3 ``add_``), the rule one pass reading y, z and
    g and writing y and z in place (``addcmul_``, 3 read and 1 written, plus one more write in
    place at its measured cost)."""
    ns = {k: v / elements * 1e9 for k, v in best.items()}
    costs = analyse(best, elements)
    adam = ns["Adam step (torch fused)"]
    rule = ns["a.addcmul_(b, c)"] + costs["in_place_write"] * costs["read"]
    return (adam + ns["sum(a)"]) / adam, 3 * ns["a.add_(b)"] / rule


def model_ns(name: str, costs: dict[str, float]) -> float:
    """ns per element that the three costs of :func:`analyse` predict for a pass."""
    reads, in_place, elsewhere, _ = PASSES[name]
    return costs["read"] * (
        reads + in_place * costs["in_place_write"] + elsewhere * costs["other_write"]
    )


def table(best: dict[str, float], elements: int) -> str:
    ns = {k: v / elements * 1e9 for k, v in best.items()}
    a = analyse(best, elements)
    chain, sf = floors(best, elements)
    out = [
        "pass                     reads  in place  elsewhere  ns/element  ns per array read"
        "  measured / model"
    ]
    for name, (reads, in_place, elsewhere, _) in PASSES.items():
        per_read = f"{ns[name] / reads:17.3f}" if reads else f"{'—':>17}"
        fit = ns[name] / model_ns(name, a)
        out.append(
            f"{name:24} {reads:5} {in_place:9} {elsewhere:10} {ns[name]:11.3f} {per_read}"
            f" {fit:17.2f}"
        )
    out += [
        "",
        f"one array read (sum): {a['read']:.3f} ns per element",
        f"a write in place (add_ - 2 reads): {a['in_place_write']:.2f} of a read",
        f"a write to another array (add out= - 2 reads): {a['other_write']:.2f} of a read",
        "model: each pass's time from these three costs (measured / model > 1: the pass is "
        "slower than its reads and writes alone explain)",
        f"from the passes: the chain's floor is {chain:.3f}x AdamW (target 1.2x); "
        f"Schedule-Free SGD's ceiling is {sf:.2f}x schedulefree (target 2x)",
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
