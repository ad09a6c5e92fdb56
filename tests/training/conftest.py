"""Shared fixtures for the training tests: small synthetic data sets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _on_cpu(monkeypatch):
    """These tests compare with hand-written CPU loops: on a GPU machine a Keras-style model
    would otherwise build on the GPU (Keras 3's rule). tests/cuda checks that rule there."""
    if "KERAS_TORCH_DEVICE" not in os.environ:
        monkeypatch.setenv("KERAS_TORCH_DEVICE", "cpu")


@pytest.fixture
def blobs():
    """Three well-separated Gaussian blobs in 4-D: (x float32 (300, 4), labels int64 (300,))."""
    rng = np.random.default_rng(0)
    centers = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=np.float32)
    labels = rng.integers(0, 3, size=300)
    x = centers[labels] + 0.3 * rng.standard_normal((300, 4)).astype(np.float32)
    return x.astype(np.float32), labels.astype(np.int64)


@pytest.fixture
def line_data():
    """y = 2x + 1 on 200 points in [-1, 1] (float32, shapes (200, 1))."""
    x = np.linspace(-1, 1, 200, dtype=np.float32).reshape(-1, 1)
    return x, (2 * x + 1).astype(np.float32)
