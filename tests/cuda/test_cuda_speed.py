"""benchmarks/cuda_speed.py runs (on the CPU here, at a tiny size) and prints its table."""

from __future__ import annotations

import pytest

from helpers import benchmark


def _module():
    return benchmark("cuda_speed")


@pytest.mark.slow  # end to end: imports every peer package step_speed.py knows
def test_cuda_speed_runs_on_the_cpu_and_prints_one_row_per_optimizer(capsys):
    cuda_speed = _module()
    argv = ["--device", "cpu", "--sizes", "5K", "--optimizers", "adam,adafactor"]
    argv += ["--rounds", "1", "--steps", "2", "--warmup", "0", "--copy-elements", "1000"]
    assert cuda_speed.main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| optimizer | params/tensors | optimist ms")
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| adam", "| adafactor"]
    adam = lines[1].split(" | ")
    from optimist.optim import engine

    want = "C++ engine" if engine.available() else "torch ops per tensor"
    assert adam[4] == want and float(adam[2]) > 0  # the CPU's default dispatch
    assert float(adam[5]) > 0  # torch.optim's foreach step was timed


def test_cuda_speed_budget_leaves_rows_out_and_says_so(capsys):
    cuda_speed = _module()
    argv = ["--device", "cpu", "--sizes", "5K", "--optimizers", "adam,lion", "--budget", "0"]
    argv += ["--rounds", "1", "--steps", "1", "--warmup", "0", "--copy-elements", "1000"]
    assert cuda_speed.main(argv) == 0
    assert "Left out by the --budget of 0 s: adam@5K, lion@5K." in capsys.readouterr().out
