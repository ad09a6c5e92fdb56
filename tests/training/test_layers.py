"""Layers: output shapes, parameter counts (Keras' formulas), lazy build, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import (
    GRU,
    LSTM,
    Activation,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    Input,
    MaxPooling2D,
    Reshape,
)
from optimist.training import activations, initializers
from optimist.training.layers import count_weights


def _assert_grads_flow(module: torch.nn.Module, x: torch.Tensor) -> None:
    out = module(x)
    out.float().square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def _build(layer, input_shape):
    model = optimist.Sequential([layer])
    model.build(input_shape)
    return model


def test_dense_shape_params_init():
    layer = Dense(10, activation="relu", input_shape=(784,))
    model = optimist.Sequential([layer])
    assert layer.kernel.shape == (784, 10)  # Keras layout (in, units)
    assert layer.count_params() == 784 * 10 + 10
    assert torch.equal(layer.bias, torch.zeros(10))
    limit = math.sqrt(6 / (784 + 10))  # glorot_uniform
    assert layer.kernel.abs().max() <= limit
    assert layer.kernel.abs().max() > 0.9 * limit
    assert model(torch.randn(3, 784)).shape == (3, 10)
    assert (model(torch.randn(3, 784)) >= 0).all()  # relu
    # Dense acts on the last axis of N-D input, as Keras
    assert model(torch.randn(2, 5, 784)).shape == (2, 5, 10)
    assert layer.compute_output_shape((None, 5, 784)) == (None, 5, 10)
    _assert_grads_flow(model, torch.randn(4, 784))


def test_dense_no_bias_and_initializers():
    layer = Dense(3, use_bias=False, kernel_initializer="ones", input_shape=(2,))
    optimist.Sequential([layer])
    assert layer.bias is None and layer.count_params() == 6
    assert torch.equal(layer(torch.ones(1, 2)), torch.full((1, 3), 2.0))


def test_lazy_build_and_keras_param_counts():
    model = optimist.Sequential([Dense(5, activation="tanh"), Dense(2)])
    assert not model.built
    assert list(model.parameters()) == []
    out = model(torch.randn(3, 7))
    assert out.shape == (3, 2)
    assert model.built
    assert model.count_params() == (7 * 5 + 5) + (5 * 2 + 2)
    assert model.input_shape == (None, 7)


def test_input_layer_and_indexing():
    model = optimist.Sequential([Input(shape=(4,)), Dense(3, name="hidden"), Dense(1)])
    assert model.built and len(model) == 2
    assert model[0] is model.get_layer("hidden") is model["hidden"]
    assert [layer.name for layer in model.layers] == ["hidden", "dense"]
    model.add(Dense(2))
    assert model.layers[-1].name == "dense_1"
    assert model.layers[-1].kernel.shape == (1, 2)  # built on add, from the previous output
    assert model.pop().name == "dense_1"
    assert set(model.state_dict()) == {"hidden.kernel", "hidden.bias", "dense.kernel", "dense.bias"}


def test_conv2d_channels_last_valid_and_params():
    layer = Conv2D(8, 3, activation="relu", input_shape=(28, 28, 3))
    model = optimist.Sequential([layer])
    assert layer.count_params() == 3 * 3 * 3 * 8 + 8
    x = torch.randn(2, 28, 28, 3)
    assert model(x).shape == (2, 26, 26, 8)
    assert layer.compute_output_shape((None, 28, 28, 3)) == (None, 26, 26, 8)
    _assert_grads_flow(model, x)


@pytest.mark.parametrize("size", [5, 6, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_same_padding_matches_tensorflow_rule(size, stride):
    layer = Conv2D(4, 3, strides=stride, padding="same", input_shape=(size, size, 2))
    optimist.Sequential([layer])
    x = torch.randn(1, size, size, 2)
    out = layer(x)
    expected_size = math.ceil(size / stride)
    assert out.shape == (1, expected_size, expected_size, 4)
    # TF "same": pad_total = max((out-1)*s + k - size, 0), the extra one at the end
    total = max((expected_size - 1) * stride + 3 - size, 0)
    before, after = total // 2, total - total // 2
    nchw = F.pad(x.permute(0, 3, 1, 2), (before, after, before, after))
    ref = F.conv2d(nchw, layer.kernel, layer.bias, stride).permute(0, 2, 3, 1)
    torch.testing.assert_close(out, ref)


def test_conv2d_channels_first_matches_channels_last():
    torch.manual_seed(1)
    last = Conv2D(3, (2, 3), strides=(1, 2), input_shape=(6, 7, 2))
    optimist.Sequential([last])
    first = Conv2D(3, (2, 3), strides=(1, 2), data_format="channels_first", input_shape=(2, 6, 7))
    optimist.Sequential([first])
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, 6, 7, 2)
    torch.testing.assert_close(last(x), first(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def test_pooling_layers():
    x = torch.randn(2, 5, 5, 3)
    assert _build(MaxPooling2D(), (None, 5, 5, 3))(x).shape == (2, 2, 2, 3)
    same = _build(MaxPooling2D(2, padding="same"), (None, 5, 5, 3))
    out = same(x)
    assert out.shape == (2, 3, 3, 3)
    assert torch.equal(out[:, 2, 2], x[:, 4, 4])  # the -inf padding never wins
    avg = _build(AveragePooling2D(2, padding="same"), (None, 5, 5, 3))
    torch.testing.assert_close(avg(torch.ones(1, 5, 5, 3)), torch.ones(1, 3, 3, 3))
    valid = _build(AveragePooling2D(), (None, 4, 4, 1))
    y = torch.arange(16.0).reshape(1, 4, 4, 1)
    assert valid(y)[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4
    assert _build(GlobalAveragePooling2D(), (None, 5, 5, 3))(x).shape == (2, 3)
    torch.testing.assert_close(_build(GlobalMaxPooling2D(), (None, 5, 5, 3))(x), x.amax((1, 2)))


def test_flatten_reshape_dropout_activation():
    model = optimist.Sequential([Reshape((2, -1), input_shape=(6,)), Flatten()])
    assert model[0].compute_output_shape((None, 6)) == (None, 2, 3)
    x = torch.randn(4, 6)
    torch.testing.assert_close(model(x), x)
    drop = _build(Dropout(0.5), (None, 1000))
    drop.train()
    y = drop(torch.ones(2, 1000))
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 0.3 < (y == 0).float().mean() < 0.7
    drop.eval()
    assert torch.equal(drop(torch.ones(2, 1000)), torch.ones(2, 1000))
    act = _build(Activation("softmax"), (None, 3))
    torch.testing.assert_close(act(torch.zeros(1, 3)), torch.full((1, 3), 1 / 3))
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_batch_normalization():
    layer = BatchNormalization(input_shape=(3,))
    model = optimist.Sequential([layer])
    trainable, frozen = count_weights(layer)
    assert (trainable, frozen) == (2 * 3, 2 * 3)  # Keras: 4 * features, half trainable
    x = torch.randn(64, 3) * 5 + 2
    model.train()
    y = model(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.moving_mean, 0.01 * x.mean(0))  # Keras momentum 0.99
    model.eval()
    expected = (x - layer.moving_mean) / torch.sqrt(layer.moving_variance + 1e-3)
    torch.testing.assert_close(model(x), expected)
    conv_bn = _build(BatchNormalization(), (None, 4, 4, 5))
    assert conv_bn[0].moving_mean.shape == (5,)  # channels last
    assert conv_bn(torch.randn(2, 4, 4, 5)).shape == (2, 4, 4, 5)
    _assert_grads_flow(model.train(), x)


def test_embedding():
    layer = Embedding(50, 8, input_shape=(7,))
    model = optimist.Sequential([layer, Flatten(), Dense(2)])
    assert layer.count_params() == 50 * 8
    assert layer.embeddings.abs().max() <= 0.05  # Keras "uniform": U(-0.05, 0.05)
    idx = torch.randint(0, 50, (3, 7))
    assert layer(idx).shape == (3, 7, 8)
    assert model(idx).shape == (3, 2)
    out = model(idx)
    out.sum().backward()
    assert layer.embeddings.grad is not None


@pytest.mark.parametrize("cls,gates,biases", [(LSTM, 4, 1), (GRU, 3, 2)])
def test_recurrent_shapes_params_and_fused_equals_loop(cls, gates, biases):
    units, n_in = 6, 4
    seq = cls(units, return_sequences=True, input_shape=(5, n_in))
    last = cls(units, input_shape=(5, n_in))
    optimist.Sequential([seq])
    optimist.Sequential([last])
    # Keras: LSTM 4*(u*(in+u)+u); GRU (reset_after) 3*(u*(in+u)+2u)
    assert seq.count_params() == gates * (units * (n_in + units) + biases * units)
    x = torch.randn(3, 5, n_in)
    assert seq(x).shape == (3, 5, units)
    assert last(x).shape == (3, units)
    with torch.no_grad():
        seq.bias.uniform_(-0.5, 0.5)  # make the bias layout matter
    fused = seq(x)
    seq._fused = False
    torch.testing.assert_close(seq(x), fused, atol=1e-5, rtol=1e-5)
    seq._fused = True
    _assert_grads_flow(seq, x)


def test_lstm_unit_forget_bias():
    layer = LSTM(3, input_shape=(2, 2))
    optimist.Sequential([layer])
    assert torch.equal(layer.bias, torch.tensor([0.0] * 3 + [1.0] * 3 + [0.0] * 6))


def test_custom_recurrent_activation_uses_loop():
    layer = LSTM(3, activation="relu", input_shape=(4, 2))
    optimist.Sequential([layer])
    assert not layer._fused
    assert layer(torch.randn(2, 4, 2)).shape == (2, 3)


def test_frozen_layer():
    model = optimist.Sequential([Dense(3, input_shape=(2,)), Dense(1)])
    model[0].trainable = False
    assert not any(p.requires_grad for p in model[0].parameters())
    text = model.summary(print_fn=None)
    assert "Trainable params: 4" in text and "Non-trainable params: 9" in text


def test_activations_by_name():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(activations.get("relu")(x), torch.relu(x))
    torch.testing.assert_close(activations.get("gelu")(x), F.gelu(x))
    torch.testing.assert_close(activations.get("swish")(x), x * torch.sigmoid(x))
    torch.testing.assert_close(activations.get("leaky_relu")(x), torch.where(x > 0, x, 0.2 * x))
    torch.testing.assert_close(activations.get(None)(x), x)
    for name in activations.ACTIVATIONS:
        assert activations.get(name)(x.reshape(1, -1)).shape == (1, 13)
    with pytest.raises(ValueError, match=r"Unknown activation 'relux'.*relu.*sigmoid"):
        Dense(2, activation="relux")


def test_initializers_by_name():
    t = torch.empty(400, 300)
    initializers.get("he_normal")(t, 400, 300)
    assert abs(t.std().item() - math.sqrt(2 / 400)) < 0.05 * math.sqrt(2 / 400)
    assert t.abs().max() <= 2 * math.sqrt(2 / 400) / 0.87962566103423978 + 1e-6
    initializers.get("he_uniform")(t, 400, 300)
    assert t.abs().max() <= math.sqrt(6 / 400)
    initializers.get("glorot_normal")(t, 400, 300)
    assert abs(t.std().item() - math.sqrt(2 / 700)) < 0.05 * math.sqrt(2 / 700)
    initializers.get("random_normal")(t, 400, 300)
    assert abs(t.std().item() - 0.05) < 0.003
    initializers.get("orthogonal")(t, 400, 300)
    torch.testing.assert_close(t.T @ t, torch.eye(300), atol=1e-4, rtol=0)
    for name in initializers.INITIALIZERS:
        initializers.get(name)(torch.empty(5, 5), 5, 5)
    layer = Dense(2, kernel_initializer=lambda shape: torch.full(shape, 3.0), input_shape=(2,))
    optimist.Sequential([layer])
    assert torch.equal(layer.kernel, torch.full((2, 2), 3.0))
    with pytest.raises(ValueError, match=r"Unknown initializer 'he'.*he_normal"):
        Dense(2, kernel_initializer="he")


def test_torch_modules_mix_in():
    model = optimist.Sequential([torch.nn.Linear(4, 3), Dense(2)])
    model.build((None, 4))
    assert model(torch.randn(5, 4)).shape == (5, 2)
    assert model[1].kernel.shape == (3, 2)


def test_summary_output():
    model = optimist.Sequential(
        [Dense(10, activation="relu", input_shape=(784,)), Dense(10, activation="softmax")]
    )
    lines = []
    text = model.summary(print_fn=lines.append)
    assert lines == [text]
    assert 'Model: "sequential"' in text
    assert "dense (Dense)" in text and "dense_1 (Dense)" in text
    assert "(None, 10)" in text and "7,850" in text and "110" in text
    assert "Total params: 7,960" in text
    assert "Trainable params: 7,960" in text
    assert "Non-trainable params: 0" in text
    unbuilt = optimist.Sequential([Dense(3)])
    assert "not built" in unbuilt.summary(print_fn=None)
