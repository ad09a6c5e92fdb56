"""Fixtures of the comparison tests: one tiny study, run once per session and shared."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `from helpers import ...`

# The tiny study: a 2-D function and scikit-learn's digits (always available, no download),
# three methods, a 3-point LR grid with successive halving, two seeds.
TINY_ARGS = [
    "compare",
    "--task",
    "rosenbrock,digits-mlp",
    "--optimizers",
    "gd,momentum,adam",
    "--tune",
    "--grid-size",
    "3",
    "--seeds",
    "2",
    "--budget-steps",
    "120",
    "--evals",
    "12",
]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``python -m optimist ARGS`` in a subprocess (text output captured)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "optimist", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kwargs,
    )


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """Output folder of the tiny study run with one worker (the reference result)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    proc = run_cli([*TINY_ARGS, "--out", str(out), "--quiet", "--workers", "1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def comparable(document: dict) -> dict:
    """The deterministic part of a results document (wall times and paths removed)."""

    def run_key(r):
        return (r["task"], r["method"], r["phase"], str(r["seed"]), r["lr"])

    def strip_run(r):
        final = (
            None
            if r["final"] is None
            else {
                k: v
                for k, v in r["final"].items()
                if k not in ("time_s", "steps_per_s", "examples_per_s", "time_to_target_s")
            }
        )
        curves = (
            None if r["curves"] is None else {k: v for k, v in r["curves"].items() if k != "time_s"}
        )
        return {
            "key": run_key(r),
            "state": r["state"],
            "objective": r["objective"],
            "final": final,
            "curves": curves,
            "trajectory": r["trajectory"],
            "monitor": r.get("monitor"),
        }

    def strip_row(row):
        return {
            k: v
            for k, v in row.items()
            if k not in ("time_to_target_s", "steps_per_s", "examples_per_s", "time_s")
        }

    return {
        "runs": sorted((strip_run(r) for r in document["runs"]), key=lambda r: r["key"]),
        "tuning": sorted((strip_run(r) for r in document["tuning"]), key=lambda r: r["key"]),
        "summary": [strip_row(r) for r in document["summary"]],
        "recommendations": document["recommendations"],
    }


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Trials run with one torch thread (as the comparison itself runs them): on a shared
    2-core machine more threads only fight each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
