"""Keras 3 (torch backend) as the oracle, when it is installed."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on its torch backend, or skip (``pip install keras``; the dev extra has it)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on the {keras.backend.backend()} backend, not torch")
    return keras
