"""``fit(..., strategy="ddp")`` under torchrun, with ``BackupAndRestore``: a crash loses no epoch.

    torchrun --standalone --nproc-per-node 2 examples/ddp_fit.py --out runs/ddp_fit   # CPU: gloo

Each rank trains an MNIST MLP (float64) on its half of every global batch; rank 0 prints and
writes. ``BackupAndRestore`` backs the training state up after every epoch in ``OUT/backup``;
if a worker dies, torchrun stops the job and reports it, and the same command started again
resumes after the last finished epoch and ends exactly where an uninterrupted run ends. The
trained model is saved to ``OUT/model.pt`` (rank 0).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import optimist
from optimist.callbacks import BackupAndRestore, Callback
from optimist.datasets import mnist
from optimist.layers import Dense


class KillRank1(Callback):
    """For the tests: rank 1 dies (exit code 3) before batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if (self.current, batch) == (self.epoch, self.batch) and dist.get_rank() == 1:
            os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1024, help="MNIST training images used")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    args = parser.parse_args()

    dist.init_process_group("gloo")  # torchrun's environment (add NCCL + set_device on GPUs)
    try:
        (x, y), _ = mnist.load_data(copy=False)
        x = np.asarray(x[: args.samples], dtype=np.float64).reshape(args.samples, -1) / 255.0
        torch.manual_seed(0)  # the same initial weights on every rank
        model = optimist.Sequential(
            [Dense(64, activation="relu", input_shape=(784,)), Dense(10, activation="softmax")]
        ).double()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
        callbacks: list[Callback] = [BackupAndRestore(args.out / "backup")]
        kill_at = os.environ.get("OPTIMIST_EXAMPLE_FAIL_AT")  # tests: "epoch:batch", 0-based
        if kill_at:
            callbacks.append(KillRank1(*map(int, kill_at.split(":"))))
        model.fit(x, y[: args.samples], batch_size=args.batch_size, epochs=args.epochs,
                  verbose=2, callbacks=callbacks, strategy="ddp", monitor=False)  # fmt: skip
        if dist.get_rank() == 0:
            model.save(args.out / "model.pt")
        dist.barrier()  # no rank tears its connections down while another still uses them
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
