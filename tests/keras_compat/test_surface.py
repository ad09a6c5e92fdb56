"""``import optimist as keras``: the namespaces, model(x), losses and layers Keras code uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist as keras
from optimist import layers


def mlp(dropout=0.5, out_activation="softmax"):
    return keras.models.Sequential(
        [
            keras.Input(shape=(4,)),
            layers.Dense(16, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(3, activation=out_activation),
        ]
    )


def test_namespaces_of_import_optimist_as_keras():
    assert keras.models.Sequential is keras.Sequential
    assert isinstance(keras.optimizers.Adam(learning_rate=1e-3), keras.optimizers.Optimizer)
    assert keras.optimizers.schedules.ExponentialDecay(1.0, 1, 0.5)(2) == 0.25
    assert keras.regularizers.l1_l2(l1=0.1, l2=0.2)(torch.tensor([1.0, -2.0])).item() == (
        pytest.approx(0.1 * 3 + 0.2 * 5)
    )
    assert keras.backend.image_data_format() == "channels_last"
    assert keras.backend.epsilon() == 1e-7
    keras.utils.set_random_seed(3)
    a = (np.random.rand(), torch.rand(1))
    keras.utils.set_random_seed(3)
    assert (np.random.rand(), torch.rand(1)) == a
    assert keras.losses.SparseCategoricalCrossentropy(from_logits=True).from_logits
    assert keras.metrics.TopKAccuracy(k=2).k == 2
    assert keras.initializers.HeNormal(seed=1)((3, 2)).shape == (3, 2)
    assert torch.equal(
        keras.initializers.HeNormal(seed=1)((3, 2)), keras.initializers.HeNormal(seed=1)((3, 2))
    )
    assert keras.callbacks.EarlyStopping is not None and keras.layers.Dense is layers.Dense
    # the registry listing keeps working, under its new name and the old call
    assert keras.optim.optimizers() == keras.optimizers()
    with pytest.raises(ValueError, match=r"not recognized.*learning_rate"):
        keras.optimizers.SGD(lr=0.1)


@pytest.mark.parametrize(
    "x",
    [
        np.ones((2, 4)),  # float64 NumPy
        np.ones((2, 4), dtype=np.float16),
        [[1.0] * 4] * 2,
        torch.ones(2, 4, dtype=torch.bfloat16),
        torch.ones(2, 4, dtype=torch.float64),
    ],
    ids=["np.float64", "np.float16", "list", "torch.bfloat16", "torch.float64"],
)
def test_model_call_accepts_numpy_and_any_float_dtype(x):
    model = mlp()
    out = model(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3)
    if not isinstance(x, torch.Tensor):
        assert out.numpy().shape == (2, 3)  # no graph kept for NumPy input


def test_model_call_is_inference_outside_fit_and_takes_training():
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    y = np.arange(64) % 3
    model = mlp(dropout=0.5)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    assert torch.equal(model(x), model(x))
    assert not torch.equal(model(x, training=True), model(x, training=True))
    # the quickstart's probability model: deterministic probabilities
    probability_model = keras.Sequential([model, layers.Softmax()])
    p1, p2 = probability_model(x[:5]), probability_model(x[:5])
    assert torch.equal(p1, p2)
    np.testing.assert_allclose(p1.sum(-1).numpy(), 1.0, rtol=1e-6)


def test_builtin_loss_functions_are_builtin_losses(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    labels = np.arange(60) % 3
    y = keras.utils.to_categorical(labels, 3)
    by_function, by_name = mlp(0.0), mlp(0.0)
    by_name.load_state_dict(by_function.state_dict())
    by_function.compile("sgd", keras.losses.categorical_crossentropy, ["accuracy"])
    by_name.compile("sgd", "categorical_crossentropy", ["accuracy"])
    assert by_function._fold == "softmax"  # the stable from-logits path
    weights = {0: 1.0, 1: 2.0, 2: 0.5}
    h1 = by_function.fit(x, y, epochs=2, verbose=0, shuffle=False, class_weight=weights)
    h2 = by_name.fit(x, y, epochs=2, verbose=0, shuffle=False, class_weight=weights)
    assert h1.history == h2.history
    by_function.save(tmp_path / "m.pt")
    loaded = keras.models.load_model(tmp_path / "m.pt")
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(by_function.evaluate(x, y, verbose=0))
    # called directly they return per-sample losses, as in Keras
    per_sample = keras.losses.categorical_crossentropy(y[:4], np.full((4, 3), 1 / 3))
    np.testing.assert_allclose(per_sample.numpy(), np.log(3.0), rtol=1e-6)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert loss(labels[:2], np.zeros((2, 3), np.float32)).item() == pytest.approx(np.log(3.0))
    summed = keras.losses.MeanSquaredError(reduction="sum")
    assert summed(np.ones((2, 1)), np.zeros((2, 1))).item() == 2.0


@pytest.mark.parametrize(
    "name,y_true,y_pred,expected",
    [
        ("mape", [[2.0, 4.0]], [[1.0, 5.0]], 100 * (0.5 + 0.25) / 2),
        ("msle", [[0.0]], [[np.e - 1]], 1.0),
        ("hinge", [[1.0, 0.0]], [[0.5, 0.5]], (0.5 + 1.5) / 2),
        ("squared_hinge", [[1.0, 0.0]], [[0.5, 0.5]], (0.25 + 2.25) / 2),
        ("categorical_hinge", [[0.0, 1.0]], [[0.8, 0.3]], 1.5),
        ("cosine_similarity", [[1.0, 0.0]], [[2.0, 0.0]], -1.0),
    ],
)
def test_new_losses_follow_keras_formulas(name, y_true, y_pred, expected):
    loss = keras.losses.get(name)
    assert loss(np.array(y_true), np.array(y_pred, np.float32)).item() == pytest.approx(expected)


def test_regularizers_add_their_penalty_to_the_loss():
    x = np.ones((8, 4), np.float32)
    y = np.zeros((8, 1), np.float32)
    model = keras.Sequential(
        [layers.Dense(1, input_dim=4, kernel_regularizer=keras.regularizers.l2(0.5))]
    )
    model.compile(keras.optimizers.SGD(0.0), "mse")
    kernel = model[0].kernel.detach()
    mse = model.evaluate(x, y, verbose=0)
    penalty = 0.5 * float(kernel.square().sum())
    assert len(model.losses) == 1 and model.losses[0].item() == pytest.approx(penalty)
    assert model.train_on_batch(x, y) == pytest.approx(mse, rel=1e-5)
    plain = float(((x @ kernel.numpy() + model[0].bias.detach().numpy()) ** 2).mean())
    assert mse == pytest.approx(plain + penalty, rel=1e-5)
    assert model.trainable_weights == [model[0].kernel, model[0].bias]


def test_new_layers():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    norm = layers.Normalization()
    norm.adapt(x)
    out = norm(torch.from_numpy(x))
    np.testing.assert_allclose(out.mean(0).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.std(0, unbiased=False).numpy(), 1.0, rtol=1e-5)
    assert torch.equal(layers.Rescaling(0.5, offset=1.0)(torch.tensor([2.0])), torch.tensor([2.0]))
    t = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(layers.ReLU(max_value=1.0)(t), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(layers.LeakyReLU()(t), torch.tensor([-0.6, 0.5, 3.0]))
    assert torch.allclose(layers.Softmax()(t).sum(), torch.tensor(1.0))
    model = keras.Sequential([layers.Dense(3, input_dim=5), layers.Softmax()])
    assert model.input_shape == (None, 5) and model._final_activation() == "softmax"


def test_precision_and_recall_in_fit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = (x[:, :1] > 0).astype(np.float32)
    model = keras.Sequential([layers.Dense(1, input_dim=4, activation="sigmoid")])
    metrics = ["precision", keras.metrics.Recall(), "auc", keras.metrics.F1Score(average="micro")]
    model.compile("adam", "binary_crossentropy", metrics)
    logs = model.fit(x, y, epochs=2, verbose=0, validation_split=0.25).history
    names = {"loss", "precision", "recall", "auc", "f1_score"}
    assert set(logs) == names | {f"val_{name}" for name in names}
    for key in names - {"loss"}:
        assert all(0.0 <= v <= 1.0 for v in logs[key]), key


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.RMSprop(learning_rate=0.01, momentum=0.5),
        lambda: keras.optimizers.SGD(
            learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5), momentum=0.9
        ),
        lambda: keras.optimizers.Adam(
            learning_rate=keras.optimizers.schedules.ExponentialDecay(0.01, 3, 0.5)
        ),
    ],
)
def test_keras_optimizer_resumes_exactly_after_load(tmp_path, make):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 3

    def fresh():
        torch.manual_seed(0)
        model = mlp(dropout=0.0)
        model.compile(make(), "sparse_categorical_crossentropy")
        return model

    straight = fresh()
    straight.fit(x, y, epochs=4, batch_size=8, verbose=0)
    first = fresh()
    first.fit(x, y, epochs=2, batch_size=8, verbose=0)
    first.save(tmp_path / "m.pt")
    resumed = keras.models.load_model(tmp_path / "m.pt")
    keras_opt = resumed.optimizer.keras_optimizer
    assert type(keras_opt) is type(make()) and keras_opt.iterations == 10
    resumed.fit(x, y, epochs=4, batch_size=8, verbose=0, initial_epoch=resumed.epoch)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
