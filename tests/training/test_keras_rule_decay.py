"""Keras' decoupled weight decay runs inside the rule's fused pass where the torch rule has the
same decay (AdamW, NAdamW, Lion, FTRL: ``rule_decay``), and in the base class's own pass where
it has not or where some parameters are excluded; the numbers are Keras' either way
(tests/keras_compat)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.layers import Dense

X = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)


def _compiled(opt) -> optimist.Sequential:
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(3, input_shape=(5,)), Dense(2)])
    model.compile(optimizer=opt, loss="mse")
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.AdamW(),
        lambda: optimizers.Adam(weight_decay=0.1, amsgrad=True),
        lambda: optimizers.Nadam(weight_decay=0.1),
        lambda: optimizers.Lion(weight_decay=0.1),
        lambda: optimizers.Ftrl(weight_decay=0.1),
    ],
)
def test_the_rule_decays_when_it_can(make):
    keras = make()
    groups = _compiled(keras).optimizer.param_groups
    assert all(g["weight_decay"] == keras.weight_decay for g in groups)
    assert keras._decay_in_rule


def test_the_base_decays_otherwise_and_after_exclusions():
    rmsprop = optimizers.RMSprop(weight_decay=0.1)  # torch's RMSprop decay is an L2 penalty
    assert _compiled(rmsprop).optimizer.param_groups[0]["weight_decay"] == 0
    adamw = optimizers.AdamW(weight_decay=0.1)
    opt = _compiled(adamw).optimizer
    adamw.exclude_from_weight_decay(var_names=["bias"])  # after build: the next step follows
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0]
    assert not adamw._decay_in_rule


def test_a_loaded_state_keeps_the_decay_where_it_runs():
    adamw = optimizers.AdamW(weight_decay=0.1)
    model = _compiled(adamw)
    model.fit(X, X[:, :2], epochs=1, verbose=0)
    state = model.optimizer.state_dict()
    for group in state["param_groups"]:  # as a checkpoint written before the rule decayed
        group["weight_decay"] = 0.0
    model.optimizer.load_state_dict(state)
    assert model.optimizer.param_groups[0]["weight_decay"] == 0.1 and adamw._decay_in_rule


def test_same_numbers_as_the_separate_pass():
    fused = _compiled(optimizers.AdamW(0.05, weight_decay=0.3))
    separate = optimizers.AdamW(0.05, weight_decay=0.3)
    separate.rule_decay = None  # this instance only: the base class's own pass
    apart = _compiled(separate)
    assert not separate._decay_in_rule and fused.optimizer.keras_optimizer._decay_in_rule
    for model in (fused, apart):
        model.fit(X, X[:, :2], batch_size=4, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(fused.get_weights(), apart.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # p*(1 - lr*wd): a rounding apart
