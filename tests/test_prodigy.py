"""Prodigy against the authors' ``prodigyopt``, Optax's ``contrib.prodigy`` and NumPy.

The problems are noisy quadratics with gradients taken at the current weights, so the estimate
``d`` grows by orders of magnitude within the run and every part of the rule is exercised (a
random-gradient run would leave ``d`` at ``d0`` and the weights nearly still).
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import needs_engine, needs_optax, peer
from optimist import reference
from optimist import transforms as T
from optimist.optim import engine

SHAPES = [(6, 5), (7,), (70, 80)]  # one tensor >= 4096 elements: int8 state is block-wise there
STEPS = 25


def make_problem(dtype=torch.float64, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]
    targets = [3 * torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    return params, targets


def set_grads(params, targets, step):
    gen = torch.Generator().manual_seed(1000 + step)
    for p, c in zip(params, targets, strict=True):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        p.grad = (p.detach() - c) + 0.1 * noise


def run(cls, kwargs, steps=STEPS, dtype=torch.float64, fused=None, seed=0, shapes=SHAPES):
    params, targets = make_problem(dtype, seed, shapes)
    implementation = {True: {"fused": True}, False: {"foreach": False}, None: {}}[fused]
    opt = cls(params, **kwargs, **implementation)
    for step in range(steps):
        set_grads(params, targets, step)
        opt.step()
    return params, opt


def needs_prodigyopt():  # noqa: ANN201
    return peer("prodigyopt").Prodigy


CONFIGS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decouple": False},
    {"betas": (0.0, 0.99)},
    {"use_bias_correction": True, "safeguard_warmup": True, "d_coef": 2.0, "growth_rate": 1.05},
    {"beta3": 0.9, "eps": 1e-3, "d0": 1e-4, "lr": 0.5},
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_prodigy_equals_the_authors_package(kwargs, fused):
    if fused:
        needs_engine()
    Theirs = needs_prodigyopt()
    theirs, their_opt = run(Theirs, kwargs)
    ours, opt = run(oo.Prodigy, kwargs, fused=fused)
    # the estimate moved by orders of magnitude: the test exercises d, not just d0
    assert opt.param_groups[0]["d"] > 100 * opt.param_groups[0]["d0"] or kwargs.get("growth_rate")
    for key in ("d", "d_max", "d_numerator", "d_hat", "k"):
        assert opt.param_groups[0][key] == pytest.approx(their_opt.param_groups[0][key], rel=1e-10)
    # eager: torch's own sums, bit for bit; fused: the engine's chunked sums (another order)
    tol = dict(rtol=1e-10, atol=1e-11) if fused else dict(rtol=0, atol=0)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, **tol)
        for key in ("exp_avg", "exp_avg_sq", "s", "p0"):
            if key in their_opt.state[b]:
                torch.testing.assert_close(
                    opt.state[a][key].flatten(),
                    their_opt.state[b][key].flatten(),
                    rtol=1e-8 if fused else 0,
                    atol=(1e-12 if fused else 0) * float(their_opt.state[b][key].abs().max()),
                )


def test_prodigy_loads_a_prodigyopt_checkpoint_and_continues_alike():
    Theirs = needs_prodigyopt()
    params, targets = make_problem()
    theirs = Theirs(params)
    for step in range(10):
        set_grads(params, targets, step)
        theirs.step()
    mine = [p.detach().clone().requires_grad_() for p in params]
    ours = oo.Prodigy(mine)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for step in range(10, 20):
        set_grads(params, targets, step)
        set_grads(mine, targets, step)
        theirs.step()
        ours.step()
    for a, b in zip(mine, params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_prodigy_equals_optax(weight_decay):
    """Optax always bias-corrects and decays decoupled: ``use_bias_correction=True``."""
    optax = needs_optax()
    import jax.numpy as jnp

    params, targets = make_problem(shapes=[(6, 5)])
    ours = oo.Prodigy(params, use_bias_correction=True, weight_decay=weight_decay)
    transform = optax.contrib.prodigy(1.0, weight_decay=weight_decay)
    x = jnp.asarray(params[0].detach().numpy())
    target = jnp.asarray(targets[0].numpy())
    state = transform.init(x)
    for step in range(STEPS):
        set_grads(params, targets, step)
        noise = params[0].grad.numpy() - (params[0].detach().numpy() - targets[0].numpy())
        ours.step()
        updates, state = transform.update((x - target) + jnp.asarray(noise), state, x)
        x = optax.apply_updates(x, updates)
    assert ours.param_groups[0]["d"] > 100 * 1e-6
    np.testing.assert_allclose(params[0].detach().numpy(), np.asarray(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", CONFIGS + [{"maximize": True}], ids=[str(i) for i in range(7)])
def test_prodigy_matches_numpy_reference_on_the_concatenated_parameters(kwargs):
    needs_engine()
    params, targets = make_problem()
    opt = oo.Prodigy(params, **kwargs, fused=True)
    x = torch.cat([p.detach().flatten() for p in params]).numpy()
    state: dict = {}
    sign = -1.0 if kwargs.get("maximize") else 1.0
    for step in range(STEPS):
        set_grads(params, targets, step)
        for p in params:
            p.grad *= sign  # maximize: ascend -f, so the run still converges
        grad = torch.cat([p.grad.flatten() for p in params]).numpy()
        opt.step()
        x, state = reference.prodigy(x, grad, state, **kwargs)
    got = torch.cat([p.detach().flatten() for p in params]).numpy()
    np.testing.assert_allclose(got, x, rtol=1e-9, atol=1e-10)
    assert state["d"] == pytest.approx(opt.param_groups[0]["d"], rel=1e-9)


@pytest.mark.parametrize("state_dtype", [None, "float32", "bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prodigy_fused_equals_eager(state_dtype, dtype):
    needs_engine()
    kwargs = {"weight_decay": 0.01, "state_dtype": state_dtype}
    a, opt_a = run(oo.Prodigy, kwargs, dtype=dtype, fused=True)
    b, opt_b = run(oo.Prodigy, kwargs, dtype=dtype, fused=False)
    # the two paths sum <g, x0 - x> and |s|_1 in different orders, so d differs by rounding;
    # quantized state then rounds a few values the other way and the runs drift apart locally
    exact = state_dtype is None and dtype == torch.float64
    quantized = state_dtype in ("bfloat16", "int8")
    tol = dict(rtol=1e-10, atol=1e-11) if exact else dict(rtol=2e-3, atol=2e-3)
    for pa, pb in zip(a, b, strict=True):
        if quantized:
            diff = float((pa - pb).detach().abs().mean())
            assert diff < 1e-3 * float(pb.detach().abs().mean())
        else:
            torch.testing.assert_close(pa, pb, **tol)
        for key, value in opt_a.state[pa].items():
            assert value.dtype == opt_b.state[pb][key].dtype, key
    stored = {"bfloat16": torch.bfloat16, "int8": torch.int8}.get(state_dtype)
    if stored is not None:
        assert opt_a.state[a[2]]["s"].dtype == stored
        assert opt_a.state[a[2]]["p0"].dtype == dtype  # x0 is kept exactly


def test_prodigy_low_precision_state_still_converges_like_float32():
    needs_engine()

    def loss(params):  # noqa: ANN001, ANN202
        _, targets = make_problem(torch.float32)
        return sum(
            float(((p.detach() - c) ** 2).sum()) for p, c in zip(params, targets, strict=True)
        )

    def final_loss(state_dtype):  # noqa: ANN001, ANN202
        return loss(run(oo.Prodigy, {"state_dtype": state_dtype}, dtype=torch.float32, steps=60)[0])

    full = final_loss(None)
    assert full < 0.01 * loss(make_problem(torch.float32)[0])  # converged (5.8e4 -> 4e2)
    for state_dtype in ("bfloat16", "int8"):  # measured: +0.0% and +6.5%
        assert final_loss(state_dtype) == pytest.approx(full, rel=0.1)


def test_prodigy_state_dict_round_trip_continues_bit_identically():
    needs_engine()
    params, targets = make_problem(torch.float32)
    opt = oo.Prodigy(params, state_dtype="int8", weight_decay=0.01)
    for step in range(5):
        set_grads(params, targets, step)
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    twin = [p.detach().clone().requires_grad_() for p in params]
    other = oo.Prodigy(twin, state_dtype="int8", weight_decay=0.01)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(5, 10):
        set_grads(params, targets, step)
        set_grads(twin, targets, step)
        opt.step()
        other.step()
    for a, b in zip(params, twin, strict=True):
        assert torch.equal(a, b)


def test_prodigy_with_clipping_and_accumulation_matches_the_prepared_gradient():
    """The global pass sees the gradient the rule sees: clip_by_global_norm + accumulate(2)."""
    needs_engine()
    params, targets = make_problem(shapes=[(20,)])
    chained = optimist.chain(T.accumulate(2), T.clip_by_global_norm(1.0), T.scale_by(oo.Prodigy))(
        params
    )
    x = params[0].detach().clone().numpy()
    state: dict = {}
    for step in range(2 * STEPS):
        set_grads(params, targets, step)
        if step % 2 == 0:
            first = params[0].grad.numpy().copy()
        else:
            mean = (first + params[0].grad.numpy()) / 2
            mean = mean * min(1.0, 1.0 / (np.linalg.norm(mean) + 1e-6))
        chained.step()
        if step % 2 == 1:
            x, state = reference.prodigy(x, mean, state)
    np.testing.assert_allclose(params[0].detach().numpy(), x, rtol=1e-9, atol=1e-12)


def test_prodigy_errors():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="d0"):
        oo.Prodigy([p], d0=0.0)
    with pytest.raises(ValueError, match="growth_rate"):
        oo.Prodigy([p], growth_rate=0.5)
    with pytest.raises(ValueError, match="beta3"):
        oo.Prodigy([p], beta3=1.5)
    with pytest.raises(ValueError, match="weight_decay="):
        optimist.chain(T.scale_by(oo.Prodigy), T.add_decayed_weights(0.1))([p])
    q = torch.zeros(3, requires_grad=True)
    opt = oo.Prodigy([{"params": [p]}, {"params": [q], "lr": 0.5}])
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    with pytest.raises(RuntimeError, match="common lr or 0"):
        opt.step()


def test_prodigy_without_gradient_signal_changes_nothing_and_frozen_groups_stay():
    p = torch.ones(4, requires_grad=True)
    q = torch.ones(4, requires_grad=True)
    opt = oo.Prodigy([{"params": [p]}, {"params": [q], "lr": 0.0}])
    p.grad = torch.zeros(4)
    opt.step()  # |s|_1 == 0: no step, k stays (as prodigyopt)
    assert opt.param_groups[0]["k"] == 0 and torch.equal(p, torch.ones(4))
    for _ in range(5):
        p.grad, q.grad = p.detach() - 3, q.detach() - 3
        opt.step()
    assert not torch.equal(p, torch.ones(4)) and torch.equal(q, torch.ones(4))


def test_prodigy_finds_its_step_size_on_a_regression_problem():
    """No learning rate to tune: from d0 = 1e-6 it fits a linear model as a tuned Adam does."""
    torch.manual_seed(0)
    x = torch.randn(256, 10)
    y = x @ torch.randn(10, 1) + 0.01 * torch.randn(256, 1)
    model = torch.nn.Linear(10, 1)
    opt = oo.Prodigy(model.parameters())
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    assert opt.param_groups[0]["d"] > 1e-2  # grew by four orders of magnitude


def test_prodigy_is_registered_by_name():
    p = torch.zeros(2, requires_grad=True)
    opt = optimist.optimizer("prodigy", [p])
    assert isinstance(opt, oo.Prodigy) and opt.defaults["lr"] == 1.0
    assert opt.defaults["d0"] == 1e-6 and opt.defaults["decouple"] is True


@pytest.mark.parametrize("fused", [True, False])
def test_prodigy_complex_params_equal_their_real_view(fused):
    """A complex parameter is a pair of reals, as torch.optim treats it (d is global alike)."""
    if fused:
        needs_engine()
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(5, 4, dtype=torch.complex128, generator=gen).requires_grad_()
    r = torch.view_as_real(z.detach().clone()).requires_grad_()
    implementation = {"fused": True} if fused else {"foreach": False}
    a, b = oo.Prodigy([z], **implementation), oo.Prodigy([r], **implementation)
    for _ in range(15):
        g = z.detach() - (1 + 2j) + 0.1 * torch.randn(5, 4, dtype=torch.complex128, generator=gen)
        z.grad, r.grad = g, torch.view_as_real(g).clone()
        a.step()
        b.step()
    assert a.param_groups[0]["d"] > 1e-4
    assert torch.equal(torch.view_as_real(z.detach()), r.detach())


def test_prodigy_large_statistics_keep_the_fused_path(monkeypatch):
    """``d_numerator`` grows past float16's range in real runs: it is a statistic, not a
    hyperparameter, so the engine's float16-overflow fallback to the eager path must not fire."""
    needs_engine()
    params, targets = make_problem(torch.float32)
    opt = oo.Prodigy(params, fused=True)
    set_grads(params, targets, 0)
    opt.step()
    opt.param_groups[0]["d_numerator"] = 1e9

    def eager(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the eager path ran")

    monkeypatch.setattr(engine, "run_eager", eager)  # the per-tensor path
    set_grads(params, targets, 1)
    opt.step()
    assert opt.param_groups[0]["k"] == 2


def test_float16_parameters_keep_float32_state_which_float16_would_flush_to_zero():
    """Prodigy's moments scale with d and d^2 (v ~ 1e-15 at d0 = 1e-6), below float16's range:
    float16 state (prodigyopt keeps its state in the parameter dtype) flushes them, |s|_1 loses
    the past steps and d jumps; the default stores them in float32 and follows a float32 run."""
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(64, 80, generator=gen).requires_grad_()]
    b = [a[0].detach().half().requires_grad_()]
    oa, ob = oo.Prodigy(a), oo.Prodigy(b)
    for step in range(5):
        g = torch.randn(64, 80, generator=torch.Generator().manual_seed(step))
        a[0].grad, b[0].grad = g, g.half()
        oa.step()
        ob.step()
    state = ob.state[b[0]]
    assert {state[k].dtype for k in ("exp_avg", "exp_avg_sq", "s")} == {torch.float32}
    assert state["p0"].dtype == torch.float16
    assert ob.param_groups[0]["d"] == oa.param_groups[0]["d"]
    assert 0 < state["exp_avg_sq"].abs().max() < torch.finfo(torch.float16).tiny  # why
    torch.testing.assert_close(b[0].float(), a[0].detach(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight_decay": 0.1, "decouple": False, "maximize": True},
        {"state_dtype": "bfloat16", "weight_decay": 0.1},
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prodigy_planned_global_pass_equals_the_pass_over_lists_bitwise(kwargs, dtype, monkeypatch):
    """The global pass fed by the step's plan (each tensor converted and checked once per step)
    gives what the pass over its own lists gives, bit for bit: d, weights and state."""
    needs_engine()
    mod = engine.load()
    calls = {"plan": 0, "lists": 0}
    for name, key in (("prodigy_plan_stats", "plan"), ("prodigy_stats", "lists")):
        original = getattr(mod, name)

        def counted(*args, _original=original, _key=key, **kw):  # noqa: ANN002, ANN003, ANN202
            calls[_key] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(mod, name, counted)
    planned, opt_a = run(oo.Prodigy, kwargs, steps=6, dtype=dtype, fused=True)
    assert calls == {"plan": 6 - 1, "lists": 1}  # the first step makes the state: the lists
    monkeypatch.setattr(oo.Prodigy, "_statistics_fast", lambda *args: None)
    listed, opt_b = run(oo.Prodigy, kwargs, steps=6, dtype=dtype, fused=True)
    assert calls == {"plan": 5, "lists": 7}
    assert opt_a.param_groups[0]["d"] == opt_b.param_groups[0]["d"] > 1e-6
    for pa, pb in zip(planned, listed, strict=True):
        assert torch.equal(pa, pb)
        for key, value in opt_a.state[pa].items():
            assert torch.equal(value, opt_b.state[pb][key]), key
