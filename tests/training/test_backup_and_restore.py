"""BackupAndRestore (Keras 3): a fit interrupted by an error resumes from the last backup."""

from __future__ import annotations

import pytest
import torch

import optimist
from optimist.callbacks import BackupAndRestore, Callback
from optimist.layers import Dense, Dropout


class Crash(Callback):
    """Raises before batch ``batch`` of epoch ``epoch`` (0-based), as a killed process would."""

    def __init__(self, epoch: int, batch: int = 0) -> None:
        super().__init__()
        self.epoch, self.batch = epoch, batch
        self.current = -1

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.current = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if (self.current, batch) == (self.epoch, self.batch):
            raise RuntimeError("interrupted")


def classifier():
    # a fresh process's model: same seed, same weights; dropout uses torch's global RNG
    torch.manual_seed(0)
    model = optimist.Sequential(
        [Dense(16, activation="relu", input_shape=(4,)), Dropout(0.2), Dense(3)]
    ).double()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(model, data, callbacks, epochs=4):
    x, y = data
    return model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks,
                     shuffle=True, monitor=False)  # fmt: skip


def test_interrupted_fit_resumes_after_the_last_epoch_bit_identical(blobs, tmp_path):
    clean = classifier()
    fit(clean, blobs, [])

    backup = tmp_path / "backup"
    broken = classifier()
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(broken, blobs, [BackupAndRestore(backup), Crash(epoch=2, batch=3)])
    assert torch.load(backup / "latest.pt", weights_only=True)["epoch"] == 2

    torch.manual_seed(123)  # a new process: another global RNG state, restored from the backup
    resumed = classifier()
    history = fit(resumed, blobs, [BackupAndRestore(backup)])
    assert history.epoch == [2, 3] and resumed.epoch == 4  # finished epochs not trained again
    assert not backup.exists()  # delete_checkpoint
    for got, want in zip(resumed.parameters(), clean.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_keep_the_backup_and_back_up_every_n_batches(blobs, tmp_path):
    model = classifier()
    fit(model, blobs, [BackupAndRestore(tmp_path / "kept", delete_checkpoint=False)], epochs=2)
    assert torch.load(tmp_path / "kept" / "latest.pt", weights_only=True)["epoch"] == 2

    model = classifier()  # 10 batches per epoch: a backup after batches 4 and 8 of epoch 0
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(model, blobs, [BackupAndRestore(tmp_path / "b", save_freq=4), Crash(0, 9)])
    saved = torch.load(tmp_path / "b" / "latest.pt", weights_only=True)
    assert saved["epoch"] == 0  # as Keras: the interrupted epoch restarts, from these weights
    assert not torch.equal(saved["state_dict"]["dense.kernel"], classifier().layers[0].kernel)


def test_backup_arguments_and_unbuilt_model_are_clear_errors(blobs, tmp_path):
    with pytest.raises(ValueError, match="backup_dir must be a folder"):
        BackupAndRestore("")
    for bad in (0, "batch", True, 1.5):
        with pytest.raises(ValueError, match="save_freq must be 'epoch' or a number"):
            BackupAndRestore(tmp_path, save_freq=bad)
    fit(classifier(), blobs, [BackupAndRestore(tmp_path / "b", delete_checkpoint=False)], 1)
    other = optimist.Sequential([Dense(3)])  # built by fit from the arrays: another model
    other.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="latest.pt' do not fit this model"):
        fit(other, blobs, [BackupAndRestore(tmp_path / "b")])
    unbuilt = optimist.Sequential([Dense(3)])  # a Dataset builds it on its first batch only
    unbuilt.compile("adam", "sparse_categorical_crossentropy")
    data = torch.utils.data.TensorDataset(*map(torch.as_tensor, blobs))
    with pytest.raises(ValueError, match="into an unbuilt model"):
        unbuilt.fit(data, callbacks=[BackupAndRestore(tmp_path / "b")], verbose=0)
