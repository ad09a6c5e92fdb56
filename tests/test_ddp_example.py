"""The README's DDP recipe (examples/ddp_mnist.py) under torchrun: 2 gloo processes on loopback.

A worker killed mid-epoch makes torchrun fail with a report; started again, the run resumes from
the last finished epoch's checkpoint and ends with exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_mnist.py"
pytestmark = pytest.mark.slow


def torchrun(out: Path, fail_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OPTIMIST_EXAMPLE_FAIL_AT", None)
    if fail_at:
        env["OPTIMIST_EXAMPLE_FAIL_AT"] = fail_at
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "--max-restarts", "0", str(EXAMPLE), "--out", str(out), "--epochs", "2",
               "--samples", "256"]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)


def weights(checkpoint: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    target = tmp_path / f"{checkpoint.parent.name}-{checkpoint.name}.pt"
    dcp_to_torch_save(checkpoint, target)
    return torch.load(target, weights_only=False)["train"]["model"]


def test_killed_worker_is_reported_and_the_restart_resumes_from_the_last_epoch(tmp_path):
    clean = torchrun(tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert "epoch 2: loss" in clean.stdout and clean.stdout.count("epoch") == 2  # rank 0 only

    broken = tmp_path / "broken"
    failed = torchrun(broken, fail_at="2:1")
    assert failed.returncode != 0
    assert "exitcode  : 3" in failed.stderr  # torchrun's failure report names the worker's exit
    assert (broken / "epoch1" / ".metadata").exists() and not (broken / "epoch2").exists()

    resumed = torchrun(broken)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed after epoch 1" in resumed.stdout and "epoch 1:" not in resumed.stdout
    want = weights(tmp_path / "clean" / "epoch2", tmp_path)
    got = weights(broken / "epoch2", tmp_path)
    assert want.keys() == got.keys() and want
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
