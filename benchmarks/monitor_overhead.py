"""What does the training monitor cost? Step time with and without ``optimist.monitor.watch``.

For each model a plain training loop (forward, backward, ``step``, ``log_loss``-free) and the same
loop under ``watch(model, optimizer, every=k)`` with ``m.log_loss(loss)`` each step are timed in
alternating rounds (so machine load hits both alike), in CPU time of the process (one torch
thread: the run's own compute, far steadier than wall time on a shared machine); the overhead is
the median over rounds of (monitored - plain) / plain. On a busy machine that difference is
noisy, so the monitor's own time is printed as well: the wall time it counted in its readings
(``Watch.own_time``) over the monitored loop's wall time, and the cost of an unsampled step's
hooks plus ``log_loss`` (a tight loop, best of 5). Also ``fit`` with its default light Monitor
against ``fit(..., monitor=False)``.

    python benchmarks/monitor_overhead.py                 # the default interval (every="auto")
    python benchmarks/monitor_overhead.py --every 10,auto --steps 600 --rounds 5
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
from optimist.monitor import watch
from optimist.monitor.watch import DEFAULT_EVERY


def _clock() -> float:
    return time.process_time()


def _models() -> dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]]:
    """name -> (model factory, input shape without batch, batch size)."""
    return {
        "mlp 64-64-10 (digits-sized), batch 32": (
            lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
            (64,),
            32,
        ),
        "mlp 784-256-256-10, batch 128": (
            lambda: nn.Sequential(
                nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
            ),
            (784,),
            128,
        ),
        "cnn 2 conv + dense (28x28), batch 32": (
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
):
    opt = optimist.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.functional.cross_entropy
    start, wall = _clock(), time.perf_counter()
    share = 0.0
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
        share = m.own_time / (time.perf_counter() - wall)
    return (_clock() - start) / steps, share


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


def measure_loop(
    name: str, every: int | str, rounds: int, steps: int
) -> tuple[float, float, float, float]:
    make, shape, batch = _models()[name]
    torch.manual_seed(0)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    _loop_time(make(), x, y, 5, None)  # warm-up
    plain, watched, ratios, shares = [], [], [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        a, _ = _loop_time(make(), x, y, steps, None)
        torch.manual_seed(0)
        b, share = _loop_time(make(), x, y, steps, every)
        plain.append(a)
        watched.append(b)
        ratios.append((b - a) / a)
        shares.append(share)
    return (
        statistics.median(plain),
        statistics.median(watched),
        statistics.median(ratios),
        statistics.median(shares),
    )


def measure_fit(rounds: int) -> tuple[float, float, float]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype("float32"), d.target
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios = []
    for _ in range(rounds):
        for monitor in (False, True):
            torch.manual_seed(0)
            net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
            start = _clock()
            optimist.fit(
                net,
                x,
                y,
                optimizer="adam",
                loss="sparse_categorical_crossentropy",
                epochs=3,
                batch_size=32,
                verbose=0,
                monitor=monitor,
            )
            times[monitor].append(_clock() - start)
        ratios.append((times[True][-1] - times[False][-1]) / times[False][-1])
    return (
        statistics.median(times[False]),
        statistics.median(times[True]),
        statistics.median(ratios),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", default=str(DEFAULT_EVERY), help="intervals, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    intervals = [v if v == "auto" else int(v) for v in args.every.split(",")]
    print(f"torch threads: {args.threads}, {args.rounds} rounds of {args.steps} steps, Adam")
    print(f"an unsampled step's hooks and log_loss: {unsampled_step_cost():.2f} us")
    print("\n| model | every | plain step | monitored step | overhead | monitor's own time |")
    print("|---|---|---|---|---|---|")
    for name in _models():
        for every in intervals:
            plain, watched, ratio, share = measure_loop(name, every, args.rounds, args.steps)
            print(
                f"| {name} | {every} | {plain * 1e3:.3f} ms | {watched * 1e3:.3f} ms | "
                f"{ratio:+.1%} | {share:.1%} |"
            )
    plain, watched, ratio = measure_fit(args.rounds)
    print(
        f"| fit, digits, 3 epochs (default light Monitor vs monitor=False) | {DEFAULT_EVERY} | "
        f"{plain:.3f} s | {watched:.3f} s | {ratio:+.1%} | – |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
