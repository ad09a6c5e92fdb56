"""Keras' Adafactor (``optimist.optimizers.Adafactor``) in optimist's own training: compiled by
name, the torch-style optimizer it builds, and resuming from ``model.save`` exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optim, optimizers
from optimist.layers import Dense

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 4)).astype(np.float32)
Y = np.arange(40) % 3


def _model() -> optimist.Sequential:
    torch.manual_seed(0)
    return optimist.Sequential(
        [optimist.Input((4,)), Dense(16, activation="relu"), Dense(3, activation="softmax")]
    )


@pytest.mark.parametrize("name", ["adafactor", "Adafactor"])
def test_compile_by_name_builds_keras_adafactor_on_the_papers_epsilon(name):
    model = _model()
    model.compile(name, "sparse_categorical_crossentropy")
    keras_opt = model.optimizer.keras_optimizer
    assert type(keras_opt) is optimizers.Adafactor
    assert isinstance(model.optimizer, optim.Adafactor)
    group = model.optimizer.param_groups[0]
    assert group["eps1_form"] == "add" and group["eps"] == (1e-30, 1e-3)
    assert group["lr"] == 0.001 and group["beta2_decay"] == -0.8 and group["d"] == 1.0
    assert group["weight_decay"] == 0.0  # Keras' decay is the base class's, decoupled


def test_clip_threshold_below_one_reaches_the_groups():
    """torch refuses d < 1 when the optimizer is made; Keras' clip_threshold may be smaller."""
    model = _model()
    model.compile(optimizers.Adafactor(clip_threshold=0.25), "sparse_categorical_crossentropy")
    assert model.optimizer.param_groups[0]["d"] == 0.25
    with pytest.raises(ValueError, match="d"):
        optim.Adafactor(model.parameters(), d=0.25)


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.Adafactor(0.05, clip_threshold=0.5, weight_decay=0.1),
        lambda: optimizers.Adafactor(
            optimizers.schedules.ExponentialDecay(0.5, 3, 0.5), gradient_accumulation_steps=2
        ),
    ],
    ids=["clip-decay", "schedule-accumulation"],
)
def test_resumes_exactly_after_load(tmp_path, make):
    def fresh():
        model = _model()
        model.compile(make(), "sparse_categorical_crossentropy")
        return model

    straight = fresh()
    straight.fit(X, Y, epochs=4, batch_size=8, verbose=0)
    first = fresh()
    first.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    first.save(tmp_path / "m.pt")
    resumed = optimist.models.load_model(tmp_path / "m.pt")
    keras_opt = resumed.optimizer.keras_optimizer
    assert type(keras_opt) is optimizers.Adafactor
    assert keras_opt.iterations == first.optimizer.keras_optimizer.iterations > 0
    assert keras_opt.get_config() == make().get_config()
    assert resumed.optimizer.param_groups[0]["d"] == keras_opt.clip_threshold
    resumed.fit(X, Y, epochs=4, batch_size=8, verbose=0, initial_epoch=resumed.epoch)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        mine, theirs = straight.optimizer.state[p], resumed.optimizer.state[q]
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
