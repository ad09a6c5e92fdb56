"""Plain-PyTorch DDP with an optimist optimizer, launched by torchrun, resumable.

    torchrun --standalone --nproc-per-node 2 examples/ddp_mnist.py --out runs/ddp   # CPU: gloo
    torchrun --standalone --nproc-per-node 8 examples/ddp_mnist.py --out runs/ddp   # GPUs: NCCL

An MNIST MLP, each rank training on its own slice of every batch (``DistributedSampler``);
``DistributedDataParallel`` averages the gradients, so every rank applies the same optimist step.
After each epoch all ranks save a ``torch.distributed.checkpoint`` to ``OUT/epoch<N>`` (model,
optimizer, sampler epoch); started again with the same ``--out`` it resumes after the last
complete checkpoint. Rank 0 alone prints.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import optimist
from optimist.datasets import mnist
from optimist.optim.checkpoint import TrainState


def last_epoch(out: Path) -> int:
    """Number of the last epoch whose checkpoint is complete (DCP writes ``.metadata`` last)."""
    done = [int(p.parent.name[5:]) for p in out.glob("epoch*/.metadata")]
    return max(done, default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048, help="MNIST training images used")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        train(args, torch.device("cuda" if cuda else "cpu"))
    finally:
        # after train() returned: DDP and its reducer are gone before the group is torn down
        # (destroying them afterwards can hang in gloo)
        dist.destroy_process_group()


def train(args: argparse.Namespace, device: torch.device) -> None:
    """The epochs from the last checkpoint on, a checkpoint after each."""
    rank, world = dist.get_rank(), dist.get_world_size()

    (x, y), _ = mnist.load_data(copy=False)
    x = torch.from_numpy(np.asarray(x[: args.samples], dtype=np.float32) / 255.0)
    labels = torch.from_numpy(y[: args.samples].astype(np.int64))
    data = TensorDataset(x.reshape(len(x), -1), labels)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=args.batch_size // world, sampler=sampler)

    torch.manual_seed(0)  # the same initial weights on every rank
    layers = [torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)]
    model = torch.nn.Sequential(*layers)
    model = DistributedDataParallel(model.to(device))
    opt = optimist.optimizer(args.optimizer, model.parameters(), lr=args.lr)

    start = last_epoch(args.out)
    if start:
        dcp.load({"train": TrainState(model, opt)}, checkpoint_id=args.out / f"epoch{start}")
        if rank == 0:
            print(f"resumed after epoch {start}", flush=True)
    kill_at = os.environ.get("OPTIMIST_EXAMPLE_FAIL_AT")  # tests: "epoch:step" kills rank 1
    for epoch in range(start + 1, args.epochs + 1):
        sampler.set_epoch(epoch)
        total = torch.zeros(2, device=device)
        for step, (xb, yb) in enumerate(loader):
            if kill_at == f"{epoch}:{step}" and rank == 1:
                os._exit(3)
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            total += torch.stack([loss.detach() * len(yb), torch.tensor(len(yb), device=device)])
        dist.all_reduce(total)  # the epoch's mean loss over every rank's samples
        dcp.save({"train": TrainState(model, opt)}, checkpoint_id=args.out / f"epoch{epoch}")
        if rank == 0:
            print(f"epoch {epoch}: loss {float(total[0] / total[1]):.4f}", flush=True)


if __name__ == "__main__":
    main()
