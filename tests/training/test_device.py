"""Where Keras-style models build their weights: Keras 3's torch-backend rule (scope, then
``KERAS_TORCH_DEVICE``, then mps/cuda/xpu/cpu), ``model.to()`` before the build, and torch
modules keeping their own device. No GPU needed: the accelerators' availability is mocked to
check the choice, and the ``meta`` device stands in for "not the CPU" where weights are built.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import optimist
from optimist.layers import Dense, Input, Normalization
from optimist.training import placement

META = torch.device("meta")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(placement.ENV_VAR, raising=False)


def _accelerators(monkeypatch, *, mps=False, cuda=False, xpu=False):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if hasattr(torch, "xpu"):
        monkeypatch.setattr(torch.xpu, "is_available", lambda: xpu)


def _devices(model: nn.Module) -> set[torch.device]:
    return {t.device for t in [*model.parameters(), *model.buffers()]}


# --- the rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        ({}, "cpu"),
        ({"cuda": True}, "cuda"),
        ({"xpu": True}, "xpu"),
        ({"cuda": True, "xpu": True}, "cuda"),
        ({"mps": True, "cuda": True}, "mps"),  # Keras' order: mps first
    ],
)
def test_default_device_follows_keras_order(monkeypatch, available, expected):
    _accelerators(monkeypatch, **available)
    assert placement.default_device() == torch.device(expected)
    assert placement.get_device() == torch.device(expected)


def test_env_var_overrides_the_accelerator(monkeypatch):
    _accelerators(monkeypatch, cuda=True)
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "cpu")
    assert placement.get_device() == CPU
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "GPU:1")  # Keras' spelling
    assert placement.get_device() == torch.device("cuda", 1)


def test_env_var_errors_name_the_variable(monkeypatch):
    _accelerators(monkeypatch)
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "toaster")
    with pytest.raises(ValueError, match="KERAS_TORCH_DEVICE.*'toaster'"):
        placement.get_device()
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "cuda")
    with pytest.raises(ValueError, match=r"KERAS_TORCH_DEVICE='cuda'.*no cuda device"):
        placement.get_device()


def test_scopes_nest_and_restore_on_exceptions(monkeypatch):
    _accelerators(monkeypatch, cuda=True)
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "cpu")
    with optimist.device("meta") as outer:
        assert outer == META and placement.get_device() == META
        with optimist.device("gpu") as inner:  # "gpu" is cuda, as in Keras
            assert inner == torch.device("cuda") == placement.get_device()
            with pytest.raises(KeyError), optimist.device("cpu"):
                assert placement.get_device() == CPU
                raise KeyError("boom")
            assert placement.get_device() == torch.device("cuda")
        assert placement.get_device() == META
    assert placement.get_device() == CPU  # the scope beats the variable, only inside


def test_scope_is_per_thread():
    seen = []
    with optimist.device("meta"):
        worker = threading.Thread(target=lambda: seen.append(placement.get_device()))
        worker.start()
        worker.join()
        assert placement.get_device() == META
    assert seen == [placement.default_device()]


@pytest.mark.parametrize("bad", [5, None, "", "nonsense"])
def test_scope_refuses_bad_names(bad):
    with pytest.raises(ValueError, match="device_name"), optimist.device(bad):
        pass  # pragma: no cover
    assert placement.get_device() == placement.default_device()


def test_scope_refuses_an_absent_accelerator(monkeypatch):
    _accelerators(monkeypatch)
    with (
        pytest.raises(ValueError, match="no cuda device.*cuda.is_available"),
        optimist.device("cuda:0"),
    ):
        pass  # pragma: no cover


def test_keras_name_is_exported():
    import optimist as keras

    assert keras.device is placement.device
    assert "device" in optimist.__all__


# --- building Keras-style models ----------------------------------------------------------------


def _functional():
    inputs = Input((4,))
    return optimist.Model(inputs, Dense(2)(Dense(3, activation="relu")(inputs)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimist.Sequential([Input((4,)), Dense(3), Dense(1)]),
        lambda: optimist.Sequential([Dense(3, input_shape=(4,)), Dense(1)]),
        _functional,
    ],
    ids=["sequential_input", "sequential_input_shape", "functional"],
)
def test_built_under_a_scope_lands_there(make):
    with optimist.device("meta"):
        model = make()
    assert _devices(model) == {META}
    with optimist.device("cpu"):
        assert _devices(make()) == {CPU}


def test_the_scope_active_at_build_counts_not_at_construction():
    with optimist.device("meta"):
        model = optimist.Sequential([Dense(3), Dense(1)])  # unbuilt: no weights yet
    model.build((None, 4))
    assert _devices(model) == {placement.default_device()}
    lazy = optimist.Sequential([Dense(3)])
    with optimist.device("meta"):
        lazy.build((None, 4))
    assert _devices(lazy) == {META}


def test_no_device_given_builds_on_the_default_device(monkeypatch):
    """The default stands in for a GPU: the variable names ``meta``, so a model built with no
    device given lands on it (the first layers at construction, the lazy ones from data)."""
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "meta")
    assert _devices(optimist.Sequential([Input((4,)), Dense(3)])) == {META}
    assert _devices(_functional()) == {META}
    model = optimist.Sequential([Dense(3), Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((8, 4), np.float32), np.ones((8, 1), np.float32)
    arr = model._arrays(x, y, None, "")
    model._prepare_model(arr.x)  # what fit does before its first batch
    assert _devices(model) == {META}
    moved = model._move(arr)
    assert {moved.x.device, moved.y.device} == {META}  # the batches follow the weights


def test_to_before_build_is_remembered():
    model = optimist.Sequential([Dense(3), Dense(1)])
    assert model.to("meta") is model
    model.build((None, 4))
    assert _devices(model) == {META}
    # the last move wins, and .cpu() / .to(dtype) are remembered (or not) as torch moves
    model = optimist.Sequential([Dense(3)]).to("meta").cpu().to(torch.float64)
    model.build((None, 4))
    assert _devices(model) == {CPU}
    # .to() beats a scope and the variable
    model = optimist.Sequential([Dense(3)]).to(device="meta")
    with optimist.device("cpu"):
        model.build((None, 4))
    assert _devices(model) == {META}


def test_a_layer_added_after_to_joins_the_model():
    model = optimist.Sequential([Input((4,)), Dense(3)]).to("meta")
    model.add(Dense(2))
    assert _devices(model) == {META}


def test_cuda_without_a_gpu_fails_and_changes_nothing(monkeypatch):
    _accelerators(monkeypatch)
    model = optimist.Sequential([Dense(3)]).to("meta")
    with pytest.raises(ValueError, match="no cuda device"):
        model.cuda()
    with pytest.raises(ValueError, match="no cuda device"):
        model.to("cuda:0")
    model.build((None, 4))
    assert _devices(model) == {META}


class _Subclassed(optimist.Model):
    def __init__(self):
        super().__init__()
        self.hidden = Dense(3, activation="relu")
        self.out = Dense(1)

    def forward(self, x):
        return self.out(self.hidden(x))


def test_subclassed_model_builds_its_layers_on_the_default_device(monkeypatch):
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "meta")
    model = _Subclassed()
    model._prepare_model(torch.ones(2, 4))  # CPU data, as fit converts it before the build
    assert _devices(model) == {META}


def test_model_call_moves_inputs_to_a_keras_style_model(monkeypatch):
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "meta")
    model = optimist.Sequential([Dense(3), Dense(1)])
    assert model(np.ones((2, 4), np.float32)).device == META  # built by the call, on meta
    assert model(torch.ones(2, 4)).device == META  # a CPU tensor goes to the model


def test_torch_modules_keep_their_own_device(monkeypatch):
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "meta")
    wrapped = optimist.Model(nn.Linear(4, 1))
    assert _devices(wrapped) == {CPU}
    lazy = optimist.Model(nn.LazyLinear(1))  # a torch lazy module: built where torch builds it
    lazy._prepare_model(torch.ones(2, 4))
    assert _devices(lazy) == {CPU}
    # Keras layers after a torch module join the device of the weights that exist
    mixed = optimist.Sequential([nn.Linear(4, 8), Dense(2)])
    mixed.build((None, 4))
    assert _devices(mixed) == {CPU}


def test_a_layer_built_by_a_call_follows_its_input():
    layer = Dense(2)
    layer(torch.ones(1, 3, device="meta"))
    assert _devices(layer) == {META}


def test_same_initial_weights_and_draws_whatever_the_device():
    """Initial values are drawn on the CPU and then moved: the global generator advances the
    same way whatever the target, so the weights built after are the same."""
    after = []
    for where in ("meta", "cpu"):
        torch.manual_seed(5)
        with optimist.device(where):
            optimist.Sequential([Input((4,)), Dense(3)])
        after.append(optimist.Sequential([Input((4,)), Dense(3)]).get_weights())
    for a, b in zip(*after, strict=True):
        np.testing.assert_array_equal(a, b)


def test_initial_values_are_drawn_on_the_cpu_under_torch_default_device():
    torch.manual_seed(5)
    want = optimist.Sequential([Input((4,)), Dense(3)]).get_weights()
    torch.manual_seed(5)
    with torch.device("meta"), optimist.device("cpu"):  # torch's default would draw on meta
        got = optimist.Sequential([Input((4,)), Dense(3)]).get_weights()
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_optimizer_state_follows_the_model():
    model = optimist.Sequential([Dense(3), Dense(1)]).to("meta")
    model.compile(optimizer="adam", loss="mse")
    model.build((None, 4))
    optimizer = model._ensure_optimizer()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moments = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    assert moments and {v.device for v in moments} == {META}


def test_normalization_adapted_after_build_stays_on_the_model_device():
    layer = Normalization(mean=[0.0], variance=[1.0])
    with optimist.device("meta"):
        layer.build((None, 1))
    layer.adapt(np.array([[1.0], [3.0]]))
    assert _devices(layer) == {META}
