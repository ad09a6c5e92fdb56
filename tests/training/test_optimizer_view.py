"""``model.optimizer.learning_rate`` / ``iterations`` as in Keras, on the torch optimizer."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.layers import Dense

X = np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32)
Y = np.random.default_rng(1).standard_normal((40, 2)).astype(np.float32)


def _model() -> optimist.Sequential:
    torch.manual_seed(0)
    return optimist.Sequential([Dense(2, input_shape=(4,))])


def _compile(model: optimist.Sequential, how: str) -> float:
    """Compile by a Keras name, a Keras object, a registry name or a torch instance; returns
    the learning rate that compile gave."""
    if how == "keras-name":
        model.compile("rmsprop", "mse")
        return 0.001
    if how == "keras-object":
        model.compile(optimizers.SGD(learning_rate=0.05, momentum=0.9), "mse")
        return 0.05
    if how == "registry-name":
        model.compile("adan", "mse")  # not a Keras name ("lion" is: Keras' Lion)
        return float(model.optimizer.param_groups[0]["lr"])
    model.compile(torch.optim.SGD(model.parameters(), lr=0.2), "mse")
    return 0.2


HOWS = ["keras-name", "keras-object", "registry-name", "torch-instance"]


@pytest.mark.parametrize("how", HOWS)
def test_learning_rate_reads_and_sets_like_keras(how):
    model = _model()
    lr = _compile(model, how)
    opt = model.optimizer
    assert isinstance(opt, torch.optim.Optimizer)
    assert float(opt.learning_rate) == pytest.approx(lr)
    assert int(opt.iterations) == 0

    model.fit(X, Y, batch_size=10, epochs=2, verbose=0)
    assert int(opt.iterations) == opt.iterations.numpy() == 8

    opt.learning_rate = 1e-4  # as Keras: plain assignment ...
    assert [g["lr"] for g in opt.param_groups] == [1e-4] * len(opt.param_groups)
    opt.learning_rate.assign(3e-4)  # ... or the variable's assign
    assert opt.learning_rate == pytest.approx(3e-4) and opt.param_groups[0]["lr"] == 3e-4
    assert opt.learning_rate.numpy() == pytest.approx(3e-4)

    # the new rate is the one the next step uses: SGD-like rules move by lr * (something)
    before = [p.detach().clone() for p in model.parameters()]
    opt.learning_rate = 0.0
    model.fit(X, Y, batch_size=10, epochs=1, verbose=0)
    if how != "keras-object":  # (Keras' SGD momentum keeps moving at lr 0 only via its buffer)
        for a, b in zip(model.parameters(), before, strict=True):
            assert torch.equal(a.detach(), b)


def test_learning_rate_of_a_schedule_follows_the_step():
    model = _model()
    schedule = optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model.compile(optimizers.SGD(learning_rate=schedule), "mse")
    assert model.optimizer.learning_rate == pytest.approx(0.1)
    model.fit(X, Y, batch_size=20, epochs=1, verbose=0)  # 2 steps
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_the_optimizer_stays_a_torch_optimizer_through_copies():
    model = _model()
    model.compile("adam", "mse")
    model.fit(X, Y, batch_size=10, epochs=1, verbose=0)
    opt = model.optimizer
    assert isinstance(opt, optimist.optim.Adam) and type(opt).__name__ == "Adam"
    for other in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert isinstance(other, optimist.optim.Adam)
        assert other.learning_rate == pytest.approx(float(opt.learning_rate))
        assert other.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    model.fit(X, Y, batch_size=40, epochs=1, verbose=0)
    scheduler.step()  # no "step() before optimizer.step()" warning path, and the rate moves
    assert opt.learning_rate == pytest.approx(0.0005)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "fast", True])
def test_bad_learning_rate_is_refused(bad):
    model = _model()
    model.compile(torch.optim.SGD(model.parameters(), lr=0.1), "mse")
    with pytest.raises(ValueError, match="learning_rate"):
        model.optimizer.learning_rate = bad
    assert model.optimizer.param_groups[0]["lr"] == 0.1


def test_a_schedule_on_a_torch_optimizer_then_a_number_again():
    model = _model()
    model.compile(torch.optim.SGD(model.parameters(), lr=0.1), "mse")
    model.optimizer.learning_rate = optimizers.schedules.ExponentialDecay(0.2, 1, 0.5)
    assert model.optimizer.learning_rate == pytest.approx(0.2)
    model.fit(X, Y, batch_size=20, epochs=1, verbose=0)  # steps at 0.2, 0.1
    assert model.optimizer.learning_rate == pytest.approx(0.05)
    model.optimizer.learning_rate = 0.3  # a number replaces the schedule
    model.fit(X, Y, batch_size=20, epochs=1, verbose=0)
    assert model.optimizer.param_groups[0]["lr"] == model.optimizer.learning_rate == 0.3
