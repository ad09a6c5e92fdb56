"""What does the training monitor cost? Step time with and without ``optimist.monitor.watch``.

For each model a plain training loop (forward, backward, ``step``, ``log_loss``-free) and the same
loop under ``watch(model, optimizer, every=k)`` with ``m.log_loss(loss)`` each step are timed in
interleaved rounds (so machine load hits both alike; the rounds alternate which runs first), on
one torch thread, by ``--clock``: ``cpu`` (the process's CPU time, the default), ``thread`` (this
thread's CPU time) or ``wall``. CPU time counts the run's own compute only, far steadier than
wall time on a shared machine. The overhead
is min(monitored) / min(plain) - 1 over the rounds. The monitor's own time is printed as well:
the time it counted in its readings (``Watch.own_time``, CPU time of the training thread) over
the monitored loop's time by the same clock; with ``every="auto"`` also the interval it settled
on (the median over rounds). And the cost of an unsampled step's
hook plus ``log_loss`` (a tight loop, best of 5), and ``fit`` on digits with its default light
Monitor against ``fit(..., monitor=False)``.

    python benchmarks/monitor_overhead.py                 # the default interval (every="auto")
    python benchmarks/monitor_overhead.py --every 10,auto --steps 600 --rounds 5 --clock thread
    python benchmarks/monitor_overhead.py --models tiny,fit --rounds 15
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import optimist
from optimist.monitor import Monitor, watch
from optimist.monitor.signals import clock
from optimist.monitor.watch import DEFAULT_EVERY

CLOCKS = {"cpu": time.process_time, "thread": time.thread_time, "wall": time.perf_counter}
_clock = CLOCKS["cpu"]


def _models() -> dict[str, tuple[str, Callable[[], nn.Module], tuple[int, ...], int]]:
    """key -> (name, model factory, input shape without batch, batch size)."""
    return {
        "tiny": (
            "mlp 64-64-10 (digits-sized), batch 32",
            lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
            (64,),
            32,
        ),
        "mlp": (
            "mlp 784-256-256-10, batch 128",
            lambda: nn.Sequential(
                nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
            ),
            (784,),
            128,
        ),
        "cnn": (
            "cnn 2 conv + dense (28x28), batch 32",
            lambda: nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 7 * 7, 10),
            ),
            (1, 28, 28),
            32,
        ),
    }


def _loop_time(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, every: int | str | None
) -> tuple[float, float, int]:
    """Seconds per step (by --clock); the monitor's own share of the loop's time (both by its
    own clock, the thread's CPU time); its interval at the end."""
    opt = optimist.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.functional.cross_entropy
    start, own_clock = _clock(), clock()
    share, interval = 0.0, 0
    if every is None:
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        with watch(model, opt, every=every) as m:
            for _ in range(steps):
                loss = loss_fn(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                m.log_loss(loss)
        share = m.own_time / (clock() - own_clock)
        interval = m.every
    return (_clock() - start) / steps, share, interval


def unsampled_step_cost(rounds: int = 5, n: int = 20000) -> float:
    """Microseconds an unsampled step adds: the optimizer hooks and ``log_loss`` (best of)."""
    net = nn.Linear(4, 2)
    opt = optimist.optim.SGD(net.parameters(), lr=0.0)
    net(torch.ones(1, 4)).sum().backward()
    loss = torch.tensor(1.0)

    def best(fn) -> float:
        times = []
        for _ in range(rounds):
            start = _clock()
            for _ in range(n):
                fn()
            times.append((_clock() - start) / n)
        return min(times)

    plain = best(opt.step)
    with watch(net, opt, every=10**9) as m:
        opt.step()  # step 0 is sampled

        def watched() -> None:
            opt.step()
            m.log_loss(loss)

        hooked = best(watched)
    return (hooked - plain) * 1e6


def measure_loop(key: str, every: int | str, rounds: int, steps: int) -> dict[str, float]:
    """Interleaved rounds of the plain and the monitored loop on model ``key``."""
    _, make, shape, batch = _models()[key]
    torch.manual_seed(0)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    _loop_time(make(), x, y, 5, None)  # warm-up
    plain, watched, shares, intervals = [], [], [], []
    for k in range(rounds):
        for monitored in (k % 2 == 1, k % 2 == 0):  # alternate which of the two runs first
            torch.manual_seed(0)
            t, share, interval = _loop_time(make(), x, y, steps, every if monitored else None)
            if monitored:
                watched.append(t)
                shares.append(share)
                intervals.append(interval)
            else:
                plain.append(t)
    return {
        "plain": min(plain),
        "watched": min(watched),
        "overhead": min(watched) / min(plain) - 1.0,
        "share": statistics.median(shares),
        "every": statistics.median(intervals),
    }


def measure_fit(rounds: int) -> dict[str, float]:
    """``fit`` on digits (3 epochs, batch 32, Adam) with the default light Monitor and without."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype("float32"), d.target
    times: dict[bool, list[float]] = {False: [], True: []}
    shares = []
    for k in range(rounds):
        for monitor in (k % 2 == 1, k % 2 == 0):  # alternate which of the two runs first
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
            mon = Monitor() if monitor else None  # what fit adds by default, kept to read it
            start, own_clock = _clock(), clock()
            optimist.fit(
                net,
                x,
                y,
                optimizer="adam",
                loss=optimist.losses.SparseCategoricalCrossentropy(from_logits=True),
                epochs=3,
                batch_size=32,
                verbose=0,
                monitor=monitor,
                callbacks=[mon] if mon else None,
            )
            times[monitor].append(_clock() - start)
            if mon is not None and mon.watch is not None:
                shares.append(mon.watch.own_time / (clock() - own_clock))
    return {
        "plain": min(times[False]),
        "watched": min(times[True]),
        "overhead": min(times[True]) / min(times[False]) - 1.0,
        "share": statistics.median(shares),
    }


def main(argv: list[str] | None = None) -> int:
    global _clock
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", default=str(DEFAULT_EVERY), help="intervals, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument(
        "--models",
        default="tiny,mlp,cnn,fit",
        help="comma-separated, of: tiny, mlp, cnn, fit (fit on digits)",
    )
    args = parser.parse_args(argv)
    keys = args.models.split(",")
    unknown = sorted(set(keys) - {*_models(), "fit"})
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from tiny, mlp, cnn, fit")
    _clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    intervals = [v if v == "auto" else int(v) for v in args.every.split(",")]
    print(
        f"torch threads: {args.threads}, {args.rounds} rounds of {args.steps} steps, Adam, "
        f"clock: {args.clock}, overhead = min(monitored) / min(plain) - 1"
    )
    print(f"an unsampled step's hook and log_loss: {unsampled_step_cost():.2f} us")
    print(
        "\n| model | every | plain step | monitored step | overhead | monitor's own time |"
        "\n|---|---|---|---|---|---|"
    )
    for key in keys:
        if key == "fit":
            continue
        for every in intervals:
            r = measure_loop(key, every, args.rounds, args.steps)
            shown = f"auto ({r['every']:.0f})" if every == "auto" else str(every)
            print(
                f"| {_models()[key][0]} | {shown} | {r['plain'] * 1e3:.3f} ms | "
                f"{r['watched'] * 1e3:.3f} ms | {r['overhead']:+.1%} | {r['share']:.1%} |"
            )
    if "fit" in keys:
        r = measure_fit(args.rounds)
        print(
            f"| fit, digits, 3 epochs (default light Monitor vs monitor=False) | {DEFAULT_EVERY} | "
            f"{r['plain']:.3f} s | {r['watched']:.3f} s | {r['overhead']:+.1%} | "
            f"{r['share']:.1%} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
