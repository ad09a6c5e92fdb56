"""Keras-style Lion, Lamb and ScheduleFreeAdamW in optimist alone: a saved model resumes exactly,
Schedule-Free's fit stays at the training weights, and the checks stricter than Keras'."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.layers import Dense

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 4)).astype(np.float32)
Y = RNG.standard_normal((40, 2)).astype(np.float32)
S = optimizers.schedules

MAKERS = {
    "lion-schedule-decay": lambda: optimizers.Lion(
        S.ExponentialDecay(0.01, 3, 0.5), weight_decay=0.1
    ),
    # (not with use_ema: model.save keeps no moving average yet, for any Keras-style optimizer)
    "lamb-clipnorm-decay": lambda: optimizers.Lamb(0.05, clipnorm=0.5, weight_decay=0.1),
    "schedule-free-decay-warmup": lambda: optimizers.ScheduleFreeAdamW(
        0.02, weight_decay=0.1, warmup_steps=6
    ),
    "schedule-free-schedule": lambda: optimizers.ScheduleFreeAdamW(
        S.CosineDecay(0.05, 20), beta_1=0.7
    ),
}


def _model(make) -> optimist.Sequential:
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(8, activation="tanh", input_shape=(4,)), Dense(2)])
    model.compile(make(), "mse")
    return model


@pytest.mark.parametrize("case", list(MAKERS))
def test_saved_model_resumes_as_uninterrupted_training(tmp_path, case):
    make = MAKERS[case]
    straight = _model(make)
    straight.fit(X, Y, epochs=4, batch_size=8, shuffle=False, verbose=0)
    first = _model(make)
    first.fit(X, Y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    first.save(tmp_path / "m.pt")
    resumed = optimist.models.load_model(tmp_path / "m.pt")
    keras_opt = resumed.optimizer.keras_optimizer
    assert type(keras_opt) is type(make()) and keras_opt.iterations == 10
    assert keras_opt.get_config() == first.optimizer.keras_optimizer.get_config()
    resumed.fit(X, Y, epochs=4, batch_size=8, shuffle=False, verbose=0, initial_epoch=2)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_schedule_free_fit_keeps_the_training_weights():
    """Keras evaluates at y: fit switches no modes, so the model holds y after fit, and
    evaluate gives the last validation loss."""
    model = _model(lambda: optimizers.ScheduleFreeAdamW(0.05))
    history = model.fit(X, Y, epochs=3, batch_size=8, verbose=0, validation_data=(X, Y))
    opt = model.optimizer
    assert opt.training
    assert model.evaluate(X, Y, verbose=0) == pytest.approx(history.history["val_loss"][-1])
    opt.eval()  # the torch-style optimizer's average x is still there, and differs
    assert model.evaluate(X, Y, verbose=0) != pytest.approx(history.history["val_loss"][-1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.Lamb(beta_1=1.0),  # Keras accepts these and trains on NaN
        lambda: optimizers.Lamb(beta_2=1.0),
        lambda: optimizers.ScheduleFreeAdamW(beta_2=1.0),
        lambda: optimizers.ScheduleFreeAdamW(beta_1=0.0),
        lambda: optimizers.ScheduleFreeAdamW(epsilon=-1e-8),
        lambda: optimizers.ScheduleFreeAdamW(warmup_steps=-1),  # Keras: no warmup
        lambda: optimizers.ScheduleFreeAdamW(warmup_steps=2.5),
        lambda: optimizers.Lion(beta_2=1.5),
    ],
)
def test_checks_stricter_than_keras(make):
    with pytest.raises(ValueError, match="beta_1|beta_2|epsilon|warmup_steps"):
        make()


def test_beta_one_where_keras_allows_it():
    """Lion's beta_1=1 (the momentum's sign alone: no step before the momentum moves) and
    ScheduleFreeAdamW's beta_1=1 (y = x) train, although torch's constructors want [0, 1)."""
    lion = _model(lambda: optimizers.Lion(0.01, beta_1=1.0))
    before = lion.get_weights()
    lion.train_on_batch(X, Y)  # m = 0: sign(m) = 0
    assert all(np.array_equal(a, b) for a, b in zip(before, lion.get_weights(), strict=True))
    lion.train_on_batch(X, Y)
    assert not np.array_equal(before[0], lion.get_weights()[0])
    sf = _model(lambda: optimizers.ScheduleFreeAdamW(0.05, beta_1=1.0))
    history = sf.fit(X, Y, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert sf.optimizer.param_groups[0]["betas"] == (1.0, 0.999)
