"""Time one optimizer ``step()`` on a CUDA device: optimist against torch.optim and the peers.

The rows, parameter sets and peers are ``step_speed.py``'s (:data:`step_speed.ROWS`): every
element-wise rule, Adafactor, Muon and SOAP, on model-shaped float32 parameters of about 10M and
50M elements (99 tensors) and on 1000 tiny tensors of 100 elements, created on the device.

Contenders per row: optimist's class with its default dispatch (the "via" column: on CUDA torch's
foreach kernel for the classic rules, the rule's torch ops once per bucket of small tensors for
the other element-wise rules and LAMB/LARS, Adafactor stacked by shape, per tensor for the rest;
see ``step_speed.dispatch``), and for LAMB, LARS, Prodigy and Adafactor the same class with
``foreach=False`` (the per-tensor path, "per tensor ms");
``torch.optim``'s ``foreach=True`` and ``fused=True`` where torch has the rule; and the peers of
the row that import here (``pytorch_optimizer``, ``heavyball`` eager, the authors' packages). A
peer that is not installed gets no number (listed under the table); one that fails on its first
step is reported on stderr and left out. torch's for-loop and heavyball's compiled steps are
not timed here (step_speed.py does that on the CPU).

Timing: a step is timed with CUDA events after a ``torch.cuda.synchronize()`` (so a step is
charged its launch time when the host is the bottleneck and its kernels' time when the GPU is);
every contender takes ``--steps`` steps per round, round after round (interleaved, so clock and
thermal changes hit all alike), after ``--warmup`` steps; the reported time is the median of
all timed steps (``--rounds`` x ``--steps``, 20 by default). The roofline is measured in the
same rounds: ``dst.copy_(src)`` over 2^26 float32 (8 bytes moved per element); a row's minimum
traffic (``Row.bytes`` per parameter and step) over its median time is its GB/s, and
"of copy" is that over the copy's GB/s. On the CPU (``--device cpu``) the same runs with
``time.perf_counter``.

    python benchmarks/cuda_speed.py                       # the GPU check: every row, 3 sizes
    python benchmarks/cuda_speed.py --optimizers adam,lion --sizes 10M --rounds 10
    python benchmarks/cuda_speed.py --device cpu --sizes 200K --optimizers adam,lion --budget 60
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_speed import (  # noqa: E402
    CLASSIC,
    COMPILED,
    DEFAULT_OPTIMIZERS,
    ROWS,
    Row,
    dispatch,
    param_set,
    print_table,
    start_peer,
)

ROWS_HERE = (*CLASSIC, *DEFAULT_OPTIMIZERS)
"""Every element-wise rule of step_speed.py, then Adafactor, Muon and SOAP."""
SKIPPED_PEERS = ("torch for-loop", *COMPILED)
"""Peers of step_speed.py's rows not timed here."""
PER_TENSOR_ROWS = ("lamb", "lars", "prodigy", "adafactor")
"""Rows also timed with ``foreach=False`` ("optimist per tensor"): their batched accelerator
paths against the per-tensor one they replaced (LAMB/LARS flat buckets, Adafactor stacks,
Prodigy's global pass with one host read)."""
PER_TENSOR = "optimist per tensor"
COPY_ELEMENTS = 2**26
COPY_BYTES_PER_ELEMENT = 8  # dst.copy_(src): read src, write dst


# --- parameters and contenders -------------------------------------------------------------------


def device_params(shapes, device: torch.device, seed: int = 0) -> list[torch.nn.Parameter]:
    """Parameters with gradients, drawn on ``device`` (no host-to-device copy of 50M values)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen, device=device))
        p.grad = torch.randn(shape, generator=gen, device=device) * 1e-3
        params.append(p)
    return params


def contenders(
    row: Row, shapes, device: torch.device
) -> tuple[dict[str, Callable[[], Any]], str, list[str]]:
    """``{label: step}`` (optimist first), optimist's dispatch, and the peers not installed.

    Each contender steps its own parameters; a peer that frees the gradients in ``step()``
    (heavyball) gets them back before each step (a pointer copy per tensor)."""
    import optimist.optim as oo

    cls = getattr(oo, row.optimist)
    opt = cls(device_params(shapes, device), **row.kwargs)
    fns: dict[str, Callable[[], Any]] = {"optimist": opt.step}
    if row.optimist.lower() in PER_TENSOR_ROWS:
        fns[PER_TENSOR] = cls(device_params(shapes, device), **row.kwargs, foreach=False).step
    absent = []
    for label, factory in row.peers.items():
        if label in SKIPPED_PEERS:
            continue
        if factory is None:
            absent.append(label)
            continue
        params = device_params(shapes, device)
        grads = [p.grad for p in params]
        try:
            _, step = start_peer(factory, params, _first_step, grads)
        except (RuntimeError, ValueError, TypeError, NotImplementedError, AssertionError) as exc:
            print(f"    {row.optimist} {label}: skipped ({type(exc).__name__}: {exc})".rstrip(),
                  file=sys.stderr)  # fmt: skip
            continue
        fns[label] = step
    return fns, dispatch(opt), absent


def _first_step(peer: Any, params, grads) -> Callable[[], Any]:
    """The peer's timed step (gradients put back where it freed them), run once."""
    step = _reattaching(peer.step, params, grads)
    step()
    return step


def _reattaching(step: Callable[[], Any], params, grads) -> Callable[[], Any]:
    def run() -> Any:
        for p, g in zip(params, grads, strict=True):
            if p.grad is None:
                p.grad = g
        return step()

    return run


def copy_fn(device: torch.device, n: int = COPY_ELEMENTS) -> Callable[[], Any]:
    src, dst = torch.randn(n, device=device), torch.empty(n, device=device)
    return lambda: dst.copy_(src)


# --- timing --------------------------------------------------------------------------------------


class Timer:
    """Times calls on ``device``: CUDA events after a synchronize, else ``time.perf_counter``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[str, Any, Any]] = []

    def time(self, label: str, fn: Callable[[], Any], out: dict[str, list[float]]) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            self.pending.append((label, start, end))
        else:
            t0 = time.perf_counter()
            fn()
            out.setdefault(label, []).append(time.perf_counter() - t0)

    def collect(self, out: dict[str, list[float]]) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            for label, start, end in self.pending:
                out.setdefault(label, []).append(start.elapsed_time(end) / 1e3)
            self.pending = []


def time_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, rounds: int, steps: int, warmup: int
) -> dict[str, float]:
    """Median seconds per call of each function, ``steps`` calls each per round, interleaved."""
    timer = Timer(device)
    samples: dict[str, list[float]] = {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in fns.values():
            for _ in range(warmup):
                fn()
        for _ in range(rounds):
            for label, fn in fns.items():
                for _ in range(steps):
                    timer.time(label, fn, samples)
            timer.collect(samples)
    return {label: statistics.median(values) for label, values in samples.items()}


# --- the run and the report ----------------------------------------------------------------------


def measure(
    args, device: torch.device, size: str, started: float
) -> tuple[list[dict[str, Any]], set[str], list[str]]:
    """Every row at ``size`` within the budget; the absent peers; what the budget left out."""
    copy = copy_fn(device, args.copy_elements)
    results, absent, left = [], set(), []
    for name in args.optimizers:
        if time.perf_counter() - started > args.budget:
            left.append(f"{name}@{size}")
            continue
        row = ROWS[name]
        shapes = param_set(size)
        if row.matrices_only:
            shapes = [s for s in shapes if len(s) >= 2]
        if not shapes:
            continue
        fns, via, missing = contenders(row, shapes, device)
        absent.update(missing)
        fns["copy"] = copy
        times = time_interleaved(fns, device, args.rounds, args.steps, args.warmup)
        del fns
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        nparams = sum(math.prod(s) for s in shapes)
        results.append(
            dict(optimizer=name, size=size, times=times, via=via, nparams=nparams,
                 ntensors=len(shapes))
        )  # fmt: skip
        print(
            f"  {name:20s} {size:>5s}: "
            + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in times.items())
            + f" (optimist via {via})",
            file=sys.stderr,
            flush=True,
        )
    return results, absent, left


def table(results: list[dict[str, Any]], copy_elements: int) -> tuple[list[str], list[list[str]]]:
    head = ["optimizer", "params/tensors", "optimist ms", "µs/tensor", "via", "torch.optim"]
    head += ["torch fused", "fastest other peer", "speedup", "GB/s", "of copy", "per tensor ms"]
    rows = []
    for r in results:
        t, row = r["times"], ROWS[r["optimizer"]]
        mine = t["optimist"]
        others = {k: v for k, v in t.items() if k not in ("optimist", "copy", PER_TENSOR)}
        rest = {k: v for k, v in others.items() if not k.startswith("torch ")}
        best_rest = min(rest, key=rest.__getitem__) if rest else None
        fastest = min(others.values()) if others else None
        copy_gbs = COPY_BYTES_PER_ELEMENT * copy_elements / t["copy"] / 1e9
        gbs = row.bytes * r["nparams"] / mine / 1e9 if row.bytes else None
        size = f"{r['nparams'] / 1e6:.1f}M/{r['ntensors']}"
        rows.append(
            [r["optimizer"], size, f"{mine * 1e3:.3f}", f"{mine * 1e6 / r['ntensors']:.2f}"]
            + [r["via"], _ms(t.get("torch foreach", t.get("torch"))), _ms(t.get("torch fused"))]
            + [f"{best_rest} {rest[best_rest] * 1e3:.3f}" if best_rest else "—"]
            + [f"{fastest / mine:.2f}×" if fastest else "—"]
            + [f"{gbs:.3g}" if gbs else "—", f"{gbs / copy_gbs:.2f}" if gbs else "—"]
            + [_ms(t.get(PER_TENSOR))]
        )
    return head, rows


def _ms(t: float | None) -> str:
    return "—" if t is None else f"{t * 1e3:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    ap.add_argument("--sizes", default="10M,50M,tiny", help="10M, 50M, tiny (1000x100), 200K...")
    ap.add_argument("--optimizers", default=",".join(ROWS_HERE), help=f"of {list(ROWS)}")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per contender and round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per contender first")
    ap.add_argument("--budget", type=float, default=180.0, help="seconds; later rows are left out")
    ap.add_argument("--copy-elements", type=int, default=COPY_ELEMENTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch.cuda.is_available() is False here (try --device cpu)")
    args.optimizers = [s.strip().lower() for s in args.optimizers.split(",") if s.strip()]
    unknown = [n for n in args.optimizers if n not in ROWS]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(ROWS)}")
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if min(args.rounds, args.steps) < 1 or args.warmup < 0:
        ap.error("--rounds and --steps must be >= 1, --warmup >= 0")

    import optimist

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# optimizer step on {name}\n\ntorch {torch.__version__}, optimist "
        f"{getattr(optimist, '__version__', '?')}; float32; median of {args.rounds} x "
        f"{args.steps} steps after {args.warmup} warm-up steps, contenders interleaved\n"
    )
    started = time.perf_counter()
    absent: set[str] = set()
    left: list[str] = []
    for size in args.sizes:  # each size's table as soon as it is measured
        results, missing, skipped = measure(args, device, size, started)
        absent |= missing
        left += skipped
        if not results:
            continue
        copies = [COPY_BYTES_PER_ELEMENT * args.copy_elements / r["times"]["copy"] / 1e9
                  for r in results]  # fmt: skip
        print(
            f"## {size}\n\ncopy roofline (dst.copy_(src), {args.copy_elements} float32, "
            f"8 B/element): {min(copies):.0f}..{max(copies):.0f} GB/s over the rows, median "
            f"{statistics.median(copies):.0f}\n"
        )
        print_table(*table(results, args.copy_elements), markdown=True)
        print(flush=True)
    print(
        "\n'GB/s': the rule's minimum traffic (step_speed.Row.bytes per parameter) over the "
        "median step; 'of copy': over the copy's GB/s; 'torch.optim': its foreach=True step "
        "(Muon: its only one); 'speedup': the fastest other contender's time over optimist's "
        "(> 1: optimist faster); 'per tensor ms': optimist with foreach=False (LAMB, LARS, "
        "Prodigy, Adafactor: the path their batched one replaced on accelerators)."
    )
    if absent:
        print(f"\nNot installed here, so not timed: {', '.join(sorted(absent))}.")
    if left:
        print(f"\nLeft out by the --budget of {args.budget:.0f} s: {', '.join(left)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
