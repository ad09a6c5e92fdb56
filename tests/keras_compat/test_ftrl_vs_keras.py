"""FTRL against Keras 3's ``Ftrl`` (torch backend) as the oracle: the Keras-style class trains
the same trajectories, ``optim.Ftrl`` takes the same steps as Keras' ``apply_gradients`` on every
path (weights and both state variables), and the two agree on configs and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from keras_compat.trajectory import assert_same_trajectory
from optimist import optimizers

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "by-name": lambda o, s: "ftrl",
    "rate": lambda o, s: o.Ftrl(0.1),
    "power": lambda o, s: o.Ftrl(0.1, learning_rate_power=-0.7),
    "fixed-rate-no-initial": lambda o, s: o.Ftrl(
        0.05, learning_rate_power=0.0, initial_accumulator_value=0.0
    ),
    "l1": lambda o, s: o.Ftrl(0.1, l1_regularization_strength=0.05),
    "l2": lambda o, s: o.Ftrl(0.1, l2_regularization_strength=0.5),
    "shrinkage": lambda o, s: o.Ftrl(0.1, l2_shrinkage_regularization_strength=0.2),
    "beta": lambda o, s: o.Ftrl(0.1, beta=1.0),
    "all": lambda o, s: o.Ftrl(
        0.1,
        learning_rate_power=-0.6,
        initial_accumulator_value=0.5,
        l1_regularization_strength=0.01,
        l2_regularization_strength=0.05,
        l2_shrinkage_regularization_strength=0.02,
        beta=0.5,
    ),
    "weight-decay": lambda o, s: o.Ftrl(0.1, weight_decay=0.05),
    "clipnorm": lambda o, s: o.Ftrl(0.1, clipnorm=0.3),
    "global-clipnorm": lambda o, s: o.Ftrl(0.1, global_clipnorm=0.3),
    "clipvalue": lambda o, s: o.Ftrl(0.1, clipvalue=0.05),
    "ema": lambda o, s: o.Ftrl(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=4),
    # the rate changes every step: Keras' beta / (2 lr) follows it
    "schedule-beta": lambda o, s: o.Ftrl(s.ExponentialDecay(0.2, 3, 0.5), beta=1.0),
    "cosine-warmup": lambda o, s: o.Ftrl(
        s.CosineDecay(0.05, 10, warmup_target=0.2, warmup_steps=3), l1_regularization_strength=0.01
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


# the rule alone: optim.Ftrl's settings -> Keras' arguments
# Keras turns the rate and Python numbers it passes to ops into float32 tensors (0.05 ->
# 0.0500000007), also beside float64 weights: every value here is exact in float32
SETTINGS = [
    {"lr": 0.0625},
    {"lr": 0.0625, "lr_power": -0.75, "l1": 20.0, "l2": 0.125, "l2_shrinkage": 0.0625, "beta": 0.5},
    {"lr": 0.03125, "lr_power": 0.0, "initial_accumulator_value": 0.0, "l1": 2.0},
]
KERAS_NAMES = {
    "lr": "learning_rate",
    "lr_power": "learning_rate_power",
    "initial_accumulator_value": "initial_accumulator_value",
    "l1": "l1_regularization_strength",
    "l2": "l2_regularization_strength",
    "l2_shrinkage": "l2_shrinkage_regularization_strength",
    "beta": "beta",
}
PATHS = {"engine": {"fused": True}, "per-tensor": {"foreach": False}, "buckets": {"foreach": True}}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "everything", "fixed-rate-l1"])
def test_optim_ftrl_steps_as_keras_apply_gradients(keras, settings, dtype, path):
    """20 steps on random gradients: the weights and Keras' ``accumulator`` and ``linear`` agree
    (relative to each array's largest value: 1e-12 in float64, 1e-6 in float32), and with L1
    the same coordinates are exactly zero."""
    rng = np.random.default_rng(3)
    shapes = [(17, 9), (33,)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    theirs = [keras.Variable(w, dtype=dtype) for w in start]
    keras_opt = keras.optimizers.Ftrl(**{KERAS_NAMES[k]: v for k, v in settings.items()})
    ours = [torch.tensor(w, requires_grad=True) for w in start]
    opt = oo.Ftrl(ours, **settings, **PATHS[path])
    for _ in range(20):
        grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
        pairs = zip(map(torch.tensor, grads), theirs, strict=True)
        keras_opt.apply_gradients(list(pairs))
        for p, g in zip(ours, grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
    numpy = keras.ops.convert_to_numpy
    rtol = 1e-12 if dtype == "float64" else 1e-6

    def close(mine: np.ndarray, expected: np.ndarray) -> None:
        # linear is a running sum whose terms cancel: its rounding is relative to the largest
        np.testing.assert_allclose(mine, expected, rtol=rtol, atol=rtol * np.abs(expected).max())

    for i, (p, v) in enumerate(zip(ours, theirs, strict=True)):
        mine, expected = p.detach().numpy(), numpy(v)
        close(mine, expected)
        state = opt.state[p]
        close(state["accumulator"].numpy(), numpy(keras_opt._accumulators[i]))
        close(state["linear"].numpy(), numpy(keras_opt._linears[i]))
        zeros = expected == 0
        assert 0 < zeros.sum() < zeros.size if settings.get("l1") else not zeros.any()
        np.testing.assert_array_equal(mine == 0, zeros)  # L1 zeroes the same weights exactly


def test_config_has_keras_keys_and_loads_both_ways(keras):
    kwargs = {
        "learning_rate": 0.05,
        "learning_rate_power": -0.7,
        "initial_accumulator_value": 0.2,
        "l1_regularization_strength": 0.01,
        "l2_regularization_strength": 0.02,
        "l2_shrinkage_regularization_strength": 0.03,
        "beta": 0.5,
        "clipnorm": 1.0,
    }
    theirs = keras.optimizers.Ftrl(**kwargs).get_config()
    mine = optimizers.Ftrl(**kwargs).get_config()
    assert set(mine) == set(theirs)
    assert mine["name"] == "ftrl" and theirs["name"].startswith("ftrl")  # Keras numbers its names
    for key, value in theirs.items():
        if key == "name":
            continue
        assert mine[key] == (pytest.approx(value, rel=1e-7) if isinstance(value, float) else value)
    # each side reads the other's config
    assert optimizers.Ftrl.from_config(theirs).get_config()["beta"] == 0.5
    again = keras.optimizers.Ftrl.from_config(mine).get_config()
    assert again["learning_rate_power"] == -0.7 and again["l1_regularization_strength"] == 0.01


BAD = [
    {"learning_rate_power": 0.5},
    {"initial_accumulator_value": -0.1},
    {"l1_regularization_strength": -1.0},
    {"l2_regularization_strength": -1.0},
    {"l2_shrinkage_regularization_strength": -1.0},
    {"nonsense": 1.0},
]


@pytest.mark.parametrize("kwargs", BAD, ids=lambda k: next(iter(k)))
def test_bad_arguments_raise_as_in_keras(keras, kwargs):
    with pytest.raises(ValueError):
        keras.optimizers.Ftrl(**kwargs)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        optimizers.Ftrl(**kwargs)


def test_arguments_at_their_bounds_are_accepted_as_in_keras(keras):
    kwargs = {"learning_rate_power": 0.0, "initial_accumulator_value": 0.0}
    assert keras.optimizers.Ftrl(**kwargs).learning_rate_power == 0.0
    assert optimizers.Ftrl(**kwargs).learning_rate_power == 0.0
