"""Fixtures of the monitor tests; the labelled cases come from the accuracy benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # for `from helpers import ...`

from helpers import benchmark  # noqa: E402


@pytest.fixture(scope="session")
def bench():
    """``benchmarks/monitor_accuracy.py`` as a module: its cases are the constructed runs."""
    return benchmark("monitor_accuracy")


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # small models: one thread is faster than several competing for a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
