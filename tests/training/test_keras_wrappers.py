"""LossScaleOptimizer, MultiOptimizer and OptimizerMap in optimist: the torch optimizer they
build, paths, the loss scale's steps (Keras' own unit cases), checkpoints and configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import optimist
from optimist import optimizers
from optimist.training.keras_wrappers import ParameterPath
from optimist.training.optimizer_base import keras_path
from optimist.training.parts_optimizer import PartsOptimizer

RNG = np.random.default_rng(0)
X = RNG.standard_normal((48, 6)).astype(np.float32)
Y = RNG.standard_normal((48, 2)).astype(np.float32)


def _model() -> optimist.Sequential:
    torch.manual_seed(0)
    return optimist.Sequential(
        [
            optimist.layers.Dense(4, activation="tanh", input_shape=(6,), name="encoder"),
            optimist.layers.Dense(2, name="head"),
        ]
    )


def _lso(inner: optimizers.Optimizer, **kwargs) -> optimizers.LossScaleOptimizer:
    return optimizers.LossScaleOptimizer(inner, **kwargs)


def _built(opt: optimizers.Optimizer, values: list[float]) -> tuple[torch.Tensor, PartsOptimizer]:
    p = torch.tensor(values, requires_grad=True)
    return p, opt.build([p])


# -- the loss scale, step by step (Keras' loss_scale_optimizer_test cases) -------------------------
def test_finite_step_unscales_and_updates():
    for inner in (optimizers.SGD(0.5), optimizers.SGD(0.5, loss_scale_factor=100)):
        opt = _lso(inner)
        assert inner.loss_scale_factor is None  # the wrapper's scale replaces it
        p, torch_opt = _built(opt, [1.0, 2.0, 3.0, 4.0])
        p.grad = torch.tensor([1.0, 6.0, 7.0, 2.0]) * opt.initial_scale
        torch_opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor([0.5, -1.0, -0.5, 3.0]))
        assert int(opt.iterations) == 1 and opt.step_counter == 1


def test_a_scale_not_a_power_of_two_divides_exactly():
    opt = _lso(optimizers.SGD(1.0), initial_scale=3.0)
    p, torch_opt = _built(opt, [0.0, 0.0, 0.0])
    g = torch.tensor([1.0, 0.1, 7.3])
    p.grad = g.clone()
    torch_opt.step()
    assert torch.equal(p.detach(), -(g / 3.0))


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_gradient_skips_the_step_and_halves_the_scale(bad):
    opt = _lso(optimizers.Adam(0.1), initial_scale=400.0)
    p, torch_opt = _built(opt, [1.0, 2.0, 3.0, 4.0])
    for _ in range(4):
        p.grad = torch.tensor([1.0, bad, 1.0, 1.0])
        torch_opt.step()
    assert p.detach().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert opt.dynamic_scale == 25.0 and float(opt.scale_loss(torch.tensor(1.0))) == 25.0
    assert int(opt.iterations) == 0 and opt.step_counter == 0
    assert not torch_opt.state[p]  # Adam never stepped


def test_upscaling_after_dynamic_growth_steps():
    opt = _lso(optimizers.SGD(0.5), initial_scale=2.0, dynamic_growth_steps=2)
    p, torch_opt = _built(opt, [1.0, 2.0, 3.0, 4.0])
    for _ in range(8):
        p.grad = torch.tensor([1.0, 6.0, 7.0, 2.0])
        torch_opt.step()
    assert opt.dynamic_scale == 32.0 and int(opt.iterations) == 8


def test_scale_is_float32_and_scale_loss_uses_it():
    opt = _lso(optimizers.SGD(), initial_scale=1e38)
    assert opt.dynamic_scale == float(np.float32(1e38)) != 1e38
    assert opt.get_config()["initial_scale"] == 1e38  # the argument, as given
    loss = torch.tensor(2.0)
    assert float(opt.scale_loss(loss)) == float(np.float32(2.0) * np.float32(1e38))


def test_fit_scales_every_batch_with_the_current_scale(monkeypatch):
    opt = _lso(optimizers.SGD(0.01), initial_scale=2.0, dynamic_growth_steps=1)
    model = _model()
    model.compile(optimizer=opt, loss="mse")
    used: list[float] = []
    scale_loss = opt.scale_loss
    monkeypatch.setattr(
        opt, "scale_loss", lambda loss: used.append(opt.dynamic_scale) or scale_loss(loss)
    )
    model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert used == [2.0 * 2**i for i in range(6)]  # doubled after every good step


# -- the torch optimizer ---------------------------------------------------------------------------
def test_model_optimizer_is_a_torch_optimizer_over_the_inner_ones():
    model = _model()
    inner = optimizers.Adam(0.01)
    model.compile(optimizer=_lso(inner), loss="mse")
    opt = model.optimizer
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, PartsOptimizer)
    assert opt.param_groups[0] is inner.torch_optimizer.param_groups[0]
    model.optimizer.learning_rate = 0.02  # the inner optimizer's rate
    assert inner.torch_optimizer.param_groups[0]["lr"] == 0.02 == float(inner.learning_rate)
    calls: list[int] = []
    opt.register_step_pre_hook(lambda *args: calls.append(1))
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert len(calls) == 3 and int(opt.iterations) == 3
    params = list(model.parameters())
    assert set(opt.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}
    assert len(opt.state) == len(params) == len(opt.keras_optimizer.variables) // 3
    state = opt.state_dict()
    assert set(state) == {"parts", "wrapper"}
    assert state["wrapper"] == {"dynamic_scale": 2.0**15, "step_counter": 3}


def test_multi_optimizer_parts_step_their_own_parameters():
    model = _model()
    adam, sgd = optimizers.Adam(0.01), optimizers.SGD(0.1, momentum=0.9)
    multi = optimizers.MultiOptimizer(optimizers.OptimizerMap(sgd, {"encoder/.*": adam}))
    model.compile(optimizer=multi, loss="mse")
    enc, head = model.get_layer("encoder"), model.get_layer("head")
    assert list(adam.torch_optimizer.param_groups[0]["params"]) == [enc.weight, enc.bias]
    assert list(sgd.torch_optimizer.param_groups[0]["params"]) == [head.weight, head.bias]
    assert len(model.optimizer.param_groups) == 2
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 6 == int(adam.iterations) == int(sgd.iterations)
    assert "exp_avg" in model.optimizer.state[enc.weight]
    assert "momentum_buffer" in model.optimizer.state[head.weight]
    with pytest.raises(AttributeError, match="sub-optimizers"):
        model.optimizer.learning_rate  # noqa: B018 - Keras: no rate of its own


def test_train_and_eval_modes_reach_the_parts_that_have_them():
    from optimist import optim

    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    free, plain = optim.ScheduleFreeAdamW([a]), optim.SGD([b], lr=0.1)
    parts = PartsOptimizer([free, plain], optimizers.MultiOptimizer(lambda v: None))
    parts.eval()
    assert not free.training
    parts.train()
    assert free.training


def test_frozen_parameters_are_left_out():
    model = _model()
    model.get_layer("encoder").trainable = False
    adam, sgd = optimizers.Adam(), optimizers.SGD()
    model.compile(optimizers.MultiOptimizer(optimizers.OptimizerMap(sgd, {"encoder/.*": adam})))
    assert adam.torch_optimizer is None  # got no parameters: not built, not stepped
    assert [type(o).__name__ for o in model.optimizer.keras_optimizer._inner()] == ["SGD"]


# -- paths -----------------------------------------------------------------------------------------
def test_keras_paths_of_optimist_names():
    assert keras_path("dense.weight") == "dense/kernel"
    assert keras_path("dense.bias") == "dense/bias"
    assert keras_path("bn.gamma") == "bn/gamma"
    assert keras_path("block.0.weight") == "block/0/kernel"
    v = ParameterPath("lstm.recurrent_kernel", torch.zeros(3, 2))
    assert (v.path, v.name, v.shape) == ("lstm/recurrent_kernel", "recurrent_kernel", (3, 2))


def test_optimizer_map_matches_keras_paths_and_optimist_names():
    adam, sgd, rms, default = (
        optimizers.Adam(),
        optimizers.SGD(),
        optimizers.RMSprop(),
        optimizers.Nadam(),
    )
    m = optimizers.OptimizerMap(default, {"encoder/kernel": adam, "encoder/.*": sgd})
    m["head\\..*"] = rms  # optimist's own spelling
    w = torch.zeros(1)
    assert m(ParameterPath("encoder.weight", w)) is adam  # exact key first
    assert m(ParameterPath("encoder.bias", w)) is sgd
    assert m(ParameterPath("head.weight", w)) is rms
    assert m(ParameterPath("other.weight", w)) is default
    assert m["encoder/bias"] is sgd and len(m) == 3 and list(m) == [*m.keys()]
    del m["encoder/kernel"]
    assert m(ParameterPath("encoder.weight", w)) is sgd
    m["encoder/ker.*"] = adam
    with pytest.raises(ValueError, match="Multiple optimizers assigned to variable encoder/kernel"):
        m(ParameterPath("encoder.weight", w))


def test_optimizers_lists_map_then_default_then_discovered():
    a, b, c = optimizers.Adam(), optimizers.SGD(), optimizers.RMSprop()
    multi = optimizers.MultiOptimizer(optimizers.OptimizerMap(c, {"x": a, "y": b, "z": a}))
    assert multi.optimizers == [a, b, c]
    picked = optimizers.SGD()
    chooser = optimizers.MultiOptimizer(lambda v: picked if v.name == "kernel" else a)
    assert chooser.optimizers == []
    chooser.build([torch.zeros(2, requires_grad=True)] * 1, ["dense.weight"])
    assert chooser.optimizers == [picked]


def test_loss_scale_factor_is_set_on_every_inner_optimizer():
    a, b = optimizers.Adam(loss_scale_factor=3.0), optimizers.SGD(loss_scale_factor=4.0)
    multi = optimizers.MultiOptimizer(optimizers.OptimizerMap(b, {"x": a}), loss_scale_factor=5.0)
    assert (a.loss_scale_factor, b.loss_scale_factor) == (5.0, 5.0)
    assert float(multi.scale_loss(torch.tensor(2.0))) == 10.0 and multi.scales_loss
    optimizers.LossScaleOptimizer(multi)
    assert (multi.loss_scale_factor, a.loss_scale_factor, b.loss_scale_factor) == (None,) * 3


# -- checkpoints -----------------------------------------------------------------------------------
def _wrappers() -> dict[str, optimizers.Optimizer]:
    s = optimizers.schedules
    return {
        # a scale that overflows the float32 gradients (~1e-1) first: skips, halvings, growth
        "lso-adam": _lso(
            optimizers.Adam(0.01), initial_scale=2.0**128 * 0.99, dynamic_growth_steps=2
        ),
        "multi": optimizers.MultiOptimizer(
            optimizers.OptimizerMap(
                optimizers.SGD(s.ExponentialDecay(0.1, 2, 0.5), momentum=0.9),
                {"encoder/.*": optimizers.Adam(0.01, amsgrad=True)},
            )
        ),
        "lso-multi": _lso(
            optimizers.MultiOptimizer(
                optimizers.OptimizerMap(
                    optimizers.RMSprop(0.01, momentum=0.5), {"head/.*": optimizers.Adam(0.01)}
                )
            ),
            initial_scale=3.0,
            dynamic_growth_steps=2,
        ),
    }


@pytest.mark.parametrize("case", list(_wrappers()))
def test_save_load_and_train_on_equals_uninterrupted(tmp_path, case):
    kwargs = {"batch_size": 16, "shuffle": False, "verbose": 0}
    whole = _model()
    whole.compile(optimizer=_wrappers()[case], loss="mse")
    whole.fit(X, Y, epochs=4, **kwargs)

    first = _model()
    first.compile(optimizer=_wrappers()[case], loss="mse")
    first.fit(X, Y, epochs=2, **kwargs)
    first.save(tmp_path / "m.pt")
    again = optimist.models.load_model(tmp_path / "m.pt")
    assert isinstance(again.optimizer, PartsOptimizer)
    assert type(again.optimizer.keras_optimizer) is type(whole.optimizer.keras_optimizer)
    again.fit(X, Y, epochs=4, initial_epoch=2, **kwargs)

    for a, b in zip(again.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    mine, theirs = again.optimizer.keras_optimizer, whole.optimizer.keras_optimizer
    assert int(mine.iterations) == int(theirs.iterations)
    assert again.optimizer.state_dict()["wrapper"] == whole.optimizer.state_dict()["wrapper"]
    if case == "lso-adam":
        assert int(theirs.iterations) < 12  # some steps were skipped


def test_a_state_of_another_shape_does_not_load():
    model = _model()
    model.compile(optimizers.MultiOptimizer(optimizers.OptimizerMap(optimizers.SGD())), "mse")
    with pytest.raises(ValueError, match="holds 2 parts, this optimizer has 1"):
        model.optimizer.load_state_dict({"parts": [{}, {}], "wrapper": {}})


# -- configs ---------------------------------------------------------------------------------------
def test_configs_round_trip_through_serialize_and_get():
    for opt in _wrappers().values():
        config = optimizers.serialize(opt)
        again = optimizers.get(config)
        assert type(again) is type(opt) and optimizers.serialize(again) == config


def test_a_multi_optimizer_with_a_function_names_it_and_cannot_be_rebuilt():
    def choose(v):
        return optimizers.SGD()

    config = optimizers.MultiOptimizer(choose).get_config()
    assert config["optimizer_map"] == {"class_name": "function", "config": choose.__qualname__}
    with pytest.raises(ValueError, match="function"):
        optimizers.MultiOptimizer.from_config(config)


def test_a_multi_optimizer_with_a_function_loads_when_given_again(tmp_path):
    def make():
        adam, sgd = optimizers.Adam(0.01), optimizers.SGD(0.1, momentum=0.9)
        return optimizers.MultiOptimizer(lambda v: adam if "encoder" in v.path else sgd)

    model = _model()
    model.compile(make(), "mse")
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    model.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="function"):
        optimist.models.load_model(tmp_path / "m.pt")
    again = optimist.models.load_model(tmp_path / "m.pt", optimizer=make())
    assert again.optimizer.state_dict()["wrapper"] == {"iterations": [6, 6]}
    enc = again.get_layer("encoder").weight
    torch.testing.assert_close(
        again.optimizer.state[enc]["exp_avg"],
        model.optimizer.state[model.get_layer("encoder").weight]["exp_avg"],
    )


def test_lso_takes_only_keras_style_inner_optimizers():
    with pytest.raises(TypeError, match="Keras-style optimizer"):
        optimizers.LossScaleOptimizer(torch.optim.SGD)
