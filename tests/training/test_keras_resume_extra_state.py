"""A checkpoint taken in the middle of training resumes a Keras-style optimizer exactly, also
what it keeps beside the rule's state: the moving average of ``use_ema`` and the partial
gradient sums of ``gradient_accumulation_steps`` (Keras saves both as optimizer variables)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.callbacks import LambdaCallback
from optimist.layers import Dense

RNG = np.random.default_rng(3)
X = RNG.standard_normal((32, 5)).astype(np.float32)
Y = RNG.standard_normal((32, 2)).astype(np.float32)

SETTINGS = {
    "ema": lambda: optimizers.Adam(0.05, use_ema=True, ema_momentum=0.5),
    "accumulation": lambda: optimizers.SGD(0.1, momentum=0.9, gradient_accumulation_steps=3),
    "both": lambda: optimizers.AdamW(0.05, use_ema=True, gradient_accumulation_steps=3),
}
ACC = {"accumulators", "calls"}
KEPT = {"ema": {"ema"}, "accumulation": ACC, "both": {"ema"} | ACC}


def _model(make) -> optimist.Sequential:
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(4, activation="tanh", input_shape=(5,)), Dense(2)])
    model.compile(optimizer=make(), loss="mse")
    return model


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_mid_training_checkpoint_resumes_exactly(tmp_path, setting):
    make = SETTINGS[setting]
    path = tmp_path / "mid.pt"
    # 4 batches per epoch: with k = 3 the checkpoint after epoch 2 holds 2 summed gradients
    save_after_two = LambdaCallback(
        on_epoch_end=lambda epoch, logs: model.save(path) if epoch == 1 else None
    )
    model = _model(make)
    model.fit(X, Y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[save_after_two])

    resumed = optimist.models.load_model(path)
    extra = resumed.optimizer.state_dict()["keras"]
    assert set(extra) == KEPT[setting]
    resumed.fit(X, Y, batch_size=8, epochs=4, initial_epoch=2, shuffle=False, verbose=0)

    for mine, straight in zip(resumed.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, straight)
    assert int(resumed.optimizer.iterations) == int(model.optimizer.iterations)


def test_extra_state_is_in_the_torch_state_dict_and_checked():
    model = _model(SETTINGS["both"])
    model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    state = model.optimizer.state_dict()
    ema, acc = state["keras"]["ema"], state["keras"]["accumulators"]
    assert len(ema) == len(acc) == len(list(model.parameters()))
    assert any(a.abs().sum() > 0 for a in acc)  # 4 calls, k = 3: one gradient waits

    other = _model(SETTINGS["both"])
    other.optimizer.load_state_dict(state)
    for a, b in zip(other.optimizer.keras_optimizer.extra_state()["ema"], ema, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    small = optimist.Sequential([Dense(1, input_shape=(5,))])
    small.compile(optimizer=SETTINGS["both"](), loss="mse")
    bad = {**small.optimizer.state_dict(), "keras": state["keras"]}
    with pytest.raises(ValueError, match="does not fit"):
        small.optimizer.load_state_dict(bad)
