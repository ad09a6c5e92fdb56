"""Keras-style optimizers follow Keras 3's update rules: same trajectory from the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from keras_compat.trajectory import RNG, assert_same_trajectory
from optimist import optimizers

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "sgd-by-name": lambda o, s: "sgd",
    "rmsprop-by-name": lambda o, s: "rmsprop",
    "adam-by-name": lambda o, s: "adam",
    "adagrad-by-name": lambda o, s: "adagrad",
    "adadelta-by-name": lambda o, s: "adadelta",
    "adamax-by-name": lambda o, s: "adamax",
    "nadam-by-name": lambda o, s: "nadam",
    "adamw-by-name": lambda o, s: "adamw",
    "sgd-momentum-schedule": lambda o, s: o.SGD(
        learning_rate=s.ExponentialDecay(0.05, 3, 0.5), momentum=0.9
    ),
    "sgd-nesterov": lambda o, s: o.SGD(0.05, momentum=0.9, nesterov=True),
    "adam-amsgrad-big-epsilon": lambda o, s: o.Adam(0.05, epsilon=0.1, amsgrad=True),
    "adamw-decay": lambda o, s: o.AdamW(0.01, weight_decay=0.1),
    "rmsprop-epsilon": lambda o, s: o.RMSprop(0.01, epsilon=1e-2),
    "rmsprop-centered-momentum-warmup": lambda o, s: o.RMSprop(
        learning_rate=s.CosineDecay(0.01, 10, warmup_target=0.02, warmup_steps=3),
        momentum=0.5,
        centered=True,
        epsilon=1e-3,
    ),
    "adagrad": lambda o, s: o.Adagrad(0.05),
    "adadelta": lambda o, s: o.Adadelta(1.0),
    "adamax-epsilon": lambda o, s: o.Adamax(0.05, epsilon=0.01),
    "nadam": lambda o, s: o.Nadam(0.05),
    "adam-clipnorm": lambda o, s: o.Adam(0.05, clipnorm=0.1),
    "sgd-global-clipnorm": lambda o, s: o.SGD(0.1, global_clipnorm=0.1),
    "sgd-clipvalue": lambda o, s: o.SGD(0.1, clipvalue=0.01),
    "adam-ema": lambda o, s: o.Adam(
        0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=4
    ),
    "rmsprop-weight-decay": lambda o, s: o.RMSprop(0.01, weight_decay=0.05),
    "sgd-polynomial": lambda o, s: o.SGD(s.PolynomialDecay(0.1, 5, 0.01, power=2.0)),
    "adam-piecewise": lambda o, s: o.Adam(s.PiecewiseConstantDecay([2, 5], [0.1, 0.05, 0.01])),
    "adagrad-inverse-time": lambda o, s: o.Adagrad(s.InverseTimeDecay(0.1, 2, 0.5, staircase=True)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


def test_schedules_match_keras(keras):
    ks, os_ = keras.optimizers.schedules, optimizers.schedules
    for make in (
        lambda s: s.ExponentialDecay(0.1, 7, 0.3, staircase=True),
        lambda s: s.InverseTimeDecay(0.1, 3, 0.5),
        lambda s: s.PiecewiseConstantDecay([3, 8], [1.0, 0.5, 0.1]),
        lambda s: s.PolynomialDecay(0.1, 10, 0.001, power=0.5, cycle=True),
        lambda s: s.CosineDecay(0.1, 20, alpha=0.1, warmup_target=0.3, warmup_steps=5),
        lambda s: s.CosineDecayRestarts(0.1, 5, t_mul=2.0, m_mul=0.5, alpha=0.01),
        lambda s: s.CosineDecayRestarts(0.1, 4, t_mul=1.0),
    ):
        theirs, mine = make(ks), make(os_)
        for step in range(0, 40, 3):
            assert mine(step) == pytest.approx(float(theirs(step)), rel=1e-5, abs=1e-7), (
                type(mine).__name__,
                step,
            )


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("Precision", {}),
        ("Precision", {"thresholds": 0.3}),
        ("Precision", {"class_id": 1}),
        ("Recall", {}),
        ("Recall", {"thresholds": 0.3}),
        ("Recall", {"class_id": 1}),
        ("AUC", {}),
        ("AUC", {"num_thresholds": 7}),
        ("F1Score", {"average": "macro"}),
        ("F1Score", {"average": "micro", "threshold": 0.4}),
        ("F1Score", {"average": "weighted"}),
        ("F1Score", {}),
        ("FBetaScore", {"beta": 2.0, "average": "macro"}),
    ],
)
def test_confusion_metrics_match_keras(keras, name, kwargs):
    from optimist import metrics

    rng = np.random.default_rng(1)
    batches = [
        (rng.integers(0, 2, (16, 3)).astype(np.float32), rng.random((16, 3)).astype(np.float32))
        for _ in range(3)
    ]
    theirs, mine = getattr(keras.metrics, name)(**kwargs), getattr(metrics, name)(**kwargs)
    for y_true, y_pred in batches:
        theirs.update_state(y_true, y_pred)
        mine.update(torch.from_numpy(y_true), torch.from_numpy(y_pred))
    expected = np.asarray(theirs.result(), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(mine.result()), expected, rtol=1e-5, atol=1e-7)


def _layer_cases(L):  # noqa: N803 - a layers module
    return {
        "conv1d-valid-stride2": lambda: L.Conv1D(4, 3, strides=2, activation="relu"),
        "conv1d-same": lambda: L.Conv1D(4, 4, padding="same"),
        "conv1d-causal-dilated": lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2),
        "simple-rnn": lambda: L.SimpleRNN(5),
        "simple-rnn-sequences-relu": lambda: L.SimpleRNN(
            5, activation="relu", return_sequences=True
        ),
        "bidirectional-lstm": lambda: L.Bidirectional(L.LSTM(3)),
        "bidirectional-gru-sequences-sum": lambda: L.Bidirectional(
            L.GRU(3, return_sequences=True), merge_mode="sum"
        ),
        "time-distributed-dense": lambda: L.TimeDistributed(L.Dense(2, activation="tanh")),
    }


@pytest.mark.parametrize("case", list(_layer_cases(optimist.layers)))
def test_sequence_layers_match_keras(keras, case):
    x = RNG.standard_normal((3, 7, 2)).astype(np.float32)
    reference = keras.Sequential([keras.Input((7, 2)), _layer_cases(keras.layers)[case]()])
    model = optimist.Sequential([optimist.Input((7, 2)), _layer_cases(optimist.layers)[case]()])
    weights = reference.get_weights()
    if case.startswith("conv1d"):
        weights[0] = weights[0].transpose(2, 1, 0)  # Keras (k, in, filters) -> torch's layout
    model.set_weights(weights)
    expected = np.asarray(reference.predict(x, verbose=0))
    got = model.predict(x, verbose=0)
    assert got.shape == expected.shape == (3, *model.output_shape[1:])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _branching_model(k, layers):  # the same functional program in both libraries
    inputs = k.Input(shape=(6,))
    a = layers.Dense(5, activation="relu")(inputs)
    b = layers.Dense(5, activation="tanh")(inputs)
    merged = layers.Concatenate()([a, layers.Add()([a, b])])
    outputs = layers.Dense(3, activation="softmax")(merged)
    return k.Model(inputs=inputs, outputs=outputs)


def test_functional_model_matches_keras(keras):
    x = RNG.standard_normal((32, 6)).astype(np.float32)
    y = np.arange(32) % 3
    reference = _branching_model(keras, keras.layers)
    model = _branching_model(optimist, optimist.layers)
    assert model.output_shape == (None, 3) and model.count_params() == reference.count_params()
    model.set_weights(reference.get_weights())
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    reference.compile("adam", "sparse_categorical_crossentropy")
    model.compile("adam", "sparse_categorical_crossentropy")
    expected = reference.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0)
    got = model.fit(x, y, batch_size=None, epochs=5, shuffle=False, verbose=0)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    assert "(None, 10)" in model.summary(print_fn=None)  # the Concatenate's output shape


def _two_input_model(k, layers):
    a, b = k.Input(shape=(4,), name="a"), k.Input(shape=(3,), name="b")
    merged = layers.Concatenate()([layers.Dense(5, activation="relu")(a), layers.Dense(5)(b)])
    return k.Model(inputs=[a, b], outputs=layers.Dense(3, activation="softmax")(merged))


@pytest.mark.parametrize("as_dict", [False, True])
def test_multi_input_model_matches_keras(keras, as_dict):
    x1 = RNG.standard_normal((24, 4)).astype(np.float32)
    x2 = RNG.standard_normal((24, 3)).astype(np.float32)
    y = np.arange(24) % 3
    x = {"a": x1, "b": x2} if as_dict else [x1, x2]
    val = ([x1[:8], x2[:8]], y[:8])
    reference = _two_input_model(keras, keras.layers)
    model = _two_input_model(optimist, optimist.layers)
    model.set_weights(reference.get_weights())
    # (no metrics: Keras 3.15 fails on "accuracy" with a multi-input model, "Invalid dtype")
    reference.compile("adam", "sparse_categorical_crossentropy")
    model.compile("adam", "sparse_categorical_crossentropy")
    kwargs = {"batch_size": 8, "epochs": 4, "shuffle": False, "validation_data": val, "verbose": 0}
    expected = reference.fit(x, y, **kwargs)
    got = model.fit(x, y, **kwargs)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(got.history[key], expected.history[key], rtol=1e-5)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
