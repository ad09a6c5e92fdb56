"""Does low-precision optimizer state change the result? Final losses with float32/bf16/int8 state.

Two real tasks, each trained three times with the same seed, data order and initial weights,
changing only ``state_dtype`` of ``optimist.optim.Adam`` (lr 1e-3):

* ``mnist-mlp``: 784-512-256-10 ReLU MLP on the first 20,000 MNIST training images, batch 64,
  2 epochs; the loss on the 10,000 test images (the three big weight matrices hold int8 state,
  the biases stay float32: under 4096 elements);
* ``char-lm``: a character-level language model on Shakespeare (embedding 64, context 32 chars
  flattened, 512-unit hidden layer, next-character softmax), 1,500 steps of batch 64 from the
  first 2M characters; the loss on held-out text.

It prints the final losses, the relative difference to the float32 run (target: within 1%) and
the optimizer-state bytes.

    python benchmarks/state_precision.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from optimist.datasets import mnist, shakespeare
from optimist.optim import Adam

STATE_DTYPES = (None, "bfloat16", "int8")


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for k, t in s.items()
        if isinstance(t, torch.Tensor) and k != "step"
    )


def train(model_fn, batches, evaluate, state_dtype, seed: int) -> tuple[float, int]:
    torch.manual_seed(seed)
    model = model_fn()
    opt = Adam(model.parameters(), lr=1e-3, state_dtype=state_dtype)
    for x, y in batches():
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return evaluate(model), state_bytes(opt)


def mnist_task(seed: int):
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x = torch.tensor(x_train[:20_000].reshape(-1, 784), dtype=torch.float32) / 255.0
    y = torch.tensor(y_train[:20_000], dtype=torch.int64)
    xt = torch.tensor(x_test.reshape(-1, 784), dtype=torch.float32) / 255.0
    yt = torch.tensor(y_test, dtype=torch.int64)

    def model_fn():
        return nn.Sequential(
            nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def batches():
        gen = torch.Generator().manual_seed(seed)
        for _ in range(2):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), 64):
                idx = order[i : i + 64]
                yield x[idx], y[idx]

    def evaluate(model):
        return nn.functional.cross_entropy(model(xt), yt).item()

    return model_fn, batches, evaluate


def char_task(seed: int):
    context = 32
    (x_train, y_train), (x_test, y_test) = shakespeare.load_data(
        seq_len=context, step=1, max_chars=2_000_000
    )
    vocab = int(max(x_train.max(), x_test.max())) + 1
    x, y = torch.from_numpy(x_train), torch.from_numpy(y_train[:, -1].copy())
    rng = np.random.default_rng(0)
    pick = rng.choice(len(x_test), size=5000, replace=False)
    xt, yt = torch.from_numpy(x_test[pick]), torch.from_numpy(y_test[pick, -1].copy())

    def model_fn():
        return nn.Sequential(
            nn.Embedding(vocab, 64),
            nn.Flatten(),
            nn.Linear(64 * context, 512),
            nn.ReLU(),
            nn.Linear(512, vocab),
        )

    def batches():
        gen = torch.Generator().manual_seed(seed)
        for _ in range(1500):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            yield x[idx], y[idx]

    def evaluate(model):
        return nn.functional.cross_entropy(model(xt), yt).item()

    return model_fn, batches, evaluate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default="mnist-mlp,char-lm")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("| task | state_dtype | final loss | vs float32 | state bytes | of float32 | time s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    tasks = {"mnist-mlp": mnist_task, "char-lm": char_task}
    for name in args.tasks.split(","):
        task = tasks[name]
        model_fn, batches, evaluate = task(args.seed)
        base_loss = base_bytes = None
        for sd in STATE_DTYPES:
            t0 = time.perf_counter()
            loss, nbytes = train(model_fn, batches, evaluate, sd, args.seed)
            seconds = time.perf_counter() - t0
            if sd is None:
                base_loss, base_bytes = loss, nbytes
            rel = (loss - base_loss) / base_loss
            print(
                f"| {name} | {sd or 'float32'} | {loss:.4f} | {rel:+.2%} | {nbytes:,} | "
                f"{nbytes / base_bytes:.0%} | {seconds:.1f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
