"""Keras 3 (torch backend) as the oracle, when it is installed."""

from __future__ import annotations

import os

import pytest
import torch

from helpers import KERAS_NUMPY2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that run Keras as their oracle ignore Keras's NumPy 2 warning (see helpers)."""
    for item in items:
        if "keras" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.filterwarnings(KERAS_NUMPY2))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _on_cpu(monkeypatch):
    """These tests compare with Keras and hand-written loops on the CPU: on a GPU machine a
    Keras-style model would otherwise build on the GPU (Keras 3's rule)."""
    if "KERAS_TORCH_DEVICE" not in os.environ:
        monkeypatch.setenv("KERAS_TORCH_DEVICE", "cpu")


@pytest.fixture(scope="session")
def keras():
    """Keras 3 on its torch backend, or skip (``pip install keras``; the dev extra has it)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    pinned = "KERAS_TORCH_DEVICE" not in os.environ
    if pinned:  # Keras reads its device once, at import: the CPU, as optimist's side (_on_cpu)
        os.environ["KERAS_TORCH_DEVICE"] = "cpu"
    try:
        keras = pytest.importorskip("keras")
    finally:
        if pinned:
            del os.environ["KERAS_TORCH_DEVICE"]
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on the {keras.backend.backend()} backend, not torch")
    return keras
