"""Time one optimizer ``step()``: optimist against every installed implementation of the same rule.

Parameter sets (float32):

* ``10M`` / ``50M``: about 10M / 50M parameters in 99 model-shaped tensors (8 transformer-like
  blocks of 4 matrices + 8 vectors each, an embedding matrix and a final norm); Muon's row
  keeps only the matrices (torch.optim.Muon takes nothing else);
* ``tiny``: 1000 tensors of 100 elements each (per-tensor overhead).

Contenders (:data:`ROWS`, one row per rule; a peer whose package is not installed is left out):
torch.optim (``foreach=False`` "for-loop", ``foreach=True``, ``fused=True`` where torch has a
CPU kernel), ``pytorch_optimizer`` 4.x, ``heavyball`` 3.x (eager: its torch.compile turned
off; with ``--compile`` also its default, which compiles each fused piece, and
``compile_step=True``; their first three steps are reported apart as compile time, wall
and CPU seconds),
``lion-pytorch``, ``torch-adopt``, ``schedulefree``, ``prodigyopt``; optimist's class with its
default dispatch (the "via" column: the C++ engine, torch's foreach kernels, or torch ops per
tensor).

Timing: every contender of a row steps once per round, round after round (so load from other
processes hits them alike), after two warm-up steps; the time is the minimum over the rounds, of
the wall clock or, with ``--clock thread``, of the calling thread's CPU time
(``time.thread_time``: preemption by other processes does not count, their use of the caches and
of memory bandwidth still does; it needs ``--threads 1``, since other threads' work would not
be counted).
The memory roofline is measured in the same rounds: in-place ``a.add_(b, alpha=s)`` over 2^26
float32 (12 bytes moved per element). A rule's minimum traffic (:attr:`Row.bytes`: bytes read
and written per parameter by one pass, plus the second pass a trust ratio needs) over its time
is its GB/s (from its minimum time); "of roofline" is the median over the rounds of the round's
ratio of the rule's GB/s to ``add_``'s (:func:`roofline_share`: this machine's bandwidth can
change between rounds, and the two minima can come from different regimes).

Targets (issue 12): element-wise rules at >= 0.85 of the roofline and >= 2x faster than the
fastest eager peer at 10M and 50M; <= 4 µs per tensor per step on 1000 tiny tensors.

    python benchmarks/step_speed.py --threads 1 --markdown
    python benchmarks/step_speed.py --sizes 10M,50M,tiny --threads 1 --repeats 5 --clock thread
    python benchmarks/step_speed.py --sizes 10M --optimizers lion,adopt --threads 1,2 --repeats 9
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/step_speed.py --sizes 10M \
        --optimizers adopt --threads 1 --clock thread --compile   # + heavyball compiled
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

Factory = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def peer(module: str, attr: str, **kwargs: Any) -> Factory | None:
    """A factory for ``module.attr(params, **kwargs)``, or None if the package is absent."""
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    return lambda params: cls(params, **kwargs)


def torch_optim(name: str, **kwargs: Any) -> dict[str, Factory | None]:
    """torch.optim's three implementations of ``name`` (fused only where it has a CPU kernel)."""
    out = {
        "torch for-loop": peer("torch.optim", name, foreach=False, **kwargs),
        "torch foreach": peer("torch.optim", name, foreach=True, **kwargs),
    }
    if name in ("SGD", "Adam", "AdamW", "Adagrad"):
        out["torch fused"] = peer("torch.optim", name, fused=True, **kwargs)
    return out


def heavyball(name: str, **kwargs: Any) -> dict[str, Factory | None]:
    """heavyball's step three ways: eager (its torch.compile turned off: plain foreach ops), its
    default (``compile_step=False``, but each fused piece torch.compile'd on first use), and
    ``compile_step=True`` (the whole step compiled). The last two only with ``--compile``."""
    base = peer("heavyball", name, compile_step=False, **kwargs)
    if base is None:
        return {}

    def eager(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        import heavyball.utils as hu

        opt = base(params)
        compiled_step = opt.step

        def step() -> None:
            saved = hu.compile_mode, hu.compile_mode_recommended_to_none
            hu.compile_mode = hu.compile_mode_recommended_to_none = None
            try:
                compiled_step()
            finally:
                hu.compile_mode, hu.compile_mode_recommended_to_none = saved

        opt.step = step  # type: ignore[method-assign]
        return opt

    return {
        "heavyball eager": eager,
        "heavyball compiled": base,
        "heavyball compile_step": peer("heavyball", name, compile_step=True, **kwargs),
    }


COMPILED = ("heavyball compiled", "heavyball compile_step")
"""Contenders timed only with ``--compile`` (their first steps are reported as compile time)."""
COMPILE_STEPS = 3
"""Steps counted as a compiled peer's compile time: heavyball's ``compile_step=True`` runs its
first (state-initialising) step eagerly and compiles the whole step on the second."""


@dataclass(frozen=True)
class Row:
    """One rule: optimist's class and settings, its traffic, and the peers that implement it."""

    optimist: str
    """Class name in ``optimist.optim`` (a row whose class is absent is skipped)."""
    kwargs: dict[str, Any]
    bytes: int | None
    """Minimum bytes moved per parameter per step (float32); None: not memory-bound (Muon)."""
    peers: dict[str, Factory | None] = field(default_factory=dict)
    element_wise: bool = True
    matrices_only: bool = False


_ADAM = {"lr": 1e-3}
ROWS: dict[str, Row] = {
    # classic: torch.optim is the peer
    "sgd": Row("SGD", {"lr": 0.01, "momentum": 0.9}, 20, torch_optim("SGD", lr=0.01, momentum=0.9)),
    "adagrad": Row("Adagrad", {"lr": 0.01}, 20, torch_optim("Adagrad", lr=0.01)),
    "rmsprop": Row("RMSprop", {"lr": 0.01}, 20, torch_optim("RMSprop", lr=0.01)),
    "adadelta": Row("Adadelta", {"lr": 1.0}, 28, torch_optim("Adadelta", lr=1.0)),
    "adam": Row("Adam", _ADAM, 28, torch_optim("Adam", **_ADAM)),
    "adamw": Row(
        "AdamW",
        {"lr": 1e-3, "weight_decay": 0.01},
        28,
        {
            **torch_optim("AdamW", lr=1e-3, weight_decay=0.01),
            **heavyball("AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
        },
    ),
    "adamax": Row("Adamax", {"lr": 2e-3}, 28, torch_optim("Adamax", lr=2e-3)),
    "nadam": Row("NAdam", {"lr": 2e-3}, 28, torch_optim("NAdam", lr=2e-3)),
    "radam": Row("RAdam", _ADAM, 28, torch_optim("RAdam", **_ADAM)),
    # modern element-wise rules (p read+write, g read, each slot read+write)
    "lion": Row(
        "Lion",
        {"lr": 1e-4, "weight_decay": 0.1},
        20,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "Lion", lr=1e-4, weight_decay=0.1),
            "lion-pytorch": peer("lion_pytorch", "Lion", lr=1e-4, weight_decay=0.1),
        },
    ),
    "ftrl": Row(  # the paper's form (n from 0) on both sides, as tests/test_peer_ftrl.py
        "Ftrl",
        {"lr": 0.05, "initial_accumulator_value": 0.0},
        28,
        {"pytorch_optimizer": peer("pytorch_optimizer", "FTRL", lr=0.05)},
    ),
    "adopt": Row(
        "ADOPT",
        _ADAM,
        28,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "ADOPT", **_ADAM),
            "torch-adopt": peer("adopt", "ADOPT", foreach=True, **_ADAM),
            **heavyball("ADOPT", **_ADAM),
        },
    ),
    "ademamix": Row(
        "AdEMAMix",
        _ADAM,
        36,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "AdEMAMix", **_ADAM),
            **heavyball("AdEMAMix", **_ADAM),
        },
    ),
    # Adan: m, v, n and the previous gradient
    "adan": Row(
        "Adan", _ADAM, 44, {"pytorch_optimizer": peer("pytorch_optimizer", "Adan", **_ADAM)}
    ),
    "schedule_free_adamw": Row(
        "ScheduleFreeAdamW",
        {"lr": 2.5e-3},
        28,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "ScheduleFreeAdamW", lr=2.5e-3),
            "schedulefree": peer("schedulefree", "AdamWScheduleFree", lr=2.5e-3, foreach=True),
            **heavyball("SFAdamW", lr=2.5e-3),
        },
    ),
    "schedule_free_sgd": Row(
        "ScheduleFreeSGD",
        {"lr": 0.1},
        20,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "ScheduleFreeSGD", lr=0.1),
            "schedulefree": peer("schedulefree", "SGDScheduleFree", lr=0.1, foreach=True),
        },
    ),
    # trust ratios need the norms first: one more read of p, m and v (LAMB) or p and g (LARS)
    "lamb": Row(
        "LAMB", _ADAM, 40, {"pytorch_optimizer": peer("pytorch_optimizer", "Lamb", **_ADAM)}
    ),
    "lars": Row(
        "LARS",
        {"lr": 1.0},
        28,
        {"pytorch_optimizer": peer("pytorch_optimizer", "LARS", lr=1.0)},
    ),
    # Prodigy: a global pass (read g, p, p0, s; write s) before the rule (read g, p, m, v; write
    # p, m, v): the step size is known only after the first
    "prodigy": Row(
        "Prodigy",
        {"lr": 1.0},
        48,
        {
            "prodigyopt": peer("prodigyopt", "Prodigy", lr=1.0),
            "pytorch_optimizer": peer("pytorch_optimizer", "Prodigy", lr=1.0),
        },
    ),
    # matrix optimizers: the target is "no slower than the fastest peer"
    "adafactor": Row(
        "Adafactor",
        {"lr": 1e-2},
        16,
        {
            **torch_optim("Adafactor", lr=1e-2),
            "pytorch_optimizer": peer("pytorch_optimizer", "AdaFactor", lr=1e-2),
        },
        element_wise=False,
    ),
    "soap": Row(
        "SOAP",
        {"lr": 3e-3},
        None,
        {
            "pytorch_optimizer": peer("pytorch_optimizer", "SOAP", lr=3e-3),
            **heavyball("SOAP", lr=3e-3),
        },
        element_wise=False,
    ),
    "muon": Row(
        "Muon",
        {"lr": 1e-3},
        None,
        {"torch": peer("torch.optim", "Muon", lr=1e-3)},
        element_wise=False,
        matrices_only=True,
    ),
}
"""Every benchmarked rule; a new optimizer needs one row."""
CLASSIC = ("sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "radam")
OPTIMIZERS = {
    name: (ROWS[name].optimist, ROWS[name].kwargs, ROWS[name].bytes, ROWS[name].peers)
    for name in CLASSIC
}
"""The classic nine as (class name, settings, bytes, peers), as ``engine_speed.py`` reads them."""
MODERN = ("lion", "adopt", "ademamix", "adan", "schedule_free_adamw", "schedule_free_sgd")
DEFAULT_OPTIMIZERS = (*MODERN, "lamb", "lars", "prodigy", "adafactor", "muon", "soap")
ISSUE_12 = DEFAULT_OPTIMIZERS
"""Rows with issue 12's targets: element-wise >= 0.85 of the roofline and >= 2x the fastest
eager peer; matrix optimizers no slower than the fastest peer."""


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
# Contenders


def dispatch(opt: torch.optim.Optimizer) -> str:
    """How optimist's optimizer actually runs its step, from its own dispatch."""
    implementation = getattr(opt, "_implementation", None)
    if implementation is None:
        return "torch ops per tensor"
    names = {"fused": "C++ engine", "torch": "torch foreach", "torch_fused": "torch fused",
             "single": "eager per tensor", "bucketed": "eager bucketed",
             "foreach": "torch ops batched"}  # fmt: skip
    kinds = []
    for group in opt.param_groups:
        if group.get("use_muon"):
            kind = "Newton-Schulz in torch ops"
        else:
            path = implementation(group, group["params"])
            bucketed = getattr(opt, "_bucketed", None)
            if path == "single" and bucketed is not None and bucketed(group, group["params"]):
                path = "bucketed"
            kind = names[path]
        if kind not in kinds:
            kinds.append(kind)
    return " + ".join(kinds)


def make_contenders(
    row: Row, shapes: list[tuple[int, ...]], compiled: bool
) -> tuple[dict[str, Any], str, dict[str, dict[str, float]]]:
    """``{label: step function}`` (optimist first), optimist's dispatch, and the compile time
    (first :data:`COMPILE_STEPS` steps, wall and CPU seconds) of each compiled peer. Every
    contender gets its own copy of the same parameters and gradients; a peer that frees the
    gradients in ``step()`` (heavyball) gets them re-attached before each step, and
    ``reattach`` times that alone (subtracted later)."""
    import optimist.optim as oo

    params = make_params(shapes)
    opt = getattr(oo, row.optimist)(params, **row.kwargs)
    fns: dict[str, Any] = {"optimist": opt.step}
    compile_s: dict[str, dict[str, float]] = {}
    for label, factory in row.peers.items():
        if factory is None or (label in COMPILED and not compiled):
            continue
        params = make_params(shapes)
        grads = [p.grad for p in params]
        steps = COMPILE_STEPS if label in COMPILED else 1
        try:
            peer_opt, first = start_peer(factory, params, _first_steps, grads, steps)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
            print(f"    {label}: skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        if label in COMPILED:
            compile_s[label] = first
            took = f"{first['wall']:.1f} s wall, {first['cpu']:.1f} s CPU"
            print(f"    {label}: first {COMPILE_STEPS} steps {took}", file=sys.stderr, flush=True)
        step = peer_opt.step
        if any(p.grad is None for p in params):
            step = _reattaching(step, params, grads)
            fns["reattach"] = _reattaching(lambda: None, params, grads)
            label += " †"
        fns[label] = step
    return fns, dispatch(opt), compile_s


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (the C compiler)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


T = TypeVar("T")


def start_peer(
    factory: Callable[[list], Any], params, first: Callable[..., T], *args: Any
) -> tuple[Any, T]:
    """A peer optimizer ``factory(params)``, put in train mode where it has one (the
    Schedule-Free packages step only there), and ``first(peer, params, *args)`` (its first
    steps), with the peers' warnings silenced; a peer that cannot run raises as it would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peer = factory(params)
        if callable(getattr(peer, "train", None)):
            peer.train()
        return peer, first(peer, params, *args)


def _first_steps(opt: torch.optim.Optimizer, params, grads, steps: int) -> dict[str, float]:
    """Run ``steps`` steps (a peer without a CPU path for the rule fails on the first); their
    total wall and CPU seconds, and the wall seconds of the slowest."""
    wall = cpu = slowest = 0.0
    for _ in range(steps):
        for p, g in zip(params, grads, strict=True):
            p.grad = g  # heavyball frees them in step()
        t0, c0 = time.perf_counter(), _cpu_seconds()
        opt.step()
        dt = time.perf_counter() - t0
        wall, cpu, slowest = wall + dt, cpu + _cpu_seconds() - c0, max(slowest, dt)
    return {"wall": wall, "cpu": cpu, "slowest": slowest}


def _reattaching(step: Callable[[], Any], params, grads) -> Callable[[], Any]:
    def run() -> Any:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return step()

    return run


# ----------------------------------------------------------------------------------------
# Timing


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}
"""``--clock``: the wall clock, or the calling thread's CPU time (immune to preemption)."""


def time_interleaved(
    fns: dict[str, Callable[[], Any]],
    repeats: int,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
    rounds: dict[str, list[float]] | None = None,
):
    """Minimum seconds per call of each function by ``clock``, measured round-robin; with
    ``rounds``, every round's seconds too (``rounds[label][i]``: round i)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        best = dict.fromkeys(fns, math.inf)
        for _ in range(repeats):
            for key, fn in fns.items():
                t0 = clock()
                fn()
                took = clock() - t0
                best[key] = min(best[key], took)
                if rounds is not None:
                    rounds.setdefault(key, []).append(took)
    if "reattach" in best:  # the re-attaching peers are charged their own step only
        cost = best.pop("reattach")
        best = {k: v - cost if k.endswith("†") else v for k, v in best.items()}
    return best


ROOF_N = 2**26
ROOF_BYTES_PER_ELEMENT = 12  # a.add_(b): read a and b, write a


def roofline_fn(n: int = ROOF_N) -> Callable[[], None]:
    a, b = torch.randn(n), torch.randn(n)
    return lambda: a.add_(b, alpha=1e-9)


# ----------------------------------------------------------------------------------------
# Report


def fmt_ms(t: float | None) -> str:
    return "—" if t is None else f"{t * 1e3:.1f}"


def fmt_us(t: float | None, count: int) -> str:
    return "—" if t is None else f"{t * 1e6 / count:.2f}"


def fastest_eager_peer(times: dict[str, float]) -> tuple[str, float] | None:
    peers = {k: v for k, v in times.items() if k not in ("optimist", "roofline")}
    peers = {k: v for k, v in peers.items() if k.rstrip(" †") not in COMPILED}
    if not peers:
        return None
    label = min(peers, key=peers.__getitem__)
    return label, peers[label]


def measure(args, names: list[str], sizes: list[str], threads: int) -> list[dict[str, Any]]:
    torch.set_num_threads(threads)
    roof = roofline_fn(args.roofline_elements) if any(s != "tiny" for s in sizes) else None
    results = []
    for size in sizes:
        for name in names:
            row = ROWS[name]
            shapes = param_set(size)
            if row.matrices_only:
                shapes = [s for s in shapes if len(s) >= 2]
            if not shapes:
                continue
            fns, via, compile_s = make_contenders(row, shapes, args.compile)
            if size != "tiny":
                fns["roofline"] = roof
            rounds: dict[str, list[float]] = {}
            times = time_interleaved(fns, args.repeats, clock=CLOCKS[args.clock], rounds=rounds)
            del fns
            gc.collect()
            result = {"optimizer": name, "size": size, "threads": threads, "times": times}
            if "roofline" in rounds:
                result["roof_rounds"] = [rounds["optimist"], rounds["roofline"]]
            result.update(via=via, compile_s=compile_s, ntensors=len(shapes))
            result["nparams"] = sum(math.prod(s) for s in shapes)
            results.append(result)
            print(
                f"  {threads} thr {name:20s} {size:>5s}: "
                + ", ".join(f"{k} {fmt_ms(v)} ms" for k, v in times.items())
                + f" (optimist via {via})",
                file=sys.stderr,
                flush=True,
            )
    return results


def roofline_share(result: dict[str, Any], bytes_per_param: int, roof_n: int) -> float:
    """The rule's GB/s over ``add_``'s: the median over the rounds of each round's ratio (both
    timed in that round), where the rounds were recorded, else the ratio of the two minima.

    Per round, because this machine's memory bandwidth moves between rounds (2 threads: ``add_``
    over the same buffers at 66 GB/s for minutes, then at 115): the two minima can come from
    different bandwidth regimes, a round's pair from the same one."""
    moved = bytes_per_param * result["nparams"]
    roof_bytes = ROOF_BYTES_PER_ELEMENT * roof_n
    if "roof_rounds" not in result:
        t = result["times"]
        return (moved / t["optimist"]) / (roof_bytes / t["roofline"])
    ours, roof = result["roof_rounds"]
    return statistics.median(moved * b / (roof_bytes * a) for a, b in zip(ours, roof, strict=True))


def big_table(results: list[dict[str, Any]], roof_n: int) -> tuple[list[str], list[list[str]]]:
    head = ["optimizer", "params/tensors", "threads", "optimist ms", "via"]
    head += ["fastest eager peer", "peer ms", "speedup", "all peers (ms)", "heavyball compiled"]
    head += ["GB/s", "add_ GB/s", "of roofline", "targets"]
    rows = []
    for r in results:
        t, row = r["times"], ROWS[r["optimizer"]]
        best = fastest_eager_peer(t)
        speedup = best[1] / t["optimist"] if best else None
        roof_gbs = ROOF_BYTES_PER_ELEMENT * roof_n / t["roofline"] / 1e9
        gbs = row.bytes * r["nparams"] / t["optimist"] / 1e9 if row.bytes else None
        share = roofline_share(r, row.bytes, roof_n) if gbs else None
        peers = ", ".join(
            f"{k} {fmt_ms(v)}" for k, v in t.items() if k not in ("optimist", "roofline")
        )
        comp = "; ".join(
            compiled_cell(k.removeprefix("heavyball "), t.get(k + " †", t.get(k)), t["optimist"], c)
            for k, c in r["compile_s"].items()
        )
        if r["optimizer"] not in ISSUE_12:
            verdict = "—"  # the classic rules' target is torch's fused step (issue 8)
        elif row.element_wise:
            met = share is not None and share >= 0.85 and speedup is not None and speedup >= 2
            verdict = "met" if met else "not met"
        else:
            verdict = "met" if speedup is None or speedup >= 1 else "not met"
        rows.append(
            [r["optimizer"], f"{r['nparams'] / 1e6:.1f}M/{r['ntensors']}", str(r["threads"])]
            + [fmt_ms(t["optimist"]), r["via"]]
            + [best[0] if best else "—", fmt_ms(best[1]) if best else "—"]
            + [f"{speedup:.2f}×" if speedup else "—", peers or "—", comp or "—"]
            + [f"{gbs:.1f}" if gbs else "—", f"{roof_gbs:.1f}"]
            + [f"{share:.2f}" if share else "—", verdict]
        )
    return head, rows


def compiled_cell(
    name: str, step: float | None, optimist: float, compile_s: dict[str, float]
) -> str:
    """A compiled peer's step, optimist's speedup over it, and its compile time (first steps)."""
    timing = f"compile {compile_s['wall']:.0f} s wall / {compile_s['cpu']:.0f} s CPU"
    if step is None:
        return f"{name}: {timing}"
    return f"{name} {fmt_ms(step)} ms ({step / optimist:.2f}×; {timing})"


def tiny_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["optimizer", "tensors", "threads", "optimist µs/tensor", "via"]
    head += ["fastest eager peer", "peer µs/tensor", "speedup", "target ≤ 4 µs"]
    rows = []
    for r in results:
        t, n = r["times"], r["ntensors"]
        best = fastest_eager_peer(t)
        per = t["optimist"] * 1e6 / n
        rows.append(
            [r["optimizer"], f"{n}×100", str(r["threads"]), f"{per:.2f}", r["via"]]
            + [best[0] if best else "—", fmt_us(best[1], n) if best else "—"]
            + [f"{best[1] / t['optimist']:.2f}×" if best else "—", "met" if per <= 4 else "not met"]
        )
    return head, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10M,50M,tiny")
    ap.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS), help=f"of {list(ROWS)}")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (the minimum is kept)")
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or the thread's CPU time (time.thread_time; use with --threads 1)",
    )
    ap.add_argument("--compile", action="store_true", help="also time heavyball's compiled step")
    ap.add_argument("--markdown", action="store_true", help="print README-ready tables")
    ap.add_argument("--roofline-elements", type=int, default=ROOF_N, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import optimist.optim as oo

    if args.compile:  # compile in this process, so its CPU time counts the compile workers' too
        from torch._inductor import config as inductor

        inductor.compile_threads = 1
    names = [s.strip().lower() for s in args.optimizers.split(",") if s.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(ROWS)}")
    absent = [n for n in names if not hasattr(oo, ROWS[n].optimist)]
    if absent:
        print(f"note: not in optimist.optim here, skipped: {', '.join(absent)}", file=sys.stderr)
    names = [n for n in names if n not in absent]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    thread_counts = [int(t) for t in args.threads.split(",") if t.strip()]
    args.repeats = max(args.repeats, 1)
    if args.clock == "thread" and any(t > 1 for t in thread_counts):
        ap.error("--clock thread counts the calling thread's CPU time only: use --threads 1")

    from optimist.optim import engine

    if not engine.available():
        print("note: optimist's C++ engine is unavailable; optimist numbers use its eager path")
    else:
        engine.load()  # build outside any timed region

    print(
        f"torch {torch.__version__}, minimum of {args.repeats} interleaved rounds after 2 "
        f"warm-up steps, {args.clock} clock"
    )
    for threads in thread_counts:  # each thread count's tables as soon as they are measured
        results = measure(args, names, sizes, threads)
        print(f"\n{threads} thread(s):")
        big = [r for r in results if r["size"] != "tiny"]
        if big:
            roof_bytes = ROOF_BYTES_PER_ELEMENT * args.roofline_elements
            roofs = [roof_bytes / r["times"]["roofline"] / 1e9 for r in big]
            print(
                f"roofline (a.add_(b) over {args.roofline_elements} float32, 12 B/element), per "
                f"row: {min(roofs):.1f}..{max(roofs):.1f} GB/s, median "
                f"{statistics.median(roofs):.1f}\n"
            )
            print_table(*big_table(big, args.roofline_elements), args.markdown)
            print()
        tiny = [r for r in results if r["size"] == "tiny"]
        if tiny:
            print_table(*tiny_table(tiny), args.markdown)
        sys.stdout.flush()
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
