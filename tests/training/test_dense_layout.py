"""Dense stores its weight (units, in) like nn.Linear, behind Keras' (in, units) kernel view."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense
from optimist.training import checkpoint as _ckpt


def two_layer(seed: int = 0) -> optimist.Sequential:
    torch.manual_seed(seed)
    return optimist.Sequential(
        [Dense(5, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")]
    )


def test_weight_is_torch_layout_and_kernel_is_its_keras_view():
    model = two_layer()
    dense = model[0]
    assert dense.weight.shape == (5, 4) and dense.weight.is_contiguous()
    assert dense.kernel.shape == (4, 5)
    assert dense.kernel is dense.kernel  # one object, so Keras' list comparisons hold
    assert dense.kernel.data_ptr() == dense.weight.data_ptr()
    x = torch.randn(7, 4)
    torch.testing.assert_close(dense.pre_activation(x), x @ dense.kernel + dense.bias)
    x3 = torch.randn(2, 7, 4)  # more than two axes: the last one is contracted
    torch.testing.assert_close(dense.pre_activation(x3), x3 @ dense.kernel + dense.bias)
    assert model.trainable_weights == [dense.kernel, dense.bias, model[1].kernel, model[1].bias]
    assert [tuple(w.shape) for w in model.weights] == [(4, 5), (5,), (5, 3), (3,)]


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "he_uniform", "lecun_normal"])
def test_initializers_draw_keras_in_units_kernel_as_before(name):
    """The same seed gives the numbers an (in, units) tensor drew before the layout change."""
    torch.manual_seed(11)
    layer = Dense(6, kernel_initializer=name, input_shape=(9,))
    layer.build((None, 9))
    torch.manual_seed(11)
    before = torch.empty(9, 6)
    if name == "glorot_uniform":  # Keras' rule written out: U(-l, l), l = sqrt(6 / (in + out))
        limit = math.sqrt(6.0 / (9 + 6))
        before.uniform_(-limit, limit)
    else:
        init = optimist.training.initializers
        init.initialize(before, init.get(name), 9, 6)
    assert torch.equal(layer.kernel, before)


def test_state_dict_weights_and_set_weights_use_keras_layout():
    model = two_layer()
    state = model.state_dict()
    assert list(state) == ["dense.kernel", "dense.bias", "dense_1.kernel", "dense_1.bias"]
    assert tuple(state["dense.kernel"].shape) == (4, 5)
    assert [w.shape for w in model.get_weights()] == [(4, 5), (5,), (5, 3), (3,)]
    assert [w.shape for w in model[0].get_weights()] == [(4, 5), (5,)]
    arrays = [np.arange(w.size, dtype=np.float32).reshape(w.shape) for w in model.get_weights()]
    model.set_weights(arrays)
    assert np.array_equal(model[0].kernel.detach().numpy(), arrays[0])
    assert torch.equal(model[0].weight.detach(), torch.from_numpy(arrays[0]).t())
    other = two_layer(seed=5)
    other.load_state_dict(model.state_dict())
    for a, b in zip(other.get_weights(), arrays, strict=True):
        assert np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"dense.kernel.*\(4, 5\), got \(5, 4\)"):
        model.set_weights([arrays[0].T, *arrays[1:]])  # a torch-layout array is refused


def test_writes_through_kernel_and_gradients_reach_weight():
    model = two_layer()
    dense = model[0]
    with torch.no_grad():
        dense.kernel.fill_(0.5)
    assert bool((dense.weight == 0.5).all())
    # a regularizer reads the kernel view: its gradient lands on the weight
    layer = Dense(3, input_shape=(4,), kernel_regularizer=optimist.regularizers.l2(0.1))
    layer.build((None, 4))
    (penalty,) = layer.losses
    penalty.backward()
    torch.testing.assert_close(layer.weight.grad, 0.2 * layer.weight.detach())


def test_kernel_view_follows_moves_freezing_and_copies():
    model = two_layer()
    model.double()
    assert model[0].kernel.dtype == torch.float64
    assert model[0].kernel.data_ptr() == model[0].weight.data_ptr()
    model[0].trainable = False
    assert not model[0].kernel.requires_grad
    assert model.non_trainable_weights[0] is model[0].kernel
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for other in (clone, restored):
        assert torch.equal(other[0].kernel, model[0].kernel)
        assert other[0].kernel.data_ptr() == other[0].weight.data_ptr()


def _trained(tmp_path, blobs, optimizer="adam"):
    x, labels = blobs
    model = two_layer(seed=3)
    model.compile(optimizer, "sparse_categorical_crossentropy")
    model.fit(x, labels, batch_size=32, epochs=1, verbose=0)
    model.save(tmp_path / "new.pt")
    return x, labels


def _as_version_1(tmp_path, transform=None):
    """The checkpoint as the previous version wrote it: Dense optimizer state (in, units)."""
    payload = torch.load(tmp_path / "new.pt", weights_only=True)
    payload["version"] = 1
    for entry in payload["optimizer_state"]["state"].values():
        for key, value in list(entry.items()):
            if isinstance(value, torch.Tensor) and value.dim() == 2:
                entry[key] = value.t().contiguous()
    if transform is not None:
        transform(payload)
    torch.save(payload, tmp_path / "old.pt")
    return tmp_path / "old.pt"


def test_version_1_checkpoint_loads_and_continues_identically(tmp_path, blobs):
    x, labels = _trained(tmp_path, blobs)
    assert torch.load(tmp_path / "new.pt", weights_only=True)["version"] == _ckpt.VERSION
    old = _as_version_1(tmp_path)
    runs = []
    for path in (tmp_path / "new.pt", old):
        model = optimist.load_model(path)
        model.fit(x, labels, batch_size=32, epochs=2, initial_epoch=1, verbose=0)
        runs.append(model)
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert runs[0].history.history["loss"] == runs[1].history.history["loss"]


def test_version_1_state_that_cannot_be_converted_is_refused(tmp_path, blobs):
    _trained(tmp_path, blobs)

    def factored(payload):  # a per-row statistic of the old layout has no (units, in) meaning
        payload["optimizer_state"]["state"][0]["exp_avg_sq"] = torch.ones(4)

    old = _as_version_1(tmp_path, factored)
    with pytest.raises(ValueError, match=r"old\.pt.*\(in, units\) layout.*compile=False"):
        optimist.load_model(old)
    assert optimist.load_model(old, compile=False)[0].kernel.shape == (4, 5)


def test_same_loss_as_the_keras_layout_computation(blobs):
    """fit's first batch loss equals x @ kernel + bias computed by hand from the Keras view."""
    x, labels = blobs
    model = two_layer(seed=4)
    d0, d1 = model[0], model[1]
    xt = torch.from_numpy(x[:32])
    with torch.no_grad():
        h = torch.relu(xt @ d0.kernel + d0.bias)
        expected = F.cross_entropy(h @ d1.kernel + d1.bias, torch.from_numpy(labels[:32]))
    model.compile("sgd", "sparse_categorical_crossentropy")
    loss = model.train_on_batch(x[:32], labels[:32])
    assert loss == pytest.approx(float(expected), rel=1e-6)
