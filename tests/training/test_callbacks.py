"""Callbacks: hooks, EarlyStopping, ModelCheckpoint, LR schedules, CSVLogger, NaN handling."""

from __future__ import annotations

import csv
import functools
import math

import numpy as np
import pytest
import torch

import optimist
from optimist.layers import Dense
from optimist.training.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)


def regression():
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("sgd", "mse")
    return model


def inject(values, key="score"):
    """A callback that puts a scripted value into the logs each epoch (runs before the others)."""
    return LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__(key, values[epoch]))


def test_attribute_access_from_package():
    assert optimist.callbacks.EarlyStopping is EarlyStopping


def test_hook_order(line_data):
    x, y = line_data
    events = []

    class Recorder(Callback):
        def on_train_begin(self, logs=None):
            events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"epoch_begin {epoch}")

        def on_train_batch_begin(self, batch, logs=None):
            events.append(f"batch_begin {batch}")

        def on_train_batch_end(self, batch, logs=None):
            events.append(f"batch_end {batch} {sorted(logs)}")

        def on_test_begin(self, logs=None):
            events.append("test_begin")

        def on_test_end(self, logs=None):
            events.append(f"test_end {sorted(logs)}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs=None):
            events.append("train_end")

    recorder = Recorder()
    model = regression()
    model.fit(
        x[:40],
        y[:40],
        batch_size=20,
        epochs=1,
        validation_split=0.5,
        verbose=0,
        callbacks=[recorder],
    )
    assert recorder.model is model and recorder.params["epochs"] == 1
    assert events == [
        "train_begin",
        "epoch_begin 0",
        "batch_begin 0",
        "batch_end 0 ['loss']",
        "test_begin",
        "test_end ['loss']",
        "epoch_end 0 ['loss', 'val_loss']",
        "train_end",
    ]


def test_early_stopping_stops_and_restores_best_weights(line_data):
    x, y = line_data
    model = regression()
    snapshots = []
    record = LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(model.get_weights()))
    scores = [5.0, 3.0, 4.0, 3.5, 3.2, 1.0, 1.0]
    stopper = EarlyStopping(monitor="score", patience=3, restore_best_weights=True)
    history = model.fit(x, y, epochs=7, verbose=0, callbacks=[inject(scores), record, stopper])
    assert history.epoch == [0, 1, 2, 3, 4]  # no improvement on 2, 3, 4 -> stop after 4
    assert model.stop_training and stopper.stopped_epoch == 4 and stopper.best_epoch == 1
    for restored, best in zip(model.get_weights(), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(snapshots[1][0], snapshots[4][0])


def test_early_stopping_modes_min_delta_and_baseline(line_data):
    x, y = line_data
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    assert stopper.mode == "max"
    model = regression()
    scores = [0.5, 0.505, 0.9]
    stopper = EarlyStopping(monitor="score", mode="max", min_delta=0.01, patience=1)
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[inject(scores), stopper])
    assert history.epoch == [0, 1]  # +0.005 is below min_delta
    baseline = EarlyStopping(monitor="score", patience=2, baseline=1.0)
    history = model.fit(
        x, y, epochs=5, verbose=0, callbacks=[inject([3, 2, 1.5, 1.2, 0.5]), baseline]
    )
    assert history.epoch == [0, 1]  # never beat the baseline within the patience
    with pytest.warns(RuntimeWarning, match="'missing' is not in the logs"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping(monitor="missing")])


def test_model_checkpoint_files(line_data, tmp_path):
    x, y = line_data
    model = regression()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.pt")
    cb = ModelCheckpoint(pattern)
    history = model.fit(x, y, epochs=3, validation_split=0.2, verbose=0, callbacks=[cb])
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = [f"ckpt-{e + 1:02d}-{v:.2f}.pt" for e, v in enumerate(history.history["val_loss"])]
    assert names == sorted(expected)
    restored = optimist.load_model(tmp_path / expected[-1])
    assert restored.epoch == 3
    np.testing.assert_array_equal(restored.predict(x, verbose=0), model.predict(x, verbose=0))

    best_dir = tmp_path / "best"
    best = ModelCheckpoint(best_dir / "best-{epoch}.pt", monitor="score", save_best_only=True)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[inject([3.0, 2.0, 2.5, 1.0]), best])
    assert sorted(p.name for p in best_dir.iterdir()) == ["best-1.pt", "best-2.pt", "best-4.pt"]

    weights = ModelCheckpoint(tmp_path / "w.pt", save_weights_only=True)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[weights])
    other = regression()
    other.load_weights(tmp_path / "w.pt")
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
    with pytest.raises(ValueError, match="load_weights"):
        optimist.load_model(tmp_path / "w.pt")


def test_learning_rate_scheduler(line_data):
    x, y = line_data
    model = regression()
    seen = []

    def schedule(epoch, lr):
        seen.append((epoch, lr))
        return 0.1 if epoch == 0 else lr / 2

    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[LearningRateScheduler(schedule)])
    assert seen == [(0, 0.01), (1, 0.1), (2, 0.05)]
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]
    assert all(g["lr"] == 0.025 for g in model.optimizer.param_groups)
    model.fit(
        x, y, epochs=2, verbose=0, callbacks=[LearningRateScheduler(lambda e: 0.001 * (e + 1))]
    )
    assert model.optimizer.param_groups[0]["lr"] == 0.002


def test_reduce_lr_on_plateau(line_data):
    x, y = line_data
    model = regression()
    model.compile(functools.partial(torch.optim.SGD, lr=1.0), "mse")
    cb = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1, min_lr=0.2)
    scores = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    history = model.fit(x[:8], y[:8], epochs=8, verbose=0, callbacks=[inject(scores), cb])
    # logged before the decision at each epoch's end
    assert history.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2]
    assert model.optimizer.param_groups[0]["lr"] == 0.2  # floored at min_lr
    with pytest.raises(ValueError, match="factor"):
        ReduceLROnPlateau(factor=1.5)


def test_csv_logger(line_data, tmp_path):
    x, y = line_data
    path = tmp_path / "log.csv"
    model = regression()
    model.fit(x, y, epochs=2, validation_split=0.1, verbose=0, callbacks=[CSVLogger(path)])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1"]
    assert float(rows[2][1]) == pytest.approx(model.history.history["loss"][1])
    model.fit(
        x,
        y,
        epochs=4,
        initial_epoch=2,
        validation_split=0.1,
        verbose=0,
        callbacks=[CSVLogger(path, append=True)],
    )
    rows = list(csv.reader(path.open()))
    assert [r[0] for r in rows] == ["epoch", "0", "1", "2", "3"]


def _nan_after(calls_ok):
    state = {"calls": 0}

    def loss(y_true, y_pred):
        state["calls"] += 1
        value = ((y_pred - y_true) ** 2).mean()
        return value * float("nan") if state["calls"] > calls_ok else value

    return loss


def test_terminate_on_nan(line_data, capfd):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("sgd", _nan_after(2))
    cb = TerminateOnNaN()
    history = model.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=[cb])
    assert cb.terminated_at == (0, 2)
    assert history.epoch == [0] and math.isnan(history.history["loss"][0])
    assert "batch 3: invalid loss" in capfd.readouterr().out


def test_builtin_nan_check_names_epoch_and_batch(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("sgd", _nan_after(22))  # epoch 2 (20 batches per epoch), third batch
    with pytest.raises(FloatingPointError, match=r"epoch 2/5, at batch 3 of 20"):
        model.fit(x, y, batch_size=10, epochs=5, verbose=0, check_nan=1)
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("sgd", _nan_after(22))
    with pytest.raises(FloatingPointError, match=r"epoch 2/5, at one of batches 1-20 of 20"):
        model.fit(x, y, batch_size=10, epochs=5, verbose=0)
    model.compile("sgd", _nan_after(0))
    history = model.fit(x, y, batch_size=10, epochs=1, verbose=0, check_nan=False)
    assert math.isnan(history.history["loss"][0])
