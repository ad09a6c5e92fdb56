"""Keras 3's Adafactor (``optimist.optimizers.Adafactor``) against Keras itself: trajectories by
name and for every argument that changes the rule, a model with dead ReLU units (zero gradient
entries), vectors and scalars alone, rank > 2, its config and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from keras_compat.trajectory import X, Y, assert_same_trajectory
from optimist import optim, optimizers
from optimist.layers import Dense

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "by-name": lambda o, s: "adafactor",
    "learning-rate": lambda o, s: o.Adafactor(0.05),
    # rho_t = min(lr, 1/sqrt(t)) bites from t = 5 on, relative_step or not
    "relative-step-off-large-rate": lambda o, s: o.Adafactor(0.5, relative_step=False),
    "relative-step-large-rate": lambda o, s: o.Adafactor(0.5),
    "clip-threshold-below-one": lambda o, s: o.Adafactor(0.1, clip_threshold=0.5),
    "clip-threshold-above-one": lambda o, s: o.Adafactor(0.1, clip_threshold=3.0),
    "beta-2-decay-epsilon-2": lambda o, s: o.Adafactor(0.1, beta_2_decay=-0.5, epsilon_2=0.3),
    "big-epsilon-1": lambda o, s: o.Adafactor(0.1, epsilon_1=0.5),
    "weight-decay": lambda o, s: o.Adafactor(0.1, weight_decay=0.5),
    "clipnorm": lambda o, s: o.Adafactor(0.1, clipnorm=0.1),
    "global-clipnorm": lambda o, s: o.Adafactor(0.1, global_clipnorm=0.1),
    "clipvalue": lambda o, s: o.Adafactor(0.1, clipvalue=0.01),
    "ema": lambda o, s: o.Adafactor(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=4),
    "schedule": lambda o, s: o.Adafactor(s.CosineDecay(1.0, 10, warmup_target=2.0, warmup_steps=3)),
    "accumulation-schedule": lambda o, s: o.Adafactor(
        s.ExponentialDecay(0.2, 2, 0.5), gradient_accumulation_steps=2
    ),
    "loss-scale": lambda o, s: o.Adafactor(0.1, loss_scale_factor=64.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


# --- a ReLU layer with dead units: zero gradient columns and rows --------------------------------

HIDDEN, DEAD = 8, (1, 4, 6)


def _relu_weights() -> list[np.ndarray]:
    """Dense(5 -> 8, relu) whose units 1, 4, 6 never fire on X (bias -100), then Dense(8 -> 3):
    the first kernel's columns and bias entries of those units, and the second kernel's rows,
    get exactly zero gradients."""
    rng = np.random.default_rng(2)
    bias = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
    bias[list(DEAD)] = -100.0
    return [
        (0.5 * rng.standard_normal((5, HIDDEN))).astype(np.float32),
        bias,
        (0.5 * rng.standard_normal((HIDDEN, 3))).astype(np.float32),
        (0.1 * rng.standard_normal(3)).astype(np.float32),
    ]


@pytest.mark.parametrize("learning_rate", [0.001, 0.1])
def test_dead_relu_units_same_trajectory_as_keras(keras, learning_rate):
    weights = _relu_weights()
    reference = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(3)]
    )
    reference.set_weights(weights)
    reference.compile(optimizer=keras.optimizers.Adafactor(learning_rate), loss="mse")
    expected = reference.fit(X, Y, batch_size=64, epochs=10, shuffle=False, verbose=0)

    def model(optimizer):
        net = optimist.Sequential([Dense(HIDDEN, activation="relu", input_shape=(5,)), Dense(3)])
        net.set_weights(weights)
        net.compile(optimizer=optimizer, loss="mse")
        return net, net.fit(X, Y, batch_size=None, epochs=10, shuffle=False, verbose=0)

    ours, got = model(optimizers.Adafactor(learning_rate))
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    for mine, theirs in zip(ours.get_weights(), reference.get_weights(), strict=True):
        assert np.isfinite(mine).all()
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    kernel, bias, kernel2, _ = ours.get_weights()
    dead = list(DEAD)
    assert np.array_equal(kernel[:, dead], weights[0][:, dead])  # no gradient, no move
    assert np.array_equal(bias[dead], weights[1][dead])
    assert np.array_equal(kernel2[dead], weights[2][dead])
    assert got.history["loss"][-1] < got.history["loss"][0]
    # what Keras' epsilon_1 placement is for: torch's floor (eps1^2, 0 in float32) gives the
    # dead units' entries 0/0, and the loss turns NaN
    with pytest.raises(FloatingPointError, match="NaN"):
        model(lambda params: optim.Adafactor(params, lr=learning_rate, eps=(1e-30, 1e-3)))


# --- the optimizer alone on variables of any rank -----------------------------------------------


def _apply_both(keras, make, shapes, steps=8, zero=None):
    """Step Keras' and optimist's optimizer on the same variables, the gradient of
    ``0.5 * sum(w * (p - target)^2)`` each step (``zero(g)`` zeroes entries in place).
    Returns (optimist's, Keras') final values."""
    rng = np.random.default_rng(3)
    starts = [np.asarray(rng.standard_normal(s), np.float32) for s in shapes]
    targets = [np.asarray(rng.standard_normal(s), np.float32) for s in shapes]
    scales = [np.asarray(rng.uniform(0.1, 3.0, s), np.float32) for s in shapes]
    theirs = [keras.Variable(v) for v in starts]
    ours = [torch.tensor(v, requires_grad=True) for v in starts]
    k_opt = make(keras.optimizers)
    o_opt = make(optimizers).build(ours)

    def grad(value, target, scale):
        g = np.asarray(scale * (value - target), np.float32)
        if zero is not None:
            zero(g)
        return g

    for _ in range(steps):
        values = [np.asarray(v.value.detach().cpu()) for v in theirs]
        grads = [grad(*a) for a in zip(values, targets, scales, strict=True)]
        k_opt.apply([keras.ops.convert_to_tensor(g) for g in grads], theirs)
        for p, target, scale in zip(ours, targets, scales, strict=True):
            p.grad = torch.from_numpy(grad(p.detach().numpy(), target, scale))
        o_opt.step()
    return [p.detach().numpy() for p in ours], [np.asarray(v.value.detach().cpu()) for v in theirs]


@pytest.mark.parametrize(
    "make",
    [
        lambda o: o.Adafactor(),
        lambda o: o.Adafactor(0.3, clip_threshold=0.7, weight_decay=0.2),
    ],
    ids=["defaults", "clip-decay"],
)
@pytest.mark.parametrize(
    "shapes",
    [[(7,), (3,), ()], [(2, 3, 4), (2, 2, 3, 5), (6,)]],
    ids=["rank-1-and-0-only", "rank-3-and-4"],
)
def test_any_rank_same_as_keras(keras, make, shapes):
    def zero_some(g):  # one zero entry per tensor, and a zero row in the rank > 2 ones
        if g.ndim:
            g.reshape(-1)[0] = 0.0
        if g.ndim > 2:
            g[..., 1, :] = 0.0

    ours, theirs = _apply_both(keras, make, shapes, zero=zero_some)
    for mine, expected in zip(ours, theirs, strict=True):
        assert np.isfinite(mine).all()
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-6)


def test_zero_row_and_column_keras_nan_optimist_no_move(keras):
    """The one place the numbers differ: a factored tensor whose gradient has an all-zero row
    and an all-zero column. Keras forms v = (r / mean(r)) c = eps1^2 / mean(r) there, 0 in
    float32, and 0/0 makes the whole tensor NaN; optimist forms 1/sqrt(v) from the factors'
    inverse roots and leaves those entries where they are."""

    def zero(g):
        g[0, :] = 0.0
        g[:, 2] = 0.0

    ours, theirs = _apply_both(keras, lambda o: o.Adafactor(0.1), [(4, 5)], steps=2, zero=zero)
    assert np.isnan(theirs[0]).all()
    assert np.isfinite(ours[0]).all()


# --- config, names and errors -------------------------------------------------------------------

SETTINGS = {
    "learning_rate": 0.25,
    "beta_2_decay": -0.6,
    "epsilon_1": 1e-20,
    "epsilon_2": 0.01,
    "clip_threshold": 0.5,
    "relative_step": False,
    "weight_decay": 0.1,
    "clipnorm": 2.0,
    "use_ema": True,
    "ema_momentum": 0.9,
    "gradient_accumulation_steps": 3,
}


def test_config_has_keras_keys_and_values_and_round_trips(keras):
    theirs = keras.optimizers.Adafactor(**SETTINGS).get_config()
    mine = optimizers.Adafactor(**SETTINGS).get_config()
    assert set(mine) == set(theirs)
    for key in set(mine) - {"name", "learning_rate"}:  # Keras numbers its names; lr is float32
        assert mine[key] == theirs[key], key
    assert mine["learning_rate"] == pytest.approx(theirs["learning_rate"], rel=1e-7)
    again = optimizers.Adafactor.from_config(mine)
    assert again.get_config() == mine
    assert optimizers.deserialize(optimizers.serialize(again)).get_config() == mine
    # Keras' own config builds ours, and ours builds Keras'
    assert optimizers.Adafactor.from_config({**theirs, "name": "adafactor"}).get_config() == {
        **mine,
        "learning_rate": theirs["learning_rate"],
    }
    assert keras.optimizers.Adafactor.from_config(mine).get_config()["clip_threshold"] == 0.5


def test_by_name_is_keras_adafactor_with_keras_defaults(keras):
    theirs = keras.optimizers.get("adafactor").get_config()
    mine = optimizers.get("adafactor")
    assert type(mine) is optimizers.Adafactor
    config = mine.get_config()
    assert set(config) == set(theirs)
    for key in set(config) - {"name", "learning_rate"}:
        assert config[key] == theirs[key], key
    assert config["learning_rate"] == pytest.approx(theirs["learning_rate"], rel=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"foo": 1}, "not recognized"),
        ({"lr": 0.1}, "not recognized"),
        ({"clipnorm": 1.0, "clipvalue": 1.0}, "Only one of `clipnorm`, `clipvalue`"),
        ({"use_ema": True, "ema_momentum": 2.0}, "ema_momentum"),
        ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps"),
    ],
)
def test_bad_base_arguments_raise_as_keras(keras, kwargs, says):
    with pytest.raises(ValueError, match=says):
        keras.optimizers.Adafactor(**kwargs)
    with pytest.raises(ValueError, match=says):
        optimizers.Adafactor(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip_threshold": 0.0},
        {"clip_threshold": -1.0},
        {"epsilon_1": -1e-30},
        {"epsilon_2": -0.1},
        {"beta_2_decay": 0.5},
        {"clip_threshold": float("nan")},
    ],
)
def test_values_that_break_keras_own_update_are_refused(keras, kwargs):
    keras.optimizers.Adafactor(**kwargs)  # Keras takes them (and then divides by zero, ...)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        optimizers.Adafactor(**kwargs)
