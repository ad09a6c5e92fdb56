"""``exclude_from_weight_decay`` as Keras 3's: by tensor and by name, for every optimizer that
decays through the shared base (and Muon's two branches), checked against Keras."""

from __future__ import annotations

import numpy as np
import pytest

import optimist
from keras_compat.trajectory import WEIGHTS, X, Y, assert_same_trajectory
from optimist import optimizers
from optimist.layers import Dense

BY_NAME = {
    "adamw-no-decay-on-bias": (lambda o, s: o.AdamW(0.05, weight_decay=0.5), ["bias"]),
    "sgd-no-decay-on-kernel": (lambda o, s: o.SGD(0.1, weight_decay=0.5), ["ker"]),
    "lion-either-name": (lambda o, s: o.Lion(0.01, weight_decay=0.5), ["bias", "nothing"]),
    "muon-kernel": (lambda o, s: o.Muon(0.02, weight_decay=0.5, adam_weight_decay=0.3), ["kern"]),
    "muon-bias": (lambda o, s: o.Muon(0.02, weight_decay=0.5, adam_weight_decay=0.3), ["bias"]),
}


@pytest.mark.parametrize("case", list(BY_NAME))
def test_excluded_by_name_as_keras(keras, case):
    make, names = BY_NAME[case]
    assert_same_trajectory(
        keras, make, configure=lambda opt, model: opt.exclude_from_weight_decay(var_names=names)
    )


def test_excluded_by_tensor_as_keras(keras):
    # Keras' variable, optimist's kernel view of the (units, in) parameter: the same weight
    assert_same_trajectory(
        keras,
        lambda o, s: o.AdamW(0.05, weight_decay=0.5),
        configure=lambda opt, model: opt.exclude_from_weight_decay(
            var_list=[model.layers[0].kernel]
        ),
    )


def _one_step(exclude: dict | None) -> list[np.ndarray]:
    model = optimist.Sequential([Dense(3, input_shape=(5,))])
    model.set_weights([np.ones((5, 3), np.float32), np.ones(3, np.float32)])
    opt = optimizers.AdamW(0.05, weight_decay=0.5)
    if exclude is not None:
        opt.exclude_from_weight_decay(**exclude)
    model.compile(optimizer=opt, loss="mse")
    model.fit(X, Y, batch_size=None, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def test_exclusion_changes_only_the_excluded_weights():
    # one step: the gradients are taken before any decay, so only the decay differs
    plain, no_bias = _one_step(None), _one_step({"var_names": ["bias"]})
    np.testing.assert_array_equal(no_bias[0], plain[0])
    assert not np.allclose(no_bias[1], plain[1])
    np.testing.assert_array_equal(_one_step({"var_names": ["nothing"]})[1], plain[1])


def test_after_build_the_next_steps_follow_as_keras(keras):
    def compiled(model, module):
        model.set_weights(WEIGHTS)
        opt = module.AdamW(0.05, weight_decay=0.5)
        model.compile(optimizer=opt, loss="mse")
        return model, opt

    runs = []
    for model, opt in (
        compiled(keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]), keras.optimizers),
        compiled(optimist.Sequential([Dense(3, input_shape=(5,))]), optimizers),
    ):
        first = model.fit(X, Y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        opt.exclude_from_weight_decay(var_names=["bias"])
        then = model.fit(X, Y, batch_size=64, epochs=3, shuffle=False, verbose=0)
        runs.append((first.history["loss"] + then.history["loss"], model.get_weights()))
    (theirs, their_weights), (ours, our_weights) = runs
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for mine, expected in zip(our_weights, their_weights, strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-5)
