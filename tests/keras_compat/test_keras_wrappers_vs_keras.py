"""Keras 3's LossScaleOptimizer, MultiOptimizer and OptimizerMap: the same programs in Keras
(torch backend) and optimist give the same losses, weights, loss scales and step counts, the
same configs and the same errors."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

import optimist
from keras_compat.trajectory import assert_same_trajectory
from optimist import optimizers

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "lso-sgd-defaults": lambda o, s: o.LossScaleOptimizer(o.SGD()),
    "lso-sgd": lambda o, s: o.LossScaleOptimizer(o.SGD(0.1)),
    "lso-adam-growth": lambda o, s: o.LossScaleOptimizer(
        o.Adam(0.05), initial_scale=2.0**10, dynamic_growth_steps=3
    ),
    "lso-adamw-schedule-clipnorm-ema": lambda o, s: o.LossScaleOptimizer(
        o.AdamW(
            s.ExponentialDecay(0.05, 3, 0.5),
            weight_decay=0.1,
            clipnorm=0.5,
            use_ema=True,
            ema_momentum=0.5,
        )
    ),
    "lso-rmsprop-odd-scale": lambda o, s: o.LossScaleOptimizer(
        o.RMSprop(0.01, momentum=0.5), initial_scale=3.0, dynamic_growth_steps=2
    ),
    "lso-sgd-accumulation": lambda o, s: o.LossScaleOptimizer(
        o.SGD(0.1, momentum=0.5, gradient_accumulation_steps=3), initial_scale=5.0
    ),
    "multi-defaults": lambda o, s: o.MultiOptimizer(o.OptimizerMap(o.SGD())),
    "multi-kernel-adam-bias-sgd": lambda o, s: o.MultiOptimizer(
        o.OptimizerMap(o.SGD(0.1), {".*/kernel": o.Adam(0.05)})
    ),
    "multi-loss-scale-factor-clipvalue-momentum": lambda o, s: o.MultiOptimizer(
        o.OptimizerMap(o.SGD(0.1, momentum=0.9), {".*/bias": o.Adam(0.05, clipvalue=0.01)}),
        loss_scale_factor=8.0,
    ),
    "multi-global-clipnorm-weight-decay": lambda o, s: o.MultiOptimizer(
        o.OptimizerMap(
            o.SGD(0.1, global_clipnorm=0.1), {".*/kernel": o.AdamW(0.05, weight_decay=0.2)}
        )
    ),
    "lso-around-multi-schedule": lambda o, s: o.LossScaleOptimizer(
        o.MultiOptimizer(
            o.OptimizerMap(o.SGD(s.ExponentialDecay(0.1, 2, 0.5)), {".*/bias": o.Adam(0.05)})
        ),
        initial_scale=3.0,
        dynamic_growth_steps=2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


# -- dynamic loss scaling: skipped steps, halving and growth ---------------------------------------
RNG = np.random.default_rng(3)
X = RNG.standard_normal((64, 5)).astype(np.float32)
Y_BIG = (1000 * RNG.standard_normal((64, 3))).astype(np.float32)
W = [(0.5 * RNG.standard_normal((5, 3))).astype(np.float32), np.zeros(3, np.float32)]


def _scaled_fit(lib: Any, model: Any, opt: Any, y: np.ndarray, epochs: int = 5) -> Any:
    """Fit in 16-sample batches, recording (loss scale, iterations) after every batch."""
    seen: list[tuple[float, int]] = []
    record = lib.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(
            (float(np.asarray(opt.dynamic_scale)), int(opt.iterations))
        )
    )
    model.set_weights(W)
    model.compile(optimizer=opt, loss="mse")
    history = model.fit(
        X, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[record]
    )
    return seen, history.history["loss"], model.get_weights()


def _both(keras: Any, make: Any, y: np.ndarray) -> tuple[Any, Any]:
    reference = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model = optimist.Sequential([optimist.layers.Dense(3, input_shape=(5,))])
    return (
        _scaled_fit(keras, reference, make(keras.optimizers), y),
        _scaled_fit(optimist, model, make(optimizers), y),
    )


def _assert_same(theirs: Any, mine: Any) -> None:
    assert mine[0] == theirs[0]  # the scale and the step count after every batch, exactly
    np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-5)
    for a, b in zip(mine[2], theirs[2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_overflow_skips_steps_and_halves_the_scale_as_keras(keras):
    # gradients ~1e3 times 2**127 overflow float32: Keras skips and halves until they fit, then
    # grows every 2 good steps and overflows again
    def make(o):
        return o.LossScaleOptimizer(o.Adam(0.1), initial_scale=2.0**127, dynamic_growth_steps=2)

    theirs, mine = _both(keras, make, Y_BIG)
    _assert_same(theirs, mine)
    scales = [s for s, _ in mine[0]]
    steps = [n for _, n in mine[0]]
    assert scales[:3] == [2.0**126, 2.0**125, 2.0**124] and steps[:3] == [0, 0, 0]  # skipped
    assert steps[-1] > 0 and len(set(steps)) > 3  # then it trained
    assert any(b == 2 * a for a, b in zip(scales, scales[1:], strict=False))  # and grew again
    later = steps[steps.index(1) :]
    assert len(later) > len(set(later))  # until it overflowed again: a later skipped step


def test_growth_after_dynamic_growth_steps_as_keras(keras):
    def make(o):
        return o.LossScaleOptimizer(o.SGD(0.01), initial_scale=2.0, dynamic_growth_steps=3)

    theirs, mine = _both(keras, make, Y_BIG / 1000)
    _assert_same(theirs, mine)
    # 20 good steps: doubled after steps 3, 6, ..., 18
    assert [s for s, _ in mine[0]] == [2.0 * 2 ** ((i + 1) // 3) for i in range(20)]
    assert [n for _, n in mine[0]] == list(range(1, 21))


# -- MultiOptimizer on a model of two layers -------------------------------------------------------
XM = RNG.standard_normal((48, 6)).astype(np.float32)
YM = RNG.standard_normal((48, 2)).astype(np.float32)


def _two_layer_sequential(k: Any) -> Any:
    return k.Sequential(
        [
            k.Input((6,)),
            k.layers.Dense(4, activation="tanh", name="encoder"),
            k.layers.Dense(2, name="head"),
        ]
    )


def _two_layer_functional(k: Any) -> Any:
    inputs = k.Input((6,))
    hidden = k.layers.Dense(4, activation="tanh", name="encoder")(inputs)
    return k.Model(inputs, k.layers.Dense(2, name="head")(hidden))


def _fit_pair(keras: Any, build: Any, make: Any, epochs: int = 5) -> tuple[Any, Any]:
    """The same model and optimizer in both libraries, trained in 16-sample batches; returns
    both optimizers after asserting equal losses and weights."""
    reference, model = build(keras), build(optimist)
    model.set_weights(reference.get_weights())
    theirs, mine = make(keras.optimizers), make(optimizers)
    reference.compile(optimizer=theirs, loss="mse")
    model.compile(optimizer=mine, loss="mse")
    kwargs = {"batch_size": 16, "epochs": epochs, "shuffle": False, "verbose": 0}
    expected = reference.fit(XM, YM, **kwargs)
    got = model.fit(XM, YM, **kwargs)
    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert got.history["loss"][-1] < got.history["loss"][0]
    return theirs, mine


def test_adam_on_one_layer_sgd_on_the_other_as_keras(keras):
    # Keras' Sequential paths start with the model's name ("sequential/encoder/kernel"):
    # ".*encoder/.*" matches there and in optimist ("encoder/kernel")
    def make(o):
        return o.MultiOptimizer(
            o.OptimizerMap(o.SGD(0.1, momentum=0.9), {".*encoder/.*": o.Adam(0.01)})
        )

    theirs, mine = _fit_pair(keras, _two_layer_sequential, make)
    assert int(mine.iterations) == int(theirs.iterations) == 15
    assert [type(opt).__name__ for opt in mine.optimizers] == ["Adam", "SGD"]
    assert [int(opt.iterations) for opt in mine.optimizers] == [
        int(opt.iterations) for opt in theirs.optimizers
    ]


def test_functional_model_exact_key_regex_and_default_as_keras(keras):
    # a functional model's paths have no model prefix in Keras either: "encoder/kernel"
    def make(o):
        return o.MultiOptimizer(
            o.OptimizerMap(
                o.SGD(0.05),
                {"encoder/kernel": o.Adam(0.02), "head/.*": o.RMSprop(0.01), "unused/.*": o.SGD()},
            )
        )

    theirs, mine = _fit_pair(keras, _two_layer_functional, make)
    # encoder/bias falls to the default; the unused optimizer never steps
    assert [int(opt.iterations) for opt in mine.optimizers] == [15, 15, 0, 15]
    assert [int(opt.iterations) for opt in theirs.optimizers] == [15, 15, 0, 15]


def test_callable_map_with_schedule_and_ema_as_keras(keras):
    def make(o):
        first = o.Adam(o.schedules.CosineDecay(0.05, 10), use_ema=True, ema_momentum=0.8)
        second = o.SGD(0.05, nesterov=True, momentum=0.5)
        return o.MultiOptimizer(lambda v: first if "encoder" in v.path else second)

    _fit_pair(keras, _two_layer_functional, make)


# -- configs ---------------------------------------------------------------------------------------
def _make_configs(o: Any) -> list[Any]:
    return [
        o.LossScaleOptimizer(o.SGD(0.5, momentum=0.06, nesterov=True), initial_scale=3.0),
        o.MultiOptimizer(
            o.OptimizerMap(o.RMSprop(1e-4), {"^dense_1/.*": o.Adam(1e-3)}), loss_scale_factor=5.0
        ),
    ]


def _shape(config: Any) -> Any:
    """The keys and the nesting of a config (Keras adds module/registered_name to nested ones)."""
    if isinstance(config, dict):
        return {k: _shape(v) for k, v in config.items() if k not in ("module", "registered_name")}
    return type(config).__name__ if not isinstance(config, (int, float)) else "number"


def test_configs_have_keras_keys_and_load_keras_configs(keras):
    for theirs, mine in zip(
        _make_configs(keras.optimizers), _make_configs(optimizers), strict=True
    ):
        assert _shape(mine.get_config()) == _shape(theirs.get_config())
        again = type(mine).from_config(theirs.get_config())  # a Keras config builds ours
        assert _shape(again.get_config()) == _shape(mine.get_config())
        assert again.get_config()["name"] == theirs.get_config()["name"]


def test_lso_config_round_trip_as_keras_test_serialization():
    opt = optimizers.LossScaleOptimizer(
        optimizers.SGD(0.5), initial_scale=3.0, dynamic_growth_steps=2, name="test_opt"
    )
    config = opt.get_config()
    assert len(config) == 4 and config["name"] == "test_opt"
    assert config["initial_scale"] == 3.0 and config["dynamic_growth_steps"] == 2
    again = optimizers.LossScaleOptimizer.from_config(config)
    assert again.get_config() == config
    assert optimizers.deserialize(optimizers.serialize(opt)).get_config() == config


# -- errors ----------------------------------------------------------------------------------------
def _dup(o: Any) -> Any:
    m = o.OptimizerMap(o.SGD())
    m["a"] = o.SGD()
    m["a"] = o.SGD()


def _lso_with(arg: str, value: Any, o: Any) -> Any:
    return o.LossScaleOptimizer(o.SGD(), **{arg: value})


def _set(o: Any, key: Any, value: Any) -> None:
    o.OptimizerMap(o.SGD())[key] = value


ERRORS = {
    "dynamic-false": lambda o: o.LossScaleOptimizer(o.SGD(0.5), dynamic=False),
    "unknown-args": lambda o: o.LossScaleOptimizer(o.SGD(0.5), foo=True, bar=3),
    **{
        f"lso-{arg}": functools.partial(_lso_with, arg, value)
        for arg, value in [
            ("weight_decay", 0.5),
            ("clipnorm", 0.5),
            ("global_clipnorm", 0.5),
            ("clipvalue", 0.5),
            ("use_ema", True),
            ("ema_momentum", 0.5),
            ("ema_overwrite_frequency", 2),
            ("loss_scale_factor", 0.5),
            ("gradient_accumulation_steps", 2),
        ]
    },
    "map-default-not-optimizer": lambda o: o.OptimizerMap("sgd"),
    "map-not-dict": lambda o: o.OptimizerMap(o.SGD(), [1]),
    "map-key-not-str": lambda o: _set(o, 1, o.SGD()),
    "map-value-lso": lambda o: _set(o, ".*", o.LossScaleOptimizer(o.SGD())),
    "map-value-multi": lambda o: _set(o, ".*", o.MultiOptimizer(o.OptimizerMap(o.SGD()))),
    "map-two-matches": lambda o: o.OptimizerMap(
        o.SGD(), {".*kernel.*": o.Adam(), ".*dense.*": o.SGD()}
    )["dense/kernel"],
    "multi-learning-rate-get": lambda o: o.MultiOptimizer(o.OptimizerMap(o.SGD())).learning_rate,
    "multi-learning-rate-set": lambda o: setattr(
        o.MultiOptimizer(o.OptimizerMap(o.SGD())), "learning_rate", 0.1
    ),
    "map-duplicate-key": _dup,
}
# messages that name an optimizer (its repr differs between the libraries): the type only
TYPE_ONLY = {"map-duplicate-key"}


def _raised(fn: Any, o: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        fn(o)
    return info.value


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_arguments_raise_keras_errors(keras, case):
    theirs, mine = _raised(ERRORS[case], keras.optimizers), _raised(ERRORS[case], optimizers)
    assert type(mine) is type(theirs)
    if case not in TYPE_ONLY:
        assert str(mine) == str(theirs)


def test_base_arguments_at_their_defaults_are_accepted(keras):
    for o in (keras.optimizers, optimizers):
        o.LossScaleOptimizer(o.SGD(), use_ema=False, clipnorm=None, ema_momentum=0.99)


@pytest.mark.parametrize("inner", ["lso", "multi"])
def test_nested_wrappers_in_a_multi_optimizer_fail_at_build_as_keras(keras, inner):
    def make(o):
        nested = (
            o.LossScaleOptimizer(o.SGD()) if inner == "lso" else o.MultiOptimizer(lambda v: o.SGD())
        )
        return o.MultiOptimizer(lambda v: nested)

    reference = _two_layer_functional(keras)
    with pytest.raises(ValueError) as theirs:
        make(keras.optimizers).build(reference.trainable_variables)
    with pytest.raises(ValueError) as mine:
        _two_layer_functional(optimist).compile(optimizer=make(optimizers), loss="mse")
    assert str(mine.value) == str(theirs.value)


@pytest.mark.parametrize("name", ["lossscaleoptimizer", "multioptimizer"])
def test_wrappers_by_name_need_their_inner_optimizers_as_in_keras(keras, name):
    # Keras fails on the config it makes from the name (KeyError), optimist on the constructor
    with pytest.raises(KeyError):
        keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]).compile(name, "mse")
    with pytest.raises(TypeError, match="required positional argument"):
        optimist.Sequential([optimist.layers.Dense(3, input_shape=(5,))]).compile(name, "mse")


# -- learning-rate callbacks ----------------------------------------------------------------------
def test_learning_rate_callbacks_set_each_inner_optimizer_as_keras(keras):
    # Keras 3 schedules each inner optimizer from its own rate and logs learning_rate_<name>
    def make(o):
        return o.MultiOptimizer(
            o.OptimizerMap(o.SGD(0.05, name="rest"), {".*encoder/.*": o.Adam(0.01, name="enc")})
        )

    def callbacks(k):
        return [
            k.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr),
            k.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10),
        ]

    reference, model = _two_layer_sequential(keras), _two_layer_sequential(optimist)
    model.set_weights(reference.get_weights())
    histories = []
    for k, net in ((keras, reference), (optimist, model)):
        net.compile(optimizer=make(k.optimizers), loss="mse")
        kwargs = {"batch_size": 16, "epochs": 4, "shuffle": False, "verbose": 0}
        histories.append(net.fit(XM, YM, callbacks=callbacks(k), **kwargs))
    theirs, mine = (h.history for h in histories)
    assert set(mine) == set(theirs) == {"loss", "learning_rate_enc", "learning_rate_rest"}
    for key in ("learning_rate_enc", "learning_rate_rest"):
        np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-6)
    np.testing.assert_allclose(mine["loss"], theirs["loss"], rtol=1e-5)
    assert len(set(mine["learning_rate_enc"])) > 2  # both callbacks moved the rates
