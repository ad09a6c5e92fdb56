"""One training step of the 784-10-10 MLP with optimist's ``Dense`` layers against ``nn.Linear``.

Isolates what the model costs in ``benchmarks/fit_speed.py``: the same forward / cross-entropy /
``zero_grad`` / ``backward`` / SGD ``step`` on batches of 32, timed with the thread's CPU time
(``--threads 1``), for ``nn.Linear`` layers (weights ``(out, in)``), optimist's ``Dense`` (its
parameter stored ``(units, in)`` as ``nn.Linear``'s, behind Keras' ``(in, units)`` kernel view)
and, for comparison, leaf kernels stored in Keras' ``(in, units)`` layout through a bare
``torch.addmm`` (what ``Dense`` computed before: its backward matmuls are slower). Median and
best microseconds per step over interleaved rounds.

    python benchmarks/dense_vs_linear.py [--rounds 15] [--steps 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, labels = torch.rand(4096, 784), torch.randint(0, 10, (4096,))
    linear = torch.nn.Sequential(torch.nn.Linear(784, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10))
    dense = optimist.Sequential(
        [Dense(10, activation="relu", input_shape=(784,)), Dense(10, activation="softmax")]
    )
    dense.train()
    d0, d1 = dense.layers

    # the same numbers as leaf tensors in Keras' (in, units) layout
    keras = [
        t.detach().clone().contiguous().requires_grad_()
        for t in (d0.kernel, d0.bias, d1.kernel, d1.bias)
    ]

    def keras_layout(xb: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.addmm(keras[1], xb, keras[0]))
        return torch.addmm(keras[3], h, keras[2])

    contenders = {
        "nn.Linear": (linear, optimist.optim.SGD(linear.parameters(), lr=0.01)),
        "Dense": (dense._forward_logits, optimist.optim.SGD(dense.parameters(), lr=0.01)),
        "(in, units) kernels, addmm": (keras_layout, optimist.optim.SGD(keras, lr=0.01)),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}

    def run(forward, opt) -> None:
        for i in range(args.steps):
            start = (i * 32) % (len(x) - 32)
            xb, yb = x[start : start + 32], labels[start : start + 32]
            loss = F.cross_entropy(forward(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()

    for _ in range(args.rounds + 1):  # the first round warms up
        for name, (forward, opt) in contenders.items():
            t = time.thread_time()
            run(forward, opt)
            times[name].append((time.thread_time() - t) / args.steps * 1e6)
    print(f"µs per training step (thread CPU time), {args.rounds} rounds of {args.steps} steps")
    base = statistics.median(times["nn.Linear"][1:])
    for name, values in times.items():
        med = statistics.median(values[1:])
        print(f"{name:<28} median {med:7.1f}  best {min(values[1:]):7.1f}  {med / base:.3f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
