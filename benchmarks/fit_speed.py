"""How much does ``model.fit`` cost over a hand-written PyTorch loop?

One epoch of the classic Keras MNIST example (784-10-10 MLP, relu/softmax, categorical
cross-entropy + accuracy, SGD lr=0.01, batch 32, 60,000 images) is timed through:

* ``plain loop``: what a PyTorch user writes (``nn.Sequential``, ``randperm`` indexing,
  ``F.cross_entropy``, ``zero_grad`` / ``backward`` / ``step`` with the same optimizer class,
  ``.item()`` per batch for loss and accuracy): the baseline of the "vs plain loop" column;
* ``hand loop``: the same optimist model and optimizer driven by hand: a ``randperm`` from a
  generator, ``index_select`` batches, ``zero_grad`` / forward to logits / ``F.cross_entropy`` /
  ``backward`` / ``step``, loss and accuracy summed on tensors -- the work ``fit`` does;
* ``fit verbose=0`` and ``fit verbose=1`` (the tqdm bar and the epoch's summary line go to
  /dev/null so the table stays readable; the bar is refreshed at most 10 times a second), both
  with fit's defaults (the light ``optimist.monitor.Monitor`` included), and ``fit verbose=1
  monitor=False`` to show what the monitor costs;
* Keras 3 on its torch backend, when ``import keras`` works (``pip install keras``; this script
  sets ``KERAS_BACKEND=torch``), else a line saying why it was skipped.

Contenders run one epoch each in turn, ``--rounds`` times (interleaved, so a change of load
hits all); the table shows medians. "fit call" is the whole ``fit(epochs=1)`` call (input checks
included), "epoch" the epoch alone (from ``on_epoch_begin`` to ``on_epoch_end``), "vs plain
loop" the median over rounds of each round's fit-call time over the plain loop's.

``--clock cpu`` times with the calling thread's CPU time (``time.thread_time``) instead of the
wall clock: on a shared machine other processes then add little noise (use it with
``--threads 1``, where torch computes on the calling thread; Keras' own threads are not counted).

    python benchmarks/fit_speed.py [--rounds 7] [--threads N] [--no-keras] [--clock cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import optimist  # noqa: E402
from optimist.layers import Dense  # noqa: E402
from optimist.training.callbacks import Callback  # noqa: E402
from optimist.utils import to_categorical  # noqa: E402

BATCH = 32
clock = time.perf_counter  # --clock cpu: time.thread_time


def load() -> tuple[np.ndarray, np.ndarray]:
    from optimist.datasets import mnist

    (x, y), _ = mnist.load_data()
    return (x.reshape(-1, 784) / 255.0).astype(np.float32), to_categorical(y, 10)


def make_model() -> optimist.Sequential:
    torch.manual_seed(0)
    return optimist.Sequential(
        [Dense(10, activation="relu", input_shape=(784,)), Dense(10, activation="softmax")]
    )


class EpochTimer(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = clock()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(clock() - self.start)


class HandLoop:
    name = "hand loop (PyTorch)"

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.model = make_model()
        self.opt = optimist.optim.optimizer("sgd", self.model.parameters())
        self.gen = torch.Generator().manual_seed(0)
        self.epoch_times: list[float] = []
        self.call_times: list[float] = []
        self.accuracy = float("nan")

    def run(self) -> None:
        start = clock()
        model, opt, x, y = self.model, self.opt, self.x, self.y
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.float64)
        seen = 0
        for idx in torch.randperm(len(x), generator=self.gen).split(BATCH):
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            opt.zero_grad()
            logits = model._forward_logits(xb)  # the model minus its final softmax
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            n = xb.shape[0]
            seen += n
            loss_sum.add_(loss.detach(), alpha=n)
            out = logits.detach()
            correct.add_((out.argmax(-1) == yb.argmax(-1)).sum())
        self.accuracy = float(correct) / seen
        _ = float(loss_sum) / seen
        elapsed = clock() - start
        self.epoch_times.append(elapsed)
        self.call_times.append(elapsed)


class PlainLoop:
    """The loop a PyTorch user writes: a plain ``nn.Sequential`` of the same shape, ``randperm``
    indexing, forward, ``F.cross_entropy`` on the labels, ``zero_grad`` / ``backward`` /
    ``step`` (the same optimizer class), and ``.item()`` per batch for the accuracy."""

    name = "plain PyTorch loop"

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.labels = torch.from_numpy(x), torch.from_numpy(y.argmax(-1))
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Linear(784, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10)
        )
        self.opt = optimist.optim.SGD(self.model.parameters(), lr=0.01)
        self.epoch_times: list[float] = []
        self.call_times: list[float] = []
        self.accuracy = float("nan")

    def run(self) -> None:
        start = clock()
        model, opt, x, labels = self.model, self.opt, self.x, self.labels
        model.train()
        perm = torch.randperm(len(x))
        correct = total_loss = 0.0
        for i in range(0, len(x), BATCH):
            idx = perm[i : i + BATCH]
            xb, yb = x[idx], labels[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        self.accuracy = correct / len(x)
        elapsed = clock() - start
        self.epoch_times.append(elapsed)
        self.call_times.append(elapsed)


class Fit:
    def __init__(self, x: np.ndarray, y: np.ndarray, verbose: int, monitor: bool = True) -> None:
        self.name = f"optimist fit verbose={verbose}" + ("" if monitor else " monitor=False")
        self.x, self.y, self.verbose, self.monitor = x, y, verbose, monitor
        self.model = make_model()
        self.model.compile("sgd", "categorical_crossentropy", ["accuracy"])
        self.timer = EpochTimer()
        self.call_times: list[float] = []
        self.accuracy = float("nan")

    @property
    def epoch_times(self) -> list[float]:
        return self.timer.times

    def run(self) -> None:
        with (
            open(os.devnull, "w") as sink,
            contextlib.redirect_stderr(sink),
            contextlib.redirect_stdout(sink),
        ):
            start = clock()
            history = self.model.fit(
                self.x,
                self.y,
                batch_size=BATCH,
                epochs=1,
                verbose=self.verbose,
                callbacks=[self.timer],
                monitor=self.monitor,
            )
            self.call_times.append(clock() - start)
        self.accuracy = history.history["accuracy"][-1]


class KerasFit:
    name = "Keras 3 fit (torch backend)"

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        import keras

        self.keras = keras
        self.version = keras.__version__
        keras.utils.set_random_seed(0)
        self.model = keras.Sequential(
            [
                keras.Input(shape=(784,)),
                keras.layers.Dense(10, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        self.model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        self.x, self.y = x, y
        self.epoch_times: list[float] = []
        self.call_times: list[float] = []
        self.accuracy = float("nan")
        outer = self

        class Timer(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.start = clock()

            def on_epoch_end(self, epoch, logs=None):
                outer.epoch_times.append(clock() - self.start)

        self.timer = Timer()

    def run(self) -> None:
        start = clock()
        history = self.model.fit(
            self.x, self.y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[self.timer]
        )
        self.call_times.append(clock() - start)
        self.accuracy = history.history["accuracy"][-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="epochs per contender (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-keras", action="store_true", help="leave Keras out")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="wall time or thread CPU time"
    )
    args = parser.parse_args(argv)
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)

    x, y = load()
    contenders: list = [
        PlainLoop(x, y),
        HandLoop(x, y),
        Fit(x, y, 0),
        Fit(x, y, 1),
        Fit(x, y, 1, monitor=False),
    ]
    keras_note = ""
    if args.no_keras:
        keras_note = "Keras 3: skipped (--no-keras)"
    else:
        try:
            keras_fit = KerasFit(x, y)
        except Exception as exc:  # noqa: BLE001 - any import/backend failure means "skip"
            keras_note = f"Keras 3: skipped ({type(exc).__name__}: {exc})"
        else:
            contenders.append(keras_fit)
            keras_note = f"Keras {keras_fit.version} on the torch backend"

    # warm-up epoch each (kernel compilation, allocator), not timed
    for c in contenders:
        c.run()
        c.epoch_times.clear()
        c.call_times.clear()
    for _ in range(args.rounds):
        for c in contenders:
            c.run()

    # each round's ratio to the plain loop run just before it, so that load changing over
    # the run (a shared machine) cancels out; the median of those ratios
    plain = contenders[0].call_times

    def ratio(c: Any) -> float:
        return statistics.median(t / p for t, p in zip(c.call_times, plain, strict=True))

    print(
        f"MNIST 60,000 x 784 -> Dense(10, relu) -> Dense(10, softmax), SGD lr=0.01, batch {BATCH},"
        f" {len(x) // BATCH + 1} steps/epoch; median of {args.rounds} epochs; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock"
    )
    header = (
        f"| {'contender':<36} | {'fit call ms':>11} | {'epoch ms':>9} | {'vs plain loop':>13} |"
        f" {'accuracy':>8} |"
    )
    print(header)
    print(f"|{'-' * 38}|{'-' * 12}:|{'-' * 10}:|{'-' * 14}:|{'-' * 9}:|")
    for c in contenders:
        call = statistics.median(c.call_times)
        epoch = statistics.median(c.epoch_times)
        print(
            f"| {c.name:<36} | {1000 * call:>11.0f} | {1000 * epoch:>9.0f} | "
            f"{ratio(c):>12.3f}x | {c.accuracy:>8.4f} |"
        )
    print(keras_note)
    spread = {c.name: [round(1000 * t) for t in c.call_times] for c in contenders}
    print("all fit-call times (ms):", spread, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
