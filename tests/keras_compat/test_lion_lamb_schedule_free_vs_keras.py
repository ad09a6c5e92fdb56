"""Keras 3's Lion, Lamb and ScheduleFreeAdamW on optimist: Keras' trajectories, names, configs
and argument errors. Lion and Lamb against Keras on its torch backend (the ``keras`` fixture);
ScheduleFreeAdamW against Keras on its JAX backend, in a process of its own (Keras' torch backend
computes another rule: see ``optimist.training.lion_lamb_schedule_free`` and the last test)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import optimist
from helpers import require
from keras_compat.trajectory import RNG, STEPS, WEIGHTS, X, Y, assert_same_trajectory
from optimist import optim, optimizers
from optimist.layers import Dense

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "lion-by-name": lambda o, s: "lion",
    "lion-betas": lambda o, s: o.Lion(0.01, beta_1=0.5, beta_2=0.9),
    "lion-beta-1-one": lambda o, s: o.Lion(0.01, beta_1=1.0),
    "lion-weight-decay": lambda o, s: o.Lion(0.01, weight_decay=0.5),
    "lion-clipnorm-schedule": lambda o, s: o.Lion(s.ExponentialDecay(0.02, 3, 0.5), clipnorm=0.1),
    "lion-ema": lambda o, s: o.Lion(
        0.01, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=3
    ),
    "lamb-defaults": lambda o, s: o.Lamb(),
    "lamb-betas-epsilon": lambda o, s: o.Lamb(0.05, beta_1=0.5, beta_2=0.9, epsilon=0.1),
    "lamb-weight-decay": lambda o, s: o.Lamb(0.05, weight_decay=0.2),
    "lamb-global-clipnorm-cosine": lambda o, s: o.Lamb(
        s.CosineDecay(0.05, 10, warmup_target=0.1, warmup_steps=3), global_clipnorm=0.1
    ),
    "lamb-clipvalue-ema": lambda o, s: o.Lamb(
        0.05, clipvalue=0.01, use_ema=True, ema_momentum=0.6, ema_overwrite_frequency=4
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lion_and_lamb_follow_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


# ScheduleFreeAdamW: expressions in o (optimizers) and s (schedules), evaluated in both processes
SF_CASES = {
    "by-name": '"schedulefreeadamw"',
    "betas-epsilon": "o.ScheduleFreeAdamW(0.05, beta_1=0.5, beta_2=0.9, epsilon=1e-3)",
    "warmup": "o.ScheduleFreeAdamW(0.05, warmup_steps=4)",
    "weight-decay-warmup": "o.ScheduleFreeAdamW(0.05, weight_decay=0.2, warmup_steps=3)",
    "schedule-clipnorm": "o.ScheduleFreeAdamW(s.ExponentialDecay(0.1, 3, 0.5), clipnorm=0.1)",
    "ema": "o.ScheduleFreeAdamW(0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=3)",
    # its own step count (warmup, average weights) counts updates, as Keras' iterations
    "accumulation": "o.ScheduleFreeAdamW(0.05, warmup_steps=2, gradient_accumulation_steps=2)",
}
X_VAL = RNG.standard_normal((16, 5)).astype(np.float32)
Y_VAL = RNG.standard_normal((16, 3)).astype(np.float32)


def _keras_on_jax(cases: dict[str, str], tmp: Path) -> dict[str, dict[str, list]]:
    """Each case's losses, validation losses and final weights from Keras on JAX."""
    require(
        importlib.util.find_spec("jax") is not None, "JAX (Keras' jax backend)", "pip install jax"
    )
    data = tmp / "data.npz"
    np.savez(data, x=X, y=Y, x_val=X_VAL, y_val=Y_VAL, w0=WEIGHTS[0], w1=WEIGHTS[1], steps=STEPS)
    script = Path(__file__).with_name("keras_jax_fit.py")
    done = subprocess.run(
        [sys.executable, str(script), str(data)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def keras_jax_sf(tmp_path_factory):
    return _keras_on_jax(SF_CASES, tmp_path_factory.mktemp("keras-jax"))


def _optimist_fit(expression: str, **kwargs):
    model = optimist.Sequential([Dense(3, input_shape=(5,))])
    model.set_weights(WEIGHTS)
    optimizer = eval(expression, {"o": optimizers, "s": optimizers.schedules})
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(
        X,
        Y,
        batch_size=None,
        epochs=STEPS,
        shuffle=False,
        validation_data=(X_VAL, Y_VAL),
        verbose=0,
        **kwargs,
    )
    return model, history.history


@pytest.mark.parametrize("case", list(SF_CASES))
def test_schedule_free_adamw_follows_keras_on_jax(keras_jax_sf, case):
    expected = keras_jax_sf[case]
    model, got = _optimist_fit(SF_CASES[case])
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    # Keras evaluates at the weights it trains (y): so does optimist's fit for this class
    np.testing.assert_allclose(got["val_loss"], expected["val_loss"], rtol=1e-5)
    for mine, theirs in zip(model.get_weights(), expected["weights"], strict=True):
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-4, atol=1e-5)
    assert got["loss"][-1] < got["loss"][0]
    assert model.optimizer.training  # never switched to the average x
    if case != "ema":  # (with use_ema, fit's end writes the moving average into the model)
        evaluated = model.evaluate(X_VAL, Y_VAL, verbose=0)
        assert evaluated == pytest.approx(got["val_loss"][-1], rel=1e-6)


@pytest.mark.parametrize("beta_1", [0.9, 0.5])
def test_keras_torch_backend_schedule_free_is_beta_1_one(keras, beta_1):
    """Keras 3.15 on torch: ``momentum_old = momentum.value`` is updated in place before x is
    recovered from it, so y is the plain average of the z whatever beta_1: optimist's numbers
    with ``beta_1=1``. If this fails, Keras changed: compare with its torch backend again."""

    def make(o, s):
        keras_side = o is not optimizers
        return o.ScheduleFreeAdamW(0.05, beta_1=beta_1 if keras_side else 1.0, weight_decay=0.1)

    assert_same_trajectory(keras, make)


def test_lion_signs_agree_with_keras_at_near_ties(keras):
    """Lion's update is ``lr * sign(c)``: where ``c = beta_1 m + (1 - beta_1) g`` is within a few
    ulps of 0, only the same coefficients give the same signs. Keras' torch backend and optimist
    compute c from the same Python floats: equal bit for bit there too."""
    rng = np.random.default_rng(1)
    w0 = rng.standard_normal(4096).astype(np.float32)
    g1 = rng.standard_normal(4096).astype(np.float32)
    variable = keras.Variable(w0)
    theirs = keras.optimizers.Lion(0.01)
    theirs.build([variable])
    theirs.apply([torch.from_numpy(g1)], [variable])
    m = np.asarray(theirs._momentums[0].numpy())
    beta_1 = np.float32(0.9)
    g2 = -(m * beta_1) / (np.float32(1) - beta_1)  # c ~ 0: a few ulps either side
    g2 = (g2 + rng.integers(-3, 4, g2.shape) * np.spacing(g2)).astype(np.float32)
    theirs.apply([torch.from_numpy(g2)], [variable])

    p = torch.tensor(w0, requires_grad=True)
    mine = optimizers.Lion(0.01).build([p])
    for g in (g1, g2):
        p.grad = torch.from_numpy(g)
        mine.step()
    assert np.array_equal(p.detach().numpy(), np.asarray(variable.numpy()))


def test_names_as_keras(keras):
    for name, cls in (
        ("lion", optimizers.Lion),
        ("schedulefreeadamw", optimizers.ScheduleFreeAdamW),
    ):
        assert type(keras.optimizers.get(name)).__name__ == cls.__name__
        assert type(optimizers.get(name)) is cls
        model = optimist.Sequential([Dense(3, input_shape=(5,))])
        model.compile(name, "mse")  # Keras' class with Keras' defaults
        built = model.optimizer.keras_optimizer
        assert type(built) is cls
        assert built.get_config() == cls().get_config()
    # Keras 3.15 has no string name for Lamb: "lamb" stays the registry's LAMB
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier"):
        keras.optimizers.get("lamb")
    with pytest.raises(ValueError, match="Could not interpret optimizer identifier"):
        optimizers.get("lamb")
    model = optimist.Sequential([Dense(3, input_shape=(5,))])
    model.compile("lamb", "mse")
    assert isinstance(model.optimizer, optim.LAMB)
    assert getattr(model.optimizer, "keras_optimizer", None) is None


KWARGS = {
    "Lion": {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.95, "weight_decay": 0.1},
    "Lamb": {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-5},
    "ScheduleFreeAdamW": {"learning_rate": 0.02, "beta_1": 0.8, "epsilon": 1e-6, "warmup_steps": 7},
}


@pytest.mark.parametrize("name", list(KWARGS))
@pytest.mark.parametrize("custom", [False, True])
def test_config_as_keras(keras, name, custom):
    kwargs = KWARGS[name] if custom else {}
    theirs = getattr(keras.optimizers, name)(**kwargs).get_config()
    mine = getattr(optimizers, name)(**kwargs)
    config = mine.get_config()
    assert list(config) == list(theirs)
    assert config.pop("name") == re.sub(r"_\d+$", "", theirs.pop("name"))  # Keras numbers names
    for key, value in theirs.items():  # Keras keeps its learning rate as a float32
        assert config[key] == (pytest.approx(value, rel=1e-7) if key == "learning_rate" else value)
    config = mine.get_config()
    again = type(mine).from_config(config)
    assert again.get_config() == config
    copy = optimizers.deserialize(optimizers.serialize(mine))
    assert type(copy) is type(mine) and copy.get_config() == config
    assert type(optimizers.get(optimizers.serialize(mine))) is type(mine)


def test_schedule_config_round_trip():
    mine = optimizers.Lamb(optimizers.schedules.ExponentialDecay(0.1, 3, 0.5))
    again = optimizers.deserialize(optimizers.serialize(mine))
    assert again.get_config() == mine.get_config()
    assert float(again.learning_rate) == float(mine.learning_rate) == 0.1


BAD = [
    ("Lion", {"beta_1": 0.0}),
    ("Lion", {"beta_1": -0.5}),
    ("Lion", {"beta_1": 1.5}),
    ("Lion", {"lr": 0.1}),
    ("Lion", {"learning_rate": "fast"}),
    ("Lion", {"clipnorm": 1.0, "clipvalue": 1.0}),
    ("Lamb", {"learning_rate": None}),
    ("Lamb", {"warmup_steps": 3}),
    ("Lamb", {"gradient_accumulation_steps": 1}),
    ("ScheduleFreeAdamW", {"gradient_accumulation_steps": 1.5}),
    ("ScheduleFreeAdamW", {"global_clipnorm": 1.0, "clipnorm": 1.0}),
    ("ScheduleFreeAdamW", {"momentum": 0.9}),
]


@pytest.mark.parametrize("name,kwargs", BAD)
def test_bad_arguments_fail_as_in_keras(keras, name, kwargs):
    with pytest.raises(ValueError) as theirs:
        getattr(keras.optimizers, name)(**kwargs)
    with pytest.raises(ValueError) as mine:
        getattr(optimizers, name)(**kwargs)
    if "beta_1" in kwargs:  # Lion's own check: Keras' message
        assert str(mine.value) == str(theirs.value)
