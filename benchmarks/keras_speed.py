"""Is one optimizer step faster in optimist than in Keras 3? Every Keras optimizer, by name.

For each Keras 3 optimizer (:data:`KERAS_OPTIMIZERS`, Keras' class names, each made with Keras'
defaults on both sides, ``keras.optimizers.Lion()`` and ``optimist.optimizers.Lion()``), one
update step on the same float32 values and the same fixed gradients:

* Keras 3 on its torch backend (``KERAS_BACKEND=torch``, set before Keras is imported; on the
  CPU, ``KERAS_TORCH_DEVICE=cpu`` unless set): ``keras.Variable`` of the shapes,
  ``optimizer.build(variables)``, then ``optimizer.apply(grads, variables)`` under
  ``torch.no_grad()`` with torch tensors as gradients. The "Keras runs" column says whether
  Keras' torch backend has a ``torch._foreach`` implementation of the rule ("torch foreach":
  SGD, RMSprop, Adam, AdamW, Adagrad, Adadelta, Adamax, Nadam, Lion) or runs its generic
  ``update_step`` once per variable ("per variable");
* optimist: ``optimist.optimizers.<Name>().build(params, names)`` on torch parameters
  (names ``dense_<i>.weight`` / ``dense_<i>.bias``, so Muon sends the matrices to its Muon
  branch and the vectors to AdamW, as Keras' Muon does by rank), gradients set once on
  ``.grad``, then the built optimizer's ``step()`` (the whole Keras surface: the hooks of
  :mod:`optimist.training.optimizer_base`, then the ``optimist.optim`` step; "via" is its
  dispatch as ``step_speed.py`` reports it).

Shape sets (``--shapes``, each a preset or a spec such as ``12*1024x1024,12*1024``):

* ``transformer``: 12 matrices 1024x1024 and 12 vectors of 1024 (12.6M parameters);
* ``tiny``: 100 matrices 64x64 and 100 vectors of 64 (200 tensors, 0.4M parameters), where
  the cost per tensor and per call dominates.

Timing (the project's method, ``step_speed.time_interleaved``): two warm-up steps of each side
(first calls allocate the state; Keras traces nothing on torch), then ``--repeats`` rounds in
which Keras and optimist each step once, one after the other, so load from other processes
hits both alike. Reported: the **minimum** over the rounds, per step, of the wall clock or,
with ``--clock thread``, of the calling thread's CPU time (needs ``--threads 1``), and the
ratio Keras / optimist of the two minima (> 1: optimist's step is faster). Muon's
Newton-Schulz on 1024x1024 matrices takes seconds per step on one thread, on both sides.

The allocator (``--malloc``): torch takes a CPU tensor's memory from ``malloc`` and gives it
back on ``free``. glibc's ``malloc`` returns freed memory at the top of its heap to the system
once more than ``M_TRIM_THRESHOLD`` is free, and maps large blocks fresh (``mmap``) above
``M_MMAP_THRESHOLD``; both thresholds move with the process' history. A step that makes
temporaries of a few MiB (Keras' rules: several per variable) then pays a page fault per 4 KiB
of each one, every step, or not, depending on what ran before in the process. On the
``transformer`` set, one thread, thread clock (``--optimizers adam,adafactor,lion
--repeats 3``), Keras' Adam took 103 ms a step with ``--malloc glibc`` (49090 page faults a
step) and 28.0 ms with ``--malloc keep`` (none); its Adafactor 38.7 ms in that run and 166 to
171 ms in runs of ``--optimizers adafactor`` or ``adafactor,adam`` (glibc as it comes).
optimist's engine makes no temporaries of that size (its Adam: 6.0 ms either way); its Muon
does (the Newton-Schulz iterates of all 12 matrices batched, 48 MiB each: above the mmap
threshold, so page faults every step even with ``keep``).
So by default (``--malloc keep``) the benchmark sets glibc's ``M_TRIM_THRESHOLD`` to 2 GiB and
``M_MMAP_THRESHOLD`` to its maximum, 32 MiB (``mallopt``, before anything is timed): freed
memory stays with the process and is reused, as PyTorch's caching allocator does on a GPU and
jemalloc or tcmalloc do; the times are the steps' own work, reproducible, and (Keras' rules
make more temporaries) in Keras' favour. ``--malloc glibc`` leaves glibc as it comes. The
"page faults" column counts the minor page faults of one more step of each side (this
thread's, after the timed rounds).

    python benchmarks/keras_speed.py --threads 1 --clock thread --repeats 7 --markdown
    python benchmarks/keras_speed.py --shapes tiny --optimizers adam,lion,muon --repeats 3
    python benchmarks/keras_speed.py --shapes "4*4096x1024,4*1024x4096,8*1024" --threads 1,2
    python benchmarks/keras_speed.py --threads 1 --clock thread --malloc glibc --markdown
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_speed import (  # noqa: E402
    CLOCKS,
    dispatch,
    make_params,
    print_table,
    time_interleaved,
)

KERAS_OPTIMIZERS = (
    "SGD",
    "RMSprop",
    "Adam",
    "AdamW",
    "Adagrad",
    "Adadelta",
    "Adamax",
    "Nadam",
    "Adafactor",
    "Ftrl",
    "Lion",
    "Lamb",
    "Muon",
    "ScheduleFreeAdamW",
)
"""Keras 3's optimizers (class names); ``--optimizers`` takes them by Keras' lowercased names."""
BY_NAME = {name.lower(): name for name in KERAS_OPTIMIZERS}

PRESETS = {
    "transformer": "12*1024x1024,12*1024",
    "tiny": "100*64x64,100*64",
}
"""Shape sets by name, as ``--shapes`` specs."""


def parse_shapes(spec: str) -> list[tuple[int, ...]]:
    """A preset's or a spec's shapes: ``"12*1024x1024,12*1024"`` is 12 matrices of 1024x1024 and
    12 vectors of 1024, interleaved (a matrix, then a vector: the layers of a model)."""
    spec = PRESETS.get(spec, spec)
    groups: list[list[tuple[int, ...]]] = []
    for item in spec.split(","):
        count, _, dims = item.strip().rpartition("*")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
            n = int(count) if count else 1
        except ValueError:
            raise ValueError(f"bad shape {item!r}: write COUNT*AxB, e.g. 12*1024x1024") from None
        if n < 1 or any(d < 1 for d in shape):
            raise ValueError(f"bad shape {item!r}: counts and sizes must be positive")
        groups.append([shape] * n)
    # interleave the groups: layer i holds the i-th tensor of each group
    return [g[i] for i in range(max(map(len, groups))) for g in groups if i < len(g)]


def param_names(shapes: list[tuple[int, ...]]) -> list[str]:
    """``dense_<i>.weight`` for matrices, ``dense_<i>.bias`` for the others: a layer per matrix."""
    names, layer = [], -1
    for shape in shapes:
        if len(shape) >= 2 or layer < 0:
            layer += 1
        names.append(f"dense_{layer}.{'weight' if len(shape) >= 2 else 'bias'}")
    return names


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring); False
    where this is not glibc (the allocator is then left as it is)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) and bool(
        mallopt(M_MMAP_THRESHOLD, 32 * 2**20)  # glibc's largest on 64-bit systems
    )


def page_faults(fn: Callable[[], Any]) -> int:
    """Minor page faults of one ``fn()`` (this thread's where the system counts them apart)."""
    who = getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)
    with torch.no_grad():
        before = resource.getrusage(who).ru_minflt
        fn()
        return resource.getrusage(who).ru_minflt - before


def import_keras() -> Any:
    """Keras 3 on its torch backend, on the CPU (as optimist's parameters here)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("KERAS_TORCH_DEVICE", "cpu")
    import keras

    if keras.backend.backend() != "torch":
        raise SystemExit(f"Keras runs on {keras.backend.backend()!r}: set KERAS_BACKEND=torch")
    return keras


def keras_contender(
    keras: Any, name: str, params: list[torch.nn.Parameter], names: list[str]
) -> tuple[Callable[[], None], str, list[torch.Tensor]]:
    """Keras' ``apply`` of ``name`` (defaults) on Keras variables holding ``params``' values, with
    their gradients (copies); how Keras runs the rule; the variables' torch tensors."""
    variables = [
        keras.Variable(p.detach().clone(), name=n) for p, n in zip(params, names, strict=True)
    ]
    device = variables[0].value.device
    if device != params[0].device:  # KERAS_TORCH_DEVICE was set before Keras was imported
        raise SystemExit(f"Keras' variables are on {device}, optimist's on the CPU")
    grads = [p.grad.detach().clone() for p in params]
    optimizer = getattr(keras.optimizers, name)()
    optimizer.build(variables)
    foreach = type(optimizer).__module__.startswith("keras.src.backend.torch.optimizers")
    runs = "torch foreach" if foreach else "per variable"
    return (lambda: optimizer.apply(grads, variables)), runs, [v.value for v in variables]


def optimist_contender(
    name: str, params: list[torch.nn.Parameter], names: list[str]
) -> tuple[Callable[[], Any], str]:
    """optimist's Keras-style ``name`` (defaults) built on ``params`` (their ``.grad`` set): its
    ``step`` and its dispatch."""
    from optimist import optimizers

    opt = getattr(optimizers, name)().build(params, names)
    return opt.step, dispatch(opt)


def measure(
    keras: Any, names: list[str], shape_sets: list[str], threads: int, repeats: int, clock: str
) -> list[dict[str, Any]]:
    """One result per shape set and optimizer: both sides' minimum seconds per step."""
    torch.set_num_threads(threads)
    results = []
    for spec in shape_sets:
        shapes = parse_shapes(spec)
        tensor_names = param_names(shapes)
        for name in names:
            params = make_params(shapes)
            keras_step, keras_runs, _ = keras_contender(keras, name, params, tensor_names)
            optimist_step, via = optimist_contender(name, params, tensor_names)
            times = time_interleaved(
                {"keras": keras_step, "optimist": optimist_step}, repeats, clock=CLOCKS[clock]
            )
            faults = {"keras": page_faults(keras_step), "optimist": page_faults(optimist_step)}
            del keras_step, optimist_step, params
            gc.collect()
            results.append(
                {"optimizer": name, "shapes": spec, "ntensors": len(shapes), "threads": threads}
                | {"nparams": sum(math.prod(s) for s in shapes), "times": times}
                | {"keras_runs": keras_runs, "via": via, "faults": faults}
            )
            print(
                f"  {threads} thr {name:17s} {spec}: Keras {fmt_ms(times['keras'])} ms, "
                f"optimist {fmt_ms(times['optimist'])} ms",
                file=sys.stderr,
                flush=True,
            )
    return results


def fmt_ms(seconds: float) -> str:
    """Milliseconds to three significant digits or more (a tiny step takes well under 1 ms)."""
    ms = seconds * 1e3
    return f"{ms:.{0 if ms >= 100 else 1 if ms >= 10 else 2 if ms >= 1 else 3}f}"


HEAD = ["optimizer", "shapes", "params/tensors", "threads", "Keras ms", "optimist ms"]
HEAD += ["Keras/optimist", "page faults Keras/optimist", "Keras runs", "optimist via"]


def table(results: list[dict[str, Any]]) -> list[list[str]]:
    """A row per result, the columns of :data:`HEAD`."""
    rows = []
    for r in results:
        keras_s, ours = r["times"]["keras"], r["times"]["optimist"]
        rows.append(
            [r["optimizer"], r["shapes"], f"{r['nparams'] / 1e6:.2f}M/{r['ntensors']}"]
            + [str(r["threads"]), fmt_ms(keras_s), fmt_ms(ours), f"{keras_s / ours:.2f}×"]
            + [f"{r['faults']['keras']} / {r['faults']['optimist']}", r["keras_runs"], r["via"]]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--shapes",
        nargs="+",
        default=["transformer", "tiny"],
        help=f"shape sets: {' or '.join(PRESETS)}, or a spec such as 12*1024x1024,12*1024",
    )
    ap.add_argument("--optimizers", default=",".join(BY_NAME), help="Keras' names, comma-separated")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (the minimum is kept)")
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the thread's CPU time (time.thread_time; use with --threads 1)",
    )
    ap.add_argument(
        "--malloc",
        choices=["keep", "glibc"],
        default="keep",
        help="keep: glibc keeps freed memory for reuse (mallopt); glibc: as it comes",
    )
    ap.add_argument("--markdown", action="store_true", help="print a README-ready table")
    args = ap.parse_args(argv)

    wanted = [s.strip().lower() for s in args.optimizers.split(",") if s.strip()]
    unknown = [n for n in wanted if n not in BY_NAME]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(BY_NAME)}")
    names = [BY_NAME[n] for n in wanted]
    for spec in args.shapes:
        try:
            parse_shapes(spec)
        except ValueError as exc:
            ap.error(str(exc))
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.clock == "thread" and any(t > 1 for t in thread_counts):
        ap.error("--clock thread counts the calling thread's CPU time only: use --threads 1")
    repeats = max(args.repeats, 1)

    if args.malloc == "glibc":
        malloc = "glibc malloc as it comes"
    elif keep_freed_memory():
        malloc = "glibc malloc keeps freed memory (--malloc keep)"
    else:
        malloc = "the allocator as it comes (not glibc: --malloc keep does nothing)"
    keras = import_keras()
    from optimist.optim import engine

    if engine.available():
        engine.load()  # build outside any timed region
    else:
        print("note: optimist's C++ engine is unavailable; optimist numbers use its eager path")
    print(
        f"torch {torch.__version__}, Keras {keras.__version__} (torch backend, "
        f"{os.environ['KERAS_TORCH_DEVICE']}); minimum of {repeats} interleaved rounds after 2 "
        f"warm-up steps, {args.clock} clock, {malloc}; Keras/optimist > 1: optimist's step is "
        "faster"
    )
    for threads in thread_counts:
        results = measure(keras, names, args.shapes, threads, repeats, args.clock)
        print(f"\n{threads} thread(s):")
        print_table(HEAD, table(results), args.markdown)
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
