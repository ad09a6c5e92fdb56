"""Train one small model with every optimizer optimist has, and print the final losses.

    python examples/demo.py            # scikit-learn's 8x8 digits, a 64-32-10 MLP, 20 epochs

Each optimizer starts from the same weights and sees the same mini-batches; learning rates are
each optimizer's default (see ``optimist.optimizers()``), so this is a smoke test of the
optimizers, not a fair ranking: ``optimist compare --tune`` is the fair one.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import optimist
from optimist.datasets import digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = digits.load_data()
    x_train = torch.tensor(x_train.reshape(len(x_train), -1), dtype=torch.float32) / 16.0
    x_test = torch.tensor(x_test.reshape(len(x_test), -1), dtype=torch.float32) / 16.0
    y_train, y_test = torch.tensor(y_train).long(), torch.tensor(y_test).long()

    torch.manual_seed(0)
    template = torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x_train)
    print(f"digits: {n} train / {len(x_test)} test, {args.epochs} epochs, batch {args.batch_size}")
    names = list(optimist.optimizers())
    width = max(len("optimizer"), *(len(name) for name in names))
    header = f"{'train loss':>10} {'test loss':>10} {'test acc':>9} {'time':>7}"
    print(f"{'optimizer':<{width}} {header}")
    for name in names:
        model = copy.deepcopy(template)
        opt = optimist.optimizer(name, model.parameters())
        generator = torch.Generator().manual_seed(1)
        start = time.perf_counter()
        batch = n if name == "gd" else args.batch_size
        for _ in range(args.epochs):
            order = torch.randperm(n, generator=generator)
            for i in range(0, n, batch):
                index = order[i : i + batch]
                opt.zero_grad()
                loss = loss_fn(model(x_train[index]), y_train[index])
                loss.backward()
                opt.step()
        elapsed = time.perf_counter() - start
        if callable(getattr(opt, "eval", None)):  # Schedule-Free: evaluate the averaged weights
            opt.eval()
        with torch.no_grad():
            train_loss = loss_fn(model(x_train), y_train).item()
            logits = model(x_test)
            test_loss = loss_fn(logits, y_test).item()
            accuracy = (logits.argmax(1) == y_test).float().mean().item()
        numbers = f"{train_loss:>10.4f} {test_loss:>10.4f} {accuracy:>9.3f} {elapsed:>6.1f}s"
        print(f"{name:<{width}} {numbers}")


if __name__ == "__main__":
    main()
