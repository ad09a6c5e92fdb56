"""How often are the monitor's verdicts right? Labelled healthy and broken runs, small and CPU-fast.

Each run trains a small model (MLPs on digits and on MNIST / Fashion-MNIST subsets, a tiny
next-character model on Shakespeare, 2-D test functions) under
``optimist.monitor.watch`` and compares the verdicts with the run's label: healthy runs should get
only *healthy*; a broken run (a known cause: LR x100, LR /1000, unscaled inputs, bad init, dead
ReLUs by a large negative bias, label-noise overfitting, a too-deep sigmoid net) is *caught* when
any verdict that names its cause fires. Printed: per failure class the catch rate and median
detection delay (steps from the step the failure becomes detectable: step 0 for causes present
from the start, the validation-loss minimum for overfitting); per verdict precision and recall;
the false-alarm rate on healthy runs.

Seeds: ``--seeds tune`` (0, 1) were used to set the default thresholds; ``--seeds report``
(100-103, the default) are the ones the README reports.

    python benchmarks/monitor_accuracy.py               # the reported table (a few minutes)
    python benchmarks/monitor_accuracy.py --seeds tune  # the tuning seeds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

import optimist
from optimist.monitor import Thresholds, watch

TUNE_SEEDS = (0, 1)
REPORT_SEEDS = (100, 101, 102, 103)
EVERY = 10


# ---- data -----------------------------------------------------------------------------------
@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32), torch.tensor(d.target)


@cache
def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    (x, y), _ = optimist.datasets.mnist.load_data(copy=False)
    x = torch.tensor(np.asarray(x[:3000], dtype=np.float32).reshape(3000, -1))
    return x, torch.tensor(np.asarray(y[:3000], dtype=np.int64))


@cache
def _fashion() -> tuple[torch.Tensor, torch.Tensor]:
    (x, y), _ = optimist.datasets.fashion_mnist.load_data()
    x = torch.tensor(np.asarray(x[:3000], dtype=np.float32).reshape(3000, -1))
    return x, torch.tensor(np.asarray(y[:3000], dtype=np.int64))


@cache
def _chars() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Shakespeare: the next character after 8 (first 300,000 characters of the corpus)."""
    from optimist.datasets import shakespeare

    (x, y), _ = shakespeare.load_data(seq_len=8, max_chars=300_000)
    vocab = len(shakespeare.vocabulary().chars)
    return torch.tensor(x[:4000]), torch.tensor(y[:4000, -1]), vocab


class CharMLP(nn.Sequential):
    """A tiny next-character model: embeddings of 8 characters -> hidden ReLU layer -> logits."""

    def __init__(self, vocab: int) -> None:
        super().__init__(
            nn.Embedding(vocab, 16),
            nn.Flatten(),
            nn.Linear(8 * 16, 64),
            nn.ReLU(),
            nn.Linear(64, vocab),
        )


def _char_model():
    def build(seed: int) -> tuple[nn.Module, Any]:
        torch.manual_seed(seed)
        x, y, vocab = _chars()
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x), generator=gen)
        val, train = order[:800], order[800:]
        return CharMLP(vocab), (x[train], y[train], x[val], y[val])

    return build


def dataset(
    name: str, seed: int, *, raw: bool = False, n_train: int | None = None, label_noise: float = 0.0
) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_val, y_val); inputs scaled to [0, 1] unless ``raw`` (0..255)."""
    x, y = {"digits": _digits, "mnist": _mnist, "fashion": _fashion}[name]()
    peak = 16.0 if name == "digits" else 255.0
    x = x * (255.0 / peak) if raw else x / peak
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    n_val = len(x) // 5
    val, train = order[:n_val], order[n_val:]
    if n_train is not None:
        train = train[:n_train]
    ytr = y[train].clone()
    if label_noise:
        flip = torch.rand(len(ytr), generator=gen) < label_noise
        ytr[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=gen)
    return x[train], ytr, x[val], y[val]


# ---- models ---------------------------------------------------------------------------------
def mlp(
    sizes: list[int],
    act: type[nn.Module] = nn.ReLU,
    *,
    init_scale: float = 1.0,
    bias: float | None = None,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(init_scale)
            if bias is not None and i < len(sizes) - 2:
                lin.bias.fill_(bias)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class Function2D(nn.Module):
    """A 2-D test function as a 'model' whose one parameter is the point."""

    def __init__(self, kind: str, start: tuple[float, float]) -> None:
        super().__init__()
        self.kind = kind
        self.w = nn.Parameter(torch.tensor(start, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        x, y = self.w[0], self.w[1]
        if self.kind == "quadratic":
            return 0.5 * (x * x + 10.0 * y * y)
        if self.kind == "rosenbrock":
            return (1 - x) ** 2 + 100.0 * (y - x * x) ** 2
        raise ValueError(self.kind)


# ---- runs -----------------------------------------------------------------------------------
@dataclass
class Case:
    """One labelled configuration; ``label`` is "healthy" or the failure class."""

    name: str
    label: str
    build: Callable[[int], tuple[nn.Module, Any]]  # seed -> (model, data or None)
    optimizer: Callable[[Any], torch.optim.Optimizer]
    steps: int = 300
    batch: int = 32
    val_every: int = 50
    expect: tuple[str, ...] = ("healthy",)  # verdicts that name the cause (any counts)
    primary: str = "healthy"  # the verdict that should fire first and foremost


@dataclass
class RunResult:
    case: str
    label: str
    seed: int
    verdicts: list[dict[str, Any]]
    onset: int
    expect: tuple[str, ...]
    primary: str
    caught: bool = False
    delay: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _digits_model(
    sizes: list[int],
    *,
    act: type[nn.Module] = nn.ReLU,
    init_scale: float = 1.0,
    bias: float | None = None,
    data: str = "digits",
    **data_kw: Any,
):
    def build(seed: int) -> tuple[nn.Module, Any]:
        torch.manual_seed(seed)
        return mlp(sizes, act, init_scale=init_scale, bias=bias), dataset(data, seed, **data_kw)

    return build


def _function(kind: str, start: tuple[float, float]):
    def build(seed: int) -> tuple[nn.Module, Any]:
        gen = torch.Generator().manual_seed(seed)
        jitter = (torch.rand(2, generator=gen, dtype=torch.float64) - 0.5) * 0.2
        return Function2D(kind, (start[0] + float(jitter[0]), start[1] + float(jitter[1]))), None

    return build


def run_case(
    case: Case, seed: int, thresholds: Thresholds | None = None, every: int | str = EVERY
) -> RunResult:
    model, data = case.build(seed)
    opt = case.optimizer(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    val_curve: list[tuple[int, float]] = []
    with watch(model, opt, every=every, thresholds=thresholds) as m:
        if data is None:
            for _ in range(case.steps):
                loss = model()
                opt.zero_grad()
                loss.backward()
                opt.step()
                m.log_loss(loss)
        else:
            xtr, ytr, xva, yva = data
            step = 0
            while step < case.steps:
                order = torch.randperm(len(xtr), generator=gen)
                for i in range(0, len(xtr) - case.batch + 1, case.batch):
                    idx = order[i : i + case.batch]
                    loss = nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    m.log_loss(loss)
                    step += 1
                    if step % case.val_every == 0:
                        with torch.no_grad():
                            v = float(nn.functional.cross_entropy(model(xva), yva))
                        m.log_val_loss(v)
                        val_curve.append((step, v))
                    if step >= case.steps:
                        break
    verdicts = m.verdicts()
    onset = 0
    if case.label == "overfit" and val_curve:
        # detectable once the validation loss has passed its minimum
        finite = [(s, v) for s, v in val_curve if math.isfinite(v)]
        onset = min(finite, key=lambda sv: sv[1])[0] if finite else 0
    result = RunResult(
        case.name,
        case.label,
        seed,
        [v.to_dict() for v in verdicts],
        onset,
        case.expect,
        case.primary,
    )
    hits = [v for v in verdicts if v.name in case.expect]
    if hits and case.label != "healthy":
        result.caught = True
        result.delay = max(0, min(v.step for v in hits) - onset)
    elif case.label == "healthy":
        result.caught = all(v.name == "healthy" for v in verdicts)
    return result


def sgd(lr: float, momentum: float = 0.0):
    return lambda p: optimist.optim.SGD(p, lr=lr, momentum=momentum)


def by_name(name: str, lr: float):
    return lambda p: optimist.optimizer(name, p, lr=lr)


DIVERGE = ("diverging", "oscillating", "update_ratio_high", "exploding_gradients")
# a too-large step in a ReLU net often kills the units: a true verdict there, advising a lower LR
DIVERGE_RELU = (*DIVERGE, "dead_relus")
STALL = ("stalled", "update_ratio_low")
VANISH = ("vanishing_gradients", "stalled", "update_ratio_low")
DEAD = ("dead_relus", "vanishing_gradients", "stalled")


def cases() -> list[Case]:
    """The labelled configurations (each is run once per seed)."""
    h = "healthy"
    small = [64, 64, 10]
    return [
        # ---- healthy: different models, optimizers, sensible LRs
        Case("digits-mlp-sgd-momentum", h, _digits_model(small), sgd(0.05, 0.9)),
        Case("digits-mlp-adam", h, _digits_model(small), by_name("adam", 1e-3)),
        Case(
            "digits-mlp-tanh-rmsprop",
            h,
            _digits_model(small, act=nn.Tanh),
            by_name("rmsprop", 1e-3),
        ),
        Case("digits-mlp-adagrad", h, _digits_model(small), by_name("adagrad", 0.05)),
        Case("digits-logreg-sgd", h, _digits_model([64, 10]), sgd(0.5)),
        Case(
            "digits-deep-mlp-adamw", h, _digits_model([64, 64, 64, 64, 10]), by_name("adamw", 1e-3)
        ),
        Case("digits-mlp-nadam", h, _digits_model([64, 128, 10]), by_name("nadam", 2e-3)),
        Case(
            "mnist-mlp-adam", h, _digits_model([784, 128, 10], data="mnist"), by_name("adam", 1e-3)
        ),
        Case(
            "fashion-mlp-sgd-momentum",
            h,
            _digits_model([784, 64, 10], data="fashion"),
            sgd(0.02, 0.9),
        ),
        Case("shakespeare-char-adam", h, _char_model(), by_name("adam", 3e-3)),
        Case("quadratic-sgd", h, _function("quadratic", (3.0, 2.0)), sgd(0.05), steps=200),
        Case(
            "rosenbrock-adam",
            h,
            _function("rosenbrock", (-1.0, 1.5)),
            by_name("adam", 0.02),
            steps=400,
        ),
        # ---- broken, with a known cause
        Case(
            "lr-x100-sgd",
            "lr_x100",
            _digits_model(small),
            sgd(5.0, 0.9),
            expect=DIVERGE_RELU,
            primary="diverging",
        ),
        Case(
            "lr-x100-adam",
            "lr_x100",
            _digits_model(small),
            by_name("adam", 0.1),
            expect=DIVERGE_RELU,
            primary="update_ratio_high",
        ),
        Case(
            "quadratic-lr-x100",
            "lr_x100",
            _function("quadratic", (3.0, 2.0)),
            sgd(5.0),
            steps=200,
            expect=DIVERGE,
            primary="diverging",
        ),
        Case(
            "lr-div1000-sgd",
            "lr_div1000",
            _digits_model(small),
            sgd(5e-5, 0.9),
            expect=STALL,
            primary="stalled",
        ),
        Case(
            "lr-div1000-adam",
            "lr_div1000",
            _digits_model(small),
            by_name("adam", 1e-6),
            expect=STALL,
            primary="stalled",
        ),
        Case(
            "shakespeare-char-lr-div1000",
            "lr_div1000",
            _char_model(),
            by_name("adam", 3e-6),
            expect=STALL,
            primary="stalled",
        ),
        Case(
            "no-input-scaling",
            "no_input_scaling",
            _digits_model(small, raw=True),
            sgd(0.05, 0.9),
            expect=DIVERGE_RELU,
            primary="exploding_gradients",
        ),
        Case(
            "bad-init-large",
            "bad_init",
            _digits_model([64, 64, 64, 64, 10], init_scale=10.0),
            sgd(0.05, 0.9),
            expect=DIVERGE_RELU,
            primary="exploding_gradients",
        ),
        Case(
            "bad-init-small",
            "bad_init",
            _digits_model([64, 64, 64, 64, 64, 10], act=nn.Tanh, init_scale=0.01),
            sgd(0.05, 0.9),
            expect=VANISH,
            primary="vanishing_gradients",
        ),
        Case(
            "dead-relus",
            "dead_relus",
            _digits_model([64, 64, 64, 10], bias=-5.0),
            by_name("adam", 1e-3),
            expect=DEAD,
            primary="dead_relus",
        ),
        Case(
            "label-noise-overfit",
            "overfit",
            _digits_model([64, 256, 256, 10], n_train=200, label_noise=0.5),
            by_name("adam", 3e-3),
            steps=600,
            val_every=20,
            expect=("overfitting",),
            primary="overfitting",
        ),
        Case(
            "deep-sigmoid",
            "deep_sigmoid",
            _digits_model([64] + [32] * 10 + [10], act=nn.Sigmoid),
            sgd(0.1, 0.9),
            expect=VANISH,
            primary="vanishing_gradients",
        ),
    ]


# ---- scoring --------------------------------------------------------------------------------
def score(results: list[RunResult]) -> dict[str, Any]:
    healthy = [r for r in results if r.label == "healthy"]
    broken = [r for r in results if r.label != "healthy"]
    false_alarms = [r for r in healthy if not r.caught]
    classes: dict[str, Any] = {}
    for label in dict.fromkeys(r.label for r in broken):
        runs = [r for r in broken if r.label == label]
        delays = [r.delay for r in runs if r.delay is not None]
        classes[label] = {
            "runs": len(runs),
            "caught": sum(r.caught for r in runs) / len(runs),
            "median_delay": statistics.median(delays) if delays else None,
        }
    per_verdict: dict[str, Any] = {}
    names = sorted({v["name"] for r in results for v in r.verdicts} | {r.primary for r in results})
    for name in names:
        fired = [r for r in results if any(v["name"] == name for v in r.verdicts)]
        right = [r for r in fired if name in r.expect]
        owners = [r for r in results if r.primary == name]
        per_verdict[name] = {
            "fired": len(fired),
            "precision": len(right) / len(fired) if fired else None,
            "recall": sum(any(v["name"] == name for v in r.verdicts) for r in owners) / len(owners)
            if owners
            else None,
        }
    delays = [r.delay for r in broken if r.delay is not None]
    return {
        "healthy_runs": len(healthy),
        "broken_runs": len(broken),
        "false_alarm_rate": len(false_alarms) / max(len(healthy), 1),
        "false_alarms": [
            f"{r.case}/seed{r.seed}: {[v['name'] for v in r.verdicts]}" for r in false_alarms
        ],
        "missed": [
            f"{r.case}/seed{r.seed}: {[v['name'] for v in r.verdicts]}"
            for r in broken
            if not r.caught
        ],
        "wrong": [
            f"{r.case}/seed{r.seed}: {v['name']}"
            + (f" in layer {v['layer']}" if v["layer"] else "")
            + f" at step {v['step']}"
            for r in broken
            for v in r.verdicts
            if v["name"] not in r.expect
        ],
        "classes": classes,
        "verdicts": per_verdict,
        "median_delay": statistics.median(delays) if delays else None,
    }


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:.0%}" if pct else f"{x:g}"


def print_table(s: dict[str, Any], seeds: tuple[int, ...], seconds: float) -> None:
    print(
        f"seeds {list(seeds)}: {s['healthy_runs']} healthy + {s['broken_runs']} broken runs "
        f"in {seconds:.0f} s"
    )
    print(
        f"false alarms on healthy runs: {_fmt(s['false_alarm_rate'])} "
        f"({len(s['false_alarms'])}/{s['healthy_runs']})"
    )
    print("\n| failure class | runs | caught | median delay (steps) |")
    print("|---|---|---|---|")
    for label, c in s["classes"].items():
        print(f"| {label} | {c['runs']} | {_fmt(c['caught'])} | {_fmt(c['median_delay'], False)} |")
    print("\n| verdict | fired | precision | recall |")
    print("|---|---|---|---|")
    for name, v in s["verdicts"].items():
        print(f"| {name} | {v['fired']} | {_fmt(v['precision'])} | {_fmt(v['recall'])} |")
    print(
        f"\nmedian detection delay over all caught broken runs: {_fmt(s['median_delay'], False)}"
        " steps"
    )
    for line in s["false_alarms"]:
        print("false alarm:", line)
    for line in s["missed"]:
        print("missed:", line)
    for line in s["wrong"]:
        print("verdict outside the run's cause:", line)


def run_all(
    seeds: tuple[int, ...],
    thresholds: Thresholds | None = None,
    only: str | None = None,
    every: int | str = EVERY,
) -> list[RunResult]:
    out = []
    for case in cases():
        if only and only not in case.name:
            continue
        for seed in seeds:
            out.append(run_case(case, seed, thresholds, every))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", choices=("tune", "report"), default="report")
    parser.add_argument("--only", help="run only cases whose name contains this")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument(
        "--every", default=str(EVERY), help="signal interval: an integer or 'auto' (default 10)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = TUNE_SEEDS if args.seeds == "tune" else REPORT_SEEDS
    start = time.perf_counter()
    every = args.every if args.every == "auto" else int(args.every)
    print(f"signal interval: every={every}")
    results = run_all(seeds, only=args.only, every=every)
    s = score(results)
    print_table(s, seeds, time.perf_counter() - start)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
