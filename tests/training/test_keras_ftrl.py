"""Keras' ``Ftrl`` on the Keras-style surface (``optimist.optimizers.Ftrl``): by name, configs,
save and resume, its errors; and what ``optim.Ftrl`` adds to the rule tables (tests/engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optim, optimizers
from optimist.layers import Dense
from optimist.optim import codecs
from optimist.training import optimizers as keras_optimizers

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 6)).astype(np.float32)
Y = (X @ RNG.standard_normal((6, 2))).astype(np.float32)


def _model() -> optimist.Sequential:
    torch.manual_seed(0)
    return optimist.Sequential([Dense(5, activation="tanh", input_shape=(6,)), Dense(2)])


def _ftrl() -> optimizers.Ftrl:
    return optimizers.Ftrl(
        optimizers.schedules.ExponentialDecay(0.2, 4, 0.7),
        learning_rate_power=-0.6,
        l1_regularization_strength=0.01,
        l2_shrinkage_regularization_strength=0.01,
        beta=1.0,
    )


@pytest.mark.parametrize("name", ["ftrl", "Ftrl", "FTRL"])
def test_compile_by_name_builds_keras_ftrl_with_keras_defaults(name):
    model = _model()
    model.compile(optimizer=name, loss="mse")
    keras_opt = model.optimizer.keras_optimizer
    assert type(keras_opt) is optimizers.Ftrl and keras_optimizers.is_keras_name(name)
    assert isinstance(model.optimizer, optim.Ftrl)
    hyper = model.optimizer.param_groups[0]
    expected = {
        "lr": 0.001,
        "lr_power": -0.5,
        "initial_accumulator_value": 0.1,
        "l1": 0.0,
        "l2": 0.0,
        "l2_shrinkage": 0.0,
        "beta": 0.0,
        "weight_decay": 0.0,  # Keras' decay is the base class's, before the rule
    }
    assert {k: hyper[k] for k in expected} == expected
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    state = model.optimizer.state[next(model.parameters())]
    assert set(state) == {"accumulator", "linear"}  # Keras' variable names, no step
    assert len(keras_opt.variables) == 2 * len(list(model.parameters()))


def test_get_serialize_deserialize_and_config_round_trip():
    opt = _ftrl()
    config = opt.get_config()
    assert config["learning_rate"]["class_name"] == "ExponentialDecay"
    again = optimizers.deserialize(optimizers.serialize(opt))
    assert type(again) is optimizers.Ftrl and again.get_config() == config
    assert optimizers.Ftrl.from_config(config).get_config() == config
    assert type(optimizers.get("ftrl")) is optimizers.Ftrl
    assert optimizers.get("ftrl").get_config() == optimizers.Ftrl().get_config()


def test_save_and_load_model_then_training_on_equals_uninterrupted(tmp_path):
    straight = _model()
    straight.compile(_ftrl(), "mse")
    straight.fit(X, Y, batch_size=16, epochs=4, shuffle=False, verbose=0)

    half = _model()
    half.compile(_ftrl(), "mse")
    half.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    half.save(tmp_path / "ftrl.pt")
    resumed = optimist.load_model(tmp_path / "ftrl.pt")
    assert type(resumed.optimizer.keras_optimizer) is optimizers.Ftrl
    assert resumed.optimizer.iterations == 8
    resumed.fit(X, Y, batch_size=16, epochs=4, initial_epoch=2, shuffle=False, verbose=0)

    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert straight.history.history["loss"][2:] == resumed.history.history["loss"]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"learning_rate_power": 0.1}, "learning_rate_power"),
        ({"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
        ({"l1_regularization_strength": -1.0}, "l1_regularization_strength"),
        ({"l2_regularization_strength": float("nan")}, "l2_regularization_strength"),
        ({"l2_shrinkage_regularization_strength": -1.0}, "l2_shrinkage_regularization_strength"),
        ({"beta": -1.0}, "beta"),  # (Keras accepts a negative beta: a negative denominator)
        ({"lr": 0.1}, "learning_rate"),  # Keras 3's name, said so
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        optimizers.Ftrl(**kwargs)


def test_a_zero_learning_rate_is_refused_where_keras_would_divide_by_it():
    model = _model()
    with pytest.raises(ValueError, match=r"Invalid lr: 0.0 \(Ftrl divides by the learning rate"):
        model.compile(optimizers.Ftrl(0.0), "mse")
    model = _model()
    model.compile(optimizers.Ftrl(lambda step: 0.1 if step < 2 else 0.0), "mse")
    with pytest.raises(ValueError, match=r"Invalid lr: 0.0"):
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)


# --- optim.Ftrl (torch conventions) ------------------------------------------------------------


def test_optim_ftrl_checks_its_arguments():
    p = [torch.zeros(3, requires_grad=True)]
    for kwargs, match in (
        ({"lr": 0.0}, r"Invalid lr: 0.0 \(Ftrl divides"),
        ({"lr_power": 0.5}, r"Invalid lr_power: 0.5 \(lr_power must be a finite number <= 0\)"),
        ({"lr_power": float("-inf")}, r"Invalid lr_power: -inf"),
        ({"l1": -0.1}, r"Invalid l1: -0.1"),
        ({"beta": float("nan")}, r"Invalid beta: nan"),
        ({"initial_accumulator_value": -1.0}, r"Invalid initial_accumulator_value"),
    ):
        with pytest.raises(ValueError, match=match):
            optim.Ftrl(p, **kwargs)


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "int8"])
def test_optim_ftrl_l1_gives_exact_zeros_and_the_accumulator_starts_at_its_value(state_dtype):
    """The weights are recomputed from ``z`` each step: with L1, coordinates whose ``|z| <= l1``
    are exactly 0 (a sparse model), the others shrunk towards it; ``accumulator`` starts at
    ``initial_accumulator_value`` in every storage format (int8: one code per value)."""
    torch.manual_seed(1)
    p = torch.randn(5000, requires_grad=True)  # large enough for int8 state
    settings = {"initial_accumulator_value": 0.3, "state_dtype": state_dtype}
    start = optim.functional.init_state("ftrl", p.detach(), **settings)
    stored = codecs.decode(start["accumulator"], start.get("accumulator_absmax"), torch.float32)
    initial = torch.tensor(0.3, dtype=torch.bfloat16 if state_dtype == "bfloat16" else None)
    assert torch.equal(stored, torch.full((5000,), initial.item()))  # (int8: 0.3 is its absmax)
    opt = optim.Ftrl([p], lr=0.1, l1=2.0, **settings)
    p.grad = torch.randn(5000)
    opt.step()
    z = opt.state[p]["linear"]
    if state_dtype is None:  # (quantized z rounds; the zeros follow the stored z elsewhere)
        assert torch.equal(p == 0, z.abs() <= 2.0)
    assert 0.2 < (p == 0).float().mean() < 0.9
