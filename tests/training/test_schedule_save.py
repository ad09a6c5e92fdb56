"""model.save keeps a learning-rate schedule set on a torch-style optimizer, and the step it
has reached, so that load_model continues the run identically."""

from __future__ import annotations

import pytest
import torch

import optimist
from optimist.layers import Dense
from optimist.optimizers import schedules


def make_model(seed: int = 1) -> optimist.Sequential:
    torch.manual_seed(seed)
    return optimist.Sequential(
        [Dense(8, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")]
    )


def compiled(kind: str) -> optimist.Sequential:
    model = make_model()
    if kind == "instance + schedule object":
        opt = optimist.optim.Adam(model.parameters(), lr=0.05)
        model.compile(
            opt, "sparse_categorical_crossentropy", lr_schedule=schedules.CosineDecay(0.05, 40)
        )
    elif kind == "registry name + schedule name":
        model.compile(
            "momentum",
            "sparse_categorical_crossentropy",
            lr_schedule={"name": "warmup_cosine", "warmup_steps": 5, "total_steps": 40},
        )
    else:  # set on model.optimizer after compile, as Keras code does
        model.compile(
            optimist.optim.SGD(model.parameters(), lr=0.1), "sparse_categorical_crossentropy"
        )
        model.optimizer.learning_rate = schedules.ExponentialDecay(0.1, 10, 0.5)
    return model


KINDS = ["instance + schedule object", "registry name + schedule name", "set after compile"]


@pytest.mark.parametrize("kind", KINDS)
def test_load_model_continues_the_schedule_identically(blobs, tmp_path, kind):
    x, labels = blobs

    def fit(model, epochs, initial_epoch=0):
        model.fit(x, labels, batch_size=32, epochs=epochs, initial_epoch=initial_epoch, verbose=0)

    straight = compiled(kind)
    fit(straight, 2)

    half = compiled(kind)
    fit(half, 1)
    lr_at_save = float(half.optimizer.learning_rate)
    half.save(tmp_path / "half.pt")
    resumed = optimist.load_model(tmp_path / "half.pt")
    assert resumed.optimizer.iterations == half.optimizer.iterations == 10
    assert resumed.optimizer.lr_schedule is not None
    assert float(resumed.optimizer.learning_rate) == lr_at_save
    fit(resumed, 2, initial_epoch=resumed.epoch)

    assert straight.history.history["loss"][1:] == resumed.history.history["loss"]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # the rate really moved: a schedule that was lost would leave it constant
    assert float(resumed.optimizer.learning_rate) != lr_at_save


def test_a_schedule_name_not_resolved_yet_is_saved_as_given(tmp_path):
    model = make_model()
    spec = {"name": "wsd", "total_steps": 100}
    model.compile("momentum", "mse", lr_schedule=spec)
    model.save(tmp_path / "m.pt")
    loaded = optimist.load_model(tmp_path / "m.pt")
    assert loaded._lr_schedule == spec


def test_a_custom_callable_schedule_is_not_saved_and_says_so(tmp_path):
    model = make_model()
    model.compile(optimist.optim.SGD(model.parameters(), lr=0.1), "mse")
    model.optimizer.learning_rate = lambda step: 0.1 / (1 + step)
    with pytest.warns(RuntimeWarning, match="custom callable and is not saved"):
        model.save(tmp_path / "m.pt")
    assert optimist.load_model(tmp_path / "m.pt").optimizer.lr_schedule is None


def test_backup_restore_puts_the_step_back(blobs, tmp_path):
    x, labels = blobs
    first = compiled("instance + schedule object")
    first.fit(x, labels, batch_size=32, epochs=1, verbose=0)
    first.save(tmp_path / "backup.pt")
    again = compiled("instance + schedule object")
    again.build((None, 4))
    assert again._resume(tmp_path / "backup.pt") == 1
    assert again.optimizer.iterations == 10
    assert float(again.optimizer.learning_rate) == float(first.optimizer.learning_rate)
