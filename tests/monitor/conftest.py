"""Fixtures of the monitor tests; the labelled cases come from the accuracy benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # for `from helpers import ...`


@pytest.fixture(scope="session")
def bench():
    """``benchmarks/monitor_accuracy.py`` as a module: its cases are the constructed runs."""
    spec = importlib.util.spec_from_file_location(
        "monitor_accuracy", ROOT / "benchmarks" / "monitor_accuracy.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["monitor_accuracy"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    # small models: one thread is faster than several competing for a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
