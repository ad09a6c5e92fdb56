"""``optimist.optimizers.Muon`` (Keras 3's Muon) without Keras: which parameters take which
branch, checkpoints, and the arguments it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.layers import LSTM, Conv1D, Dense, Embedding, Flatten
from optimist.training.optimizer_base import keras_path

RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 4)).astype(np.float32)
Y = RNG.standard_normal((40, 2)).astype(np.float32)


@pytest.mark.parametrize(
    "name,path",
    [
        ("dense.weight", "dense/kernel"),
        ("dense_1.bias", "dense_1/bias"),
        ("embedding.embeddings", "embedding/embeddings"),
        ("lstm.recurrent_kernel", "lstm/recurrent_kernel"),
        ("0", "0"),
    ],
)
def test_keras_path_of_a_parameter_name(name, path):
    assert keras_path(name) == path


def test_branches_follow_keras_rule_on_a_mixed_model():
    model = optimist.Sequential(
        [
            optimist.Input((6, 2)),
            Conv1D(4, 3),  # rank 3: AdamW (torch's Muon would flatten it)
            LSTM(5, return_sequences=True),  # kernel and recurrent kernel: Muon
            Flatten(),
            Dense(7, name="my_embedding_proj"),  # "embedding" in the path: AdamW
            Dense(2, name="head"),
        ]
    )
    model.compile(optimizer=optimizers.Muon(exclude_layers=[r"head/kern"]), loss="mse")
    keras_opt = model.optimizer.keras_optimizer
    branch = dict(zip(keras_opt._names, keras_opt._use_adamw, strict=True))
    assert branch == {
        "conv1d.kernel": True,
        "conv1d.bias": True,
        "lstm.kernel": False,
        "lstm.recurrent_kernel": False,
        "lstm.bias": True,
        "my_embedding_proj.weight": True,
        "my_embedding_proj.bias": True,
        "head.weight": True,  # exclude_layers matched "head/kernel"
        "head.bias": True,
    }
    in_muon_groups = {
        id(p) for g in model.optimizer.param_groups if g["use_muon"] for p in g["params"]
    }
    named = dict(model.named_parameters())
    assert in_muon_groups == {id(named["lstm.kernel"]), id(named["lstm.recurrent_kernel"])}


def test_rms_rate_none_groups_matrices_by_size_and_unnamed_parameters_take_the_rank_rule():
    shapes = [(3, 5), (4,), (5, 2), (2, 2)]
    params = [torch.zeros(s, requires_grad=True) for s in shapes]
    opt = optimizers.Muon(rms_rate=None).build(params)  # no names: "0", "1", ...
    groups = [(g["use_muon"], [p.shape for p in g["params"]]) for g in opt.param_groups]
    # (3, 5) and (5, 2) share max(n, m) = 5: one rate ratio, one group
    assert groups == [(True, [(3, 5), (5, 2)]), (False, [(4,)]), (True, [(2, 2)])]
    ratios = [g["lr_ratio"] for g in opt.param_groups]
    assert ratios == pytest.approx([1 / (0.2 * 5**0.5), 1.0, 1 / (0.2 * 2**0.5)])


def _trained(make, epochs, *, save_to=None):
    torch.manual_seed(0)
    model = optimist.Sequential(
        [optimist.Input((4,)), Dense(6, activation="tanh"), Dense(5, activation="tanh"), Dense(2)]
    )
    model.compile(optimizer=make(), loss="mse")
    model.fit(X, Y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)
    if save_to is not None:
        model.save(save_to)
    return model


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.Muon(0.02),
        lambda: optimizers.Muon(
            optimizers.schedules.ExponentialDecay(0.05, 4, 0.5),
            rms_rate=None,
            adam_lr_ratio=0.5,
            nesterov=False,
        ),
    ],
    ids=["defaults", "schedule-rms-none"],
)
def test_save_then_load_and_train_on_equals_training_straight(tmp_path, make):
    straight = _trained(make, 4)
    _trained(make, 2, save_to=tmp_path / "m.pt")
    resumed = optimist.models.load_model(tmp_path / "m.pt")
    keras_opt = resumed.optimizer.keras_optimizer
    assert type(keras_opt) is optimizers.Muon and keras_opt.iterations == 10
    assert keras_opt.get_config() == make().get_config()
    resumed.fit(X, Y, batch_size=8, epochs=4, shuffle=False, verbose=0, initial_epoch=2)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"ns_steps": 2.0}, "ns_steps"),
        ({"ns_steps": 100}, "ns_steps"),
        ({"epsilon": "1e-7"}, "epsilon"),
        ({"adam_beta_1": 1.5}, "adam_beta_1"),
    ],
)
def test_arguments_it_cannot_honour_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimizers.Muon(**kwargs)


def test_compile_by_name_steps_the_embedding_table_by_adamw_and_trains():
    model = optimist.Sequential([optimist.Input((3,)), Embedding(10, 4), Flatten(), Dense(2)])
    tokens = RNG.integers(0, 10, (40, 3))
    model.compile(optimizer="muon", loss="mse")
    keras_opt = model.optimizer.keras_optimizer
    assert type(keras_opt) is optimizers.Muon
    assert keras_opt.get_config() == optimizers.Muon().get_config()  # Keras' defaults
    groups = [(g["use_muon"], len(g["params"])) for g in model.optimizer.param_groups]
    assert groups == [(False, 2), (True, 1)]  # the table and the bias: AdamW; the kernel: Muon
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(tokens, Y, batch_size=8, epochs=3, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    state = model.optimizer.state
    table = model.layers[0].embeddings
    assert set(state[table]) >= {"exp_avg", "exp_avg_sq"}  # AdamW's moments
    assert "momentum_buffer" in state[model.layers[-1].weight]  # Muon's
