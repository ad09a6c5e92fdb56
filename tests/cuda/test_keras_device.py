"""Keras-style models placed as Keras 3's torch backend places them, on the device under test.

On a GPU machine (no ``KERAS_TORCH_DEVICE``), Keras' default device is CUDA: a ``Sequential``
built with no device given must build, train, keep its optimizer state and metrics there.
``OPTIMIST_TEST_DEVICE=cpu`` on a machine without an accelerator runs the same file on the CPU,
which is then the default device, so the same assertions hold on the stand-in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from helpers import device_under_test, requires_device
from optimist.layers import Dense, Input
from optimist.training import placement

DEVICE = device_under_test()
pytestmark = requires_device
DEV = DEVICE or torch.device("cpu")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(placement.ENV_VAR, raising=False)


def _default() -> torch.device:
    """Keras' default here; on a machine with CUDA (and no MPS) it must be CUDA."""
    default = placement.default_device()
    if torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert default.type == "cuda"
    return default


def _data(n=64):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 8, generator=gen)
    return x.numpy(), (x[:, :1] * 2 - x[:, 1:2]).numpy()


def _model(lazy: bool = False):
    torch.manual_seed(0)
    first = [] if lazy else [Input((8,))]
    return optimist.Sequential([*first, Dense(16, activation="tanh"), Dense(1)])


def _types(tensors) -> set[str]:
    return {t.device.type for t in tensors}


def _fit(model):
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x, y = _data()
    return model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0).history


def test_sequential_with_no_device_given_trains_on_the_default_device():
    expected = _default()
    model = _model()
    start = model.get_weights()
    assert _types(model.parameters()) == {expected.type}
    history = _fit(model)
    assert _types(model.parameters()) == {expected.type}
    moments = [v for s in model.optimizer.state.values() for k, v in s.items() if k != "step"]
    assert moments and _types(moments) == {expected.type}
    assert model.compiled_metrics[0]._total.device.type == expected.type
    assert history["loss"][-1] < history["loss"][0]

    reference = _model().cpu()  # the same seed, built and trained on the CPU
    for a, b in zip(start, reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # drawn on the CPU, then moved: identical
    want = _fit(reference)
    np.testing.assert_allclose(history["loss"], want["loss"], rtol=1e-4)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unbuilt_sequential_builds_on_the_default_device_in_fit():
    expected = _default()
    model = _model(lazy=True)
    assert not list(model.parameters())
    history = _fit(model)
    assert _types(model.parameters()) == {expected.type}
    assert history["loss"][-1] < history["loss"][0]
    x, _ = _data(4)
    assert np.asarray(model.predict(x, verbose=0)).shape == (4, 1)
    assert model(torch.as_tensor(x)).device.type == expected.type  # a CPU tensor is moved


def test_unbuilt_sequential_fit_on_a_dataloader_builds_on_the_default_device():
    expected = _default()
    x, y = _data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=16
    )
    model = _model(lazy=True)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(loader, epochs=3, verbose=0).history
    assert _types(model.parameters()) == {expected.type}
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("how", ["scope", "to_before_build", "env"])
def test_the_device_under_test_chosen_three_ways(how, monkeypatch):
    if how == "scope":
        with optimist.device(str(DEV)):
            model = _model()
    elif how == "to_before_build":
        model = _model(lazy=True).to(DEV)
    else:
        monkeypatch.setenv(placement.ENV_VAR, str(DEV))
        model = _model()
    history = _fit(model)
    assert _types(model.parameters()) == {DEV.type}
    assert history["loss"][-1] < history["loss"][0]


def test_env_var_cpu_keeps_a_model_off_the_accelerator(monkeypatch):
    monkeypatch.setenv(placement.ENV_VAR, "cpu")
    model = _model()
    _fit(model)
    assert _types(model.parameters()) == {"cpu"}
