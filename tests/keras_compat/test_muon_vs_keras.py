"""Keras 3's Muon on optimist (``optimist.optimizers.Muon``) against Keras itself: trajectories
of the Dense model (kernel -> Muon, bias -> AdamW) and of a model with an Embedding layer,
single steps on one matrix, the config, and the argument errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from keras_compat.trajectory import assert_same_trajectory
from optimist import optimizers
from optimist.optim.muon import newton_schulz

# (module, schedules) -> optimizer; the same expression builds the Keras and the optimist one
CASES = {
    "muon-by-name": lambda o, s: "muon",
    "muon": lambda o, s: o.Muon(0.05),
    "muon-no-nesterov": lambda o, s: o.Muon(0.05, nesterov=False),
    "muon-rms-rate-none": lambda o, s: o.Muon(0.05, rms_rate=None),
    "muon-rms-rate": lambda o, s: o.Muon(0.02, rms_rate=0.5),
    "muon-weight-decays": lambda o, s: o.Muon(
        0.05, weight_decay=0.5, adam_weight_decay=0.2, adam_lr_ratio=0.3
    ),
    "muon-no-weight-decay": lambda o, s: o.Muon(0.05, weight_decay=None, adam_weight_decay=0.3),
    "muon-exclude-layers": lambda o, s: o.Muon(0.05, exclude_layers=["dense"]),
    "muon-momentum-ns": lambda o, s: o.Muon(
        0.05, momentum=0.5, ns_steps=3, muon_a=3.0, muon_b=-3.2, muon_c=1.2
    ),
    "muon-adam-settings": lambda o, s: o.Muon(
        0.05, adam_beta_1=0.5, adam_beta_2=0.9, epsilon=0.1, adam_lr_ratio=2
    ),
    "muon-schedule-clipnorm": lambda o, s: o.Muon(s.ExponentialDecay(0.05, 3, 0.5), clipnorm=0.1),
    "muon-global-clipnorm": lambda o, s: o.Muon(0.05, global_clipnorm=0.05),
    "muon-clipvalue": lambda o, s: o.Muon(0.05, clipvalue=0.01),
    "muon-accumulate-loss-scale": lambda o, s: o.Muon(
        0.05, gradient_accumulation_steps=2, loss_scale_factor=8.0
    ),
    "muon-ema": lambda o, s: o.Muon(
        0.05, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=4
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_same_trajectory_as_keras(keras, case):
    assert_same_trajectory(keras, CASES[case])


def test_exclude_layers_changes_the_kernel_s_branch(keras):
    """The exclusion case above is not the default trajectory in disguise: the kernel's AdamW
    steps differ from its Muon steps, and a regex that matches nothing changes nothing."""
    muon, _ = assert_same_trajectory(keras, lambda o, s: o.Muon(0.05))
    excluded, _ = assert_same_trajectory(keras, CASES["muon-exclude-layers"])
    unmatched, _ = assert_same_trajectory(keras, lambda o, s: o.Muon(0.05, exclude_layers=["^x"]))
    assert not np.allclose(muon, excluded, rtol=1e-3)
    np.testing.assert_array_equal(unmatched, muon)


_RNG = np.random.default_rng(3)
_TOKENS = _RNG.integers(0, 10, (32, 4))
_TARGETS = _RNG.standard_normal((32, 3)).astype(np.float32)


def _embedding_model(k, layers, inputs):
    """Embedding(10, 6) -> Flatten -> Dense(8, tanh) -> Dense(3) named "head": the table is
    (10, 6), the hidden kernel (24, 8) in Keras, (8, 24) in optimist; the head (8, 3)/(3, 8)."""
    return k.Sequential(
        [
            inputs,
            layers.Embedding(10, 6),
            layers.Flatten(),
            layers.Dense(8, activation="tanh"),
            layers.Dense(3, name="head"),
        ]
    )


@pytest.mark.parametrize(
    "kwargs,adamw",
    [
        ({}, [True, False, True, False, True]),  # the embedding table takes AdamW
        (
            {"exclude_embeddings": False, "exclude_layers": ["head"]},
            [False, False, True, True, True],
        ),
        ({"exclude_layers": ["kernel"], "nesterov": False}, [True, True, True, True, True]),
    ],
    ids=["defaults", "embeddings-in-head-out", "regex-on-kernel"],
)
def test_embedding_model_same_trajectory_as_keras(keras, kwargs, adamw):
    reference = _embedding_model(keras, keras.layers, keras.Input((4,), dtype="int32"))
    model = _embedding_model(optimist, optimist.layers, optimist.Input((4,)))
    model.set_weights(reference.get_weights())
    reference.compile(optimizer=keras.optimizers.Muon(0.05, **kwargs), loss="mse")
    model.compile(optimizer=optimizers.Muon(0.05, **kwargs), loss="mse")
    assert [reference.optimizer._should_use_adamw(v) for v in reference.trainable_variables] == (
        adamw
    )
    assert model.optimizer.keras_optimizer._use_adamw == adamw
    fit = {"epochs": 8, "shuffle": False, "verbose": 0}
    expected = reference.fit(_TOKENS, _TARGETS, batch_size=32, **fit).history["loss"]
    got = model.fit(_TOKENS, _TARGETS, batch_size=None, **fit).history["loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)
    assert got[-1] < got[0]


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
@pytest.mark.parametrize("scale", [1.0, 1e-8], ids=["unit", "tiny"])
def test_matrix_steps_match_keras(keras, shape, scale):
    """Three steps on one matrix: Keras' kernel (in, out) and optimist's Dense weight, its
    transpose. With tiny gradients Keras' ``x / (||x|| + 1e-7)`` is far from torch's
    ``x / max(||x||, eps)``, so this checks the normalisation, not only the shapes."""
    rng = np.random.default_rng(7)
    kernel = rng.standard_normal(shape).astype(np.float32)
    grads = [(scale * rng.standard_normal(shape)).astype(np.float32) for _ in range(3)]
    theirs = keras.optimizers.Muon(learning_rate=0.1)
    variable = keras.Variable(kernel, name="kernel")
    mine = optimizers.Muon(learning_rate=0.1)
    weight = torch.nn.Parameter(torch.from_numpy(kernel.T.copy()))
    step = mine.build([weight], names=["dense.weight"])
    for g in grads:
        theirs.apply([keras.ops.convert_to_tensor(g)], [variable])
        weight.grad = torch.from_numpy(g.T.copy())
        step.step()
    expected = np.asarray(keras.ops.convert_to_numpy(variable))
    np.testing.assert_allclose(weight.detach().numpy().T, expected, rtol=1e-5, atol=1e-6)
    if scale < 1:  # the unit-normalised first update would be another one
        nesterov = 1.95 * grads[0]
        unit = newton_schulz(torch.from_numpy(nesterov), (3.4445, -4.775, 2.0315), 5, 0.0, None)
        first = keras.optimizers.Muon(learning_rate=0.1, weight_decay=None)
        probe = keras.Variable(kernel, name="kernel")
        first.apply([keras.ops.convert_to_tensor(grads[0])], [probe])
        keras_update = (kernel - keras.ops.convert_to_numpy(probe)) / 0.1
        torch_update = unit.numpy() * 0.2 * np.sqrt(max(shape))
        assert np.abs(keras_update - torch_update).max() > 1e-2


def test_get_config_is_keras_and_round_trips(keras):
    kwargs = {
        "learning_rate": 0.05,
        "exclude_layers": ["head", "out.*"],
        "rms_rate": None,
        "weight_decay": None,
        "adam_lr_ratio": 0.5,
        "ns_steps": 4,
        "nesterov": False,
        "clipnorm": 1.0,
        "name": "mu",  # (Keras numbers its default names: muon_1, ...)
    }
    theirs = keras.optimizers.Muon(**kwargs).get_config()
    mine = optimizers.Muon(**kwargs).get_config()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():  # (Keras keeps the rate as a float32 variable)
        expected = pytest.approx(value, rel=1e-7) if key == "learning_rate" else value
        assert mine[key] == expected, key
    again = optimizers.Muon.from_config(mine)
    assert type(again) is optimizers.Muon and again.get_config() == mine
    named = optimizers.deserialize(optimizers.serialize(optimizers.Muon(**kwargs)))
    assert type(named) is optimizers.Muon and named.get_config() == mine
    by_name = optimizers.get("muon").get_config()
    defaults = {**keras.optimizers.get("muon").get_config(), "learning_rate": 0.001}
    assert by_name == {**defaults, "name": "muon"}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lr": 0.1}, "not recognized"),
        ({"clipnorm": 1.0, "clipvalue": 1.0}, "Only one of"),
        ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps"),
        ({"use_ema": True, "ema_momentum": 2.0}, "ema_momentum"),
    ],
)
def test_bad_arguments_raise_keras_errors(keras, kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras.optimizers.Muon(**kwargs)
    with pytest.raises(ValueError, match=message):
        optimizers.Muon(**kwargs)
