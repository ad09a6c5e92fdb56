"""``gradient_accumulation_steps`` and ``loss_scale_factor`` follow Keras 3: same trajectory."""

from __future__ import annotations

import numpy as np
import pytest

import optimist
from optimist import optimizers
from optimist.layers import Dense

RNG = np.random.default_rng(3)
X = RNG.standard_normal((48, 5)).astype(np.float32)
Y = RNG.standard_normal((48, 3)).astype(np.float32)
WEIGHTS = [
    (0.5 * RNG.standard_normal((5, 3))).astype(np.float32),
    (0.1 * RNG.standard_normal(3)).astype(np.float32),
]

# 4 batches of 12 per epoch: with k = 3 the accumulation runs across epoch boundaries
CASES = {
    "sgd-accumulate-2": lambda o, s: o.SGD(0.1, gradient_accumulation_steps=2),
    "sgd-momentum-accumulate-3": lambda o, s: o.SGD(
        0.05, momentum=0.9, gradient_accumulation_steps=3
    ),
    "adam-accumulate-3": lambda o, s: o.Adam(0.05, gradient_accumulation_steps=3),
    "adamw-clipnorm-accumulate-2": lambda o, s: o.AdamW(
        0.05, weight_decay=0.1, global_clipnorm=0.5, gradient_accumulation_steps=2
    ),
    "rmsprop-schedule-accumulate-2": lambda o, s: o.RMSprop(
        s.ExponentialDecay(0.02, 3, 0.5), momentum=0.5, gradient_accumulation_steps=2
    ),
    "adam-ema-accumulate-2": lambda o, s: o.Adam(
        0.05,
        use_ema=True,
        ema_momentum=0.5,
        ema_overwrite_frequency=3,
        gradient_accumulation_steps=2,
    ),
    "adam-loss-scale": lambda o, s: o.Adam(0.05, loss_scale_factor=1024.0),
    "sgd-loss-scale-accumulate-2": lambda o, s: o.SGD(
        0.1, loss_scale_factor=0.5, gradient_accumulation_steps=2
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    make = CASES[case]
    reference = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    reference.set_weights(WEIGHTS)
    keras_opt = make(keras.optimizers, keras.optimizers.schedules)
    reference.compile(optimizer=keras_opt, loss="mse")
    expected = reference.fit(X, Y, batch_size=12, epochs=5, shuffle=False, verbose=0)

    model = optimist.Sequential([Dense(3, input_shape=(5,))])
    model.set_weights(WEIGHTS)
    model.compile(optimizer=make(optimizers, optimizers.schedules), loss="mse")
    got = model.fit(X, Y, batch_size=12, epochs=5, shuffle=False, verbose=0)

    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    assert int(model.optimizer.iterations) == int(keras_opt.iterations)  # updates, not calls
    assert got.history["loss"][-1] < got.history["loss"][0]


def test_accumulation_updates_every_kth_call_with_the_mean_gradient():
    """Independent of Keras: k calls with gradients g1..gk == one SGD step with their mean."""
    model = optimist.Sequential([Dense(3, input_shape=(5,))])
    model.set_weights(WEIGHTS)
    model.compile(optimizers.SGD(0.1, gradient_accumulation_steps=3), "mse")
    before = [p.detach().clone().numpy() for p in model.parameters()]  # torch's layouts
    grads = []
    for i in range(3):
        w_now = model.get_weights()
        model.fit(X[i * 12 : (i + 1) * 12], Y[i * 12 : (i + 1) * 12], batch_size=None, verbose=0)
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        if i < 2:  # no update yet
            for a, b in zip(model.get_weights(), w_now, strict=True):
                np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 1
    # on the third call p.grad holds (g3 + g1 + g2) / 3 (the accumulated mean)
    for p, g, w0 in zip(model.parameters(), grads[-1], before, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), w0 - 0.1 * g.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"gradient_accumulation_steps": 1}, "must be an integer >= 2"),
        ({"gradient_accumulation_steps": 2.5}, "must be an integer >= 2"),
        ({"loss_scale_factor": 0.0}, "must be > 0"),
        ({"loss_scale_factor": "big"}, "must be a number"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizers.Adam(**kwargs)


def test_config_round_trip_keeps_both():
    opt = optimizers.Adam(0.01, loss_scale_factor=8.0, gradient_accumulation_steps=4)
    again = optimizers.deserialize(optimizers.serialize(opt))
    assert again.loss_scale_factor == 8.0 and again.gradient_accumulation_steps == 4
