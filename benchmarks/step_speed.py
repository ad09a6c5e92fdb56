"""Time one optimizer ``step()``: torch.optim (for-loop, foreach, fused) vs optimist's fast path.

Parameter sets (float32):

* ``10M`` / ``50M``: about 10M / 50M parameters in 99 model-shaped tensors (8 transformer-like
  blocks of 4 matrices + 8 vectors each, an embedding matrix and a final norm);
* ``tiny``: 1000 tensors of 100 elements each (per-tensor overhead).

Contenders, all timed in the same run and interleaved round by round (so that load from other
processes hits them alike): torch.optim with ``foreach=False`` ("for-loop"), ``foreach=True``
and ``fused=True`` (where torch has it: SGD, Adam, AdamW, Adagrad), and optimist: the class
``optimist.optim.<Name>`` with its default path (the C++ engine on CPU).

The roofline is measured in the same run, interleaved with every large-size row so that it
sees the same machine load: in-place ``a.add_(b, alpha=s)`` over 2^26 float32 (12 bytes
moved per element). Each optimizer's minimum traffic (bytes read + written per parameter:
SGD-momentum, Adagrad, RMSprop 20; Adadelta, Adam(W), Adamax, NAdam, RAdam 28) over its time
gives its GB/s; "of roofline" is that over the ``add_`` GB/s.

    python benchmarks/step_speed.py --threads 2
    python benchmarks/step_speed.py --sizes 50M --optimizers adam,adamw --repeats 9 --markdown
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

# name -> (torch class, torch kwargs, min bytes per param, torch has fused=True on CPU)
OPTIMIZERS: dict[str, tuple[str, dict, int, bool]] = {
    "sgd": ("SGD", {"lr": 0.01, "momentum": 0.9}, 20, True),
    "adagrad": ("Adagrad", {"lr": 0.01}, 20, True),
    "rmsprop": ("RMSprop", {"lr": 0.01}, 20, False),
    "adadelta": ("Adadelta", {"lr": 1.0}, 28, False),
    "adam": ("Adam", {"lr": 1e-3}, 28, True),
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, 28, True),
    "adamax": ("Adamax", {"lr": 2e-3}, 28, False),
    "nadam": ("NAdam", {"lr": 2e-3}, 28, False),
    "radam": ("RAdam", {"lr": 1e-3}, 28, False),
}
CONTENDERS = ("for-loop", "foreach", "fused", "optimist")
TORCH_CONTENDERS = ("for-loop", "foreach", "fused")


# ----------------------------------------------------------------------------------------
# Parameter sets


def model_shapes(total: int) -> list[tuple[int, ...]]:
    """99 model-shaped tensors with about ``total`` elements: 8 blocks of (qkv, out, fc1,
    fc2 matrices + 8 bias/norm vectors), an embedding matrix and a final norm."""
    blocks = 8
    d = max(64, round(math.sqrt(0.8 * total / (12 * blocks)) / 64) * 64)
    shapes: list[tuple[int, ...]] = []
    for _ in range(blocks):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        shapes += [(d,), (d,), (d,), (d,)]  # two layer norms (weight, bias)
    shapes += [(d,), (d,)]
    used = sum(math.prod(s) for s in shapes)
    shapes.insert(0, (max(1, (total - used) // d), d))  # embedding takes the rest
    return shapes


def param_set(size: str) -> list[tuple[int, ...]]:
    if size == "tiny":
        return [(100,)] * 1000
    scale = {"K": 10**3, "M": 10**6}
    if size[-1].upper() in scale:
        return model_shapes(int(float(size[:-1]) * scale[size[-1].upper()]))
    return model_shapes(int(size))


def make_params(shapes, seed=0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen))
        p.grad = torch.randn(shape, generator=gen) * 1e-3
        params.append(p)
    return params


# ----------------------------------------------------------------------------------------
# Contenders: each is a zero-argument callable doing one step, or None if unavailable.


def make_contenders(name: str, params) -> tuple[dict[str, Callable[[], None] | None], str]:
    torch_name, kwargs, _, has_fused = OPTIMIZERS[name]
    cls = getattr(torch.optim, torch_name)
    out: dict[str, Callable[[], None] | None] = {
        "for-loop": cls(params, foreach=False, **kwargs).step,
        "foreach": cls(params, foreach=True, **kwargs).step,
        "fused": None,
    }
    if has_fused:
        try:
            opt = cls(params, fused=True, **kwargs)
            opt.step()  # fails here if this torch has no CPU kernel for it
            out["fused"] = opt.step
        except (RuntimeError, ValueError, TypeError):
            out["fused"] = None
    import optimist.optim as oo

    out["optimist"] = getattr(oo, torch_name)(params, **kwargs).step
    via = "class"
    return out, via


# ----------------------------------------------------------------------------------------
# Timing


def time_interleaved(fns: dict[str, Callable[[], None]], repeats: int, warmup: int = 2):
    """Median seconds per call of each function, measured round-robin."""
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(repeats):
            for key, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                samples[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


ROOF_N = 2**26
ROOF_BYTES = 12 * ROOF_N  # a.add_(b): read a and b, write a


def roofline_fn() -> Callable[[], None]:
    a, b = torch.randn(ROOF_N), torch.randn(ROOF_N)
    return lambda: a.add_(b, alpha=1e-9)


# ----------------------------------------------------------------------------------------
# Report


def fmt_ms(t: float | None) -> str:
    return "—" if t is None else f"{t * 1e3:.1f}"


def fmt_us(t: float | None, count: int) -> str:
    return "—" if t is None else f"{t * 1e6 / count:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10M,50M,tiny")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--markdown", action="store_true", help="print README-ready tables")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [s.strip().lower() for s in args.optimizers.split(",") if s.strip()]
    unknown = [n for n in names if n not in OPTIMIZERS]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(OPTIMIZERS)}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    repeats = max(args.repeats, 1)

    from optimist.optim import engine

    if not engine.available():
        print("note: optimist's C++ engine is unavailable; optimist numbers use its eager path")
    else:
        engine.load()  # build outside any timed region

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {repeats}")
    # The roofline is timed inside every big-size row, interleaved with the optimizers, so
    # that it sees the same machine load as they do.
    roof = roofline_fn() if any(s != "tiny" for s in sizes) else None

    big_rows, tiny_rows = [], []
    for size in sizes:
        shapes = param_set(size)
        nparams = sum(math.prod(s) for s in shapes)
        for name in names:
            params = make_params(shapes)
            fns, via = make_contenders(name, params)
            avail = {k: f for k, f in fns.items() if f is not None}
            if size != "tiny":
                avail["roofline"] = roof
            times: dict[str, float | None] = dict.fromkeys(CONTENDERS)
            times.update(time_interleaved(avail, repeats))
            del fns, avail, params
            gc.collect()
            torch_best = min(times[k] for k in TORCH_CONTENDERS if times[k] is not None)
            row = {"optimizer": name, "size": size, "nparams": nparams, "ntensors": len(shapes)}
            row.update(times=times, via=via, torch_best=torch_best)
            (tiny_rows if size == "tiny" else big_rows).append(row)
            print(
                f"  {name:8s} {size:>5s}: "
                + ", ".join(f"{k} {fmt_ms(times[k])} ms" for k in CONTENDERS)
                + f" (optimist via {via})",
                file=sys.stderr,
                flush=True,
            )
    if big_rows:
        roofs = [ROOF_BYTES / r["times"]["roofline"] / 1e9 for r in big_rows]
        print(
            f"roofline (a.add_(b) over 2^26 float32, 12 B/element), per row: "
            f"{min(roofs):.1f}..{max(roofs):.1f} GB/s, median {statistics.median(roofs):.1f}\n"
        )

    if big_rows:
        head = ["optimizer", "params/tensors", *(f"{k} ms" for k in CONTENDERS), "optimist via"]
        head += ["roofline GB/s", "optimist GB/s", "optimist/torch-best", "of roofline"]
        rows = []
        for r in big_rows:
            t = r["times"]
            traffic = OPTIMIZERS[r["optimizer"]][2] * r["nparams"]
            gbs = traffic / t["optimist"] / 1e9
            roof_gbs = ROOF_BYTES / t["roofline"] / 1e9
            rows.append(
                [r["optimizer"], f"{r['nparams'] / 1e6:.1f}M/{r['ntensors']}"]
                + [fmt_ms(t[k]) for k in CONTENDERS]
                + [r["via"], f"{roof_gbs:.1f}", f"{gbs:.1f}"]
                + [f"{t['optimist'] / r['torch_best']:.2f}"]
                + [f"{gbs / roof_gbs:.2f}"]
            )
        print_table(head, rows, args.markdown)
        print()
    if tiny_rows:
        head = ["optimizer", "tensors", *(f"{k} µs/tensor" for k in CONTENDERS)]
        head += ["optimist via", "optimist/torch-best"]
        rows = []
        for r in tiny_rows:
            t, n = r["times"], r["ntensors"]
            rows.append(
                [r["optimizer"], f"{n}×100"]
                + [fmt_us(t[k], n) for k in CONTENDERS]
                + [r["via"], f"{t['optimist'] / r['torch_best']:.2f}"]
            )
        print_table(head, rows, args.markdown)
    return 0


def print_table(head: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(
        "  ".join(
            h.ljust(w) if i < 2 else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    sys.exit(main())
