"""Lookahead over any optimizer: Optax's ``lookahead``, ``pytorch_optimizer.Lookahead``, NumPy.

Gradients are taken at the fast weights (a noisy quadratic), so a wrong synchronisation shows up
in every later step.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import needs_optax, peer
from optimist import reference
from optimist import transforms as T

STEPS = 23  # four synchronisations at k=5 and three fast steps after the last


def quadratic_grad(x: np.ndarray, step: int) -> np.ndarray:
    noise = np.random.default_rng(step).standard_normal(x.shape)
    return (x - 2.0) * np.linspace(0.5, 3.0, x.size).reshape(x.shape) + 0.1 * noise


def start(shape=(4, 3)) -> np.ndarray:  # noqa: ANN001
    return np.random.default_rng(42).standard_normal(shape)


def run_ours(opt_factory, steps=STEPS, shape=(4, 3)):  # noqa: ANN001, ANN201
    p = torch.tensor(start(shape), requires_grad=True)
    opt = opt_factory([p])
    for step in range(steps):
        p.grad = torch.tensor(quadratic_grad(p.detach().numpy(), step))
        opt.step()
    return p, opt


def run_optax(fast_optimizer, k, alpha, reset_state):  # noqa: ANN001, ANN201
    """Optax's ``lookahead`` over ``fast_optimizer`` on the same noisy quadratic: (fast, slow)."""
    optax = needs_optax()
    import jax.numpy as jnp

    transform = optax.lookahead(fast_optimizer, k, alpha, reset_state=reset_state)
    params = optax.LookaheadParams.init_synced(jnp.asarray(start()))
    state = transform.init(params)
    for step in range(STEPS):
        g = jnp.asarray(quadratic_grad(np.asarray(params.fast), step))
        updates, state = transform.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params.fast), np.asarray(params.slow)


SYNC = pytest.mark.parametrize(("k", "alpha", "reset"), [(5, 0.5, False), (3, 0.8, True)])


def assert_equals_optax(ours, fast_optimizer, k, alpha, reset):  # noqa: ANN001
    """``ours`` (params -> Lookahead) and ``optax.lookahead(fast_optimizer, k, alpha, reset)``
    agree to 1e-12 in float64, fast and slow weights."""
    fast, slow = run_optax(fast_optimizer, k, alpha, reset)
    p, opt = run_ours(ours)
    assert isinstance(opt, oo.Lookahead)
    np.testing.assert_allclose(p.detach().numpy(), fast, rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["slow_param"].numpy(), slow, rtol=1e-12)
    assert not np.allclose(slow, fast)  # fast steps since the last synchronisation


@SYNC
@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_lookahead_equals_optax(inner, k, alpha, reset):
    optax = needs_optax()
    if inner == "adam":
        theirs, make = optax.adam(0.05), lambda ps: oo.Adam(ps, lr=0.05)
    else:  # Optax's trace is torch's heavy ball
        theirs, make = optax.sgd(0.05, momentum=0.9), lambda ps: oo.SGD(ps, lr=0.05, momentum=0.9)
    assert_equals_optax(
        lambda ps: oo.Lookahead(make(ps), k, alpha, reset_state=reset), theirs, k, alpha, reset
    )


@SYNC
@pytest.mark.parametrize("case", ["clip_adamw", "l2_sgd_momentum"])
def test_lookahead_link_in_a_chain_equals_optax(case, k, alpha, reset):
    """``chain(..., lookahead(k, alpha))`` is ``optax.lookahead(optax.chain(...), k, alpha)``."""
    optax = needs_optax()
    if case == "clip_adamw":
        links = (T.clip_by_value(0.5), T.scale_by_adam(), T.add_decayed_weights(0.01))
        theirs = optax.chain(optax.clip(0.5), optax.adamw(0.05, weight_decay=0.01))
    else:
        links = (T.add_decayed_weights(0.01), T.scale_by_sgd(momentum=0.9))
        theirs = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.05, momentum=0.9))
    chained = optimist.chain(*links, T.lookahead(k, alpha, reset_state=reset))
    assert_equals_optax(lambda ps: chained(ps, lr=0.05), theirs, k, alpha, reset)


@pytest.mark.parametrize("inner", ["adam", "sgd"])
def test_lookahead_equals_pytorch_optimizer(inner):
    Theirs = peer("pytorch_optimizer").Lookahead

    def make(ps):  # noqa: ANN001, ANN202
        if inner == "adam":
            return torch.optim.Adam(ps, lr=0.05)
        return torch.optim.SGD(ps, lr=0.05, momentum=0.9)

    theirs, _ = run_ours(lambda ps: Theirs(make(ps), k=5, alpha=0.5))
    ours, _ = run_ours(lambda ps: oo.Lookahead(make(ps), k=5, alpha=0.5))
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("inner", "hyper"),
    [
        ("adam", {"lr": 0.05}),
        ("adam", {"lr": 0.05, "weight_decay": 0.01}),
        ("sgd", {"lr": 0.05, "momentum": 0.9}),
        ("lion", {"lr": 0.01}),
    ],
)
@SYNC
def test_lookahead_matches_numpy_reference(inner, hyper, k, alpha, reset):
    """The wrapper and the chain link ``chain(scale_by(X), lookahead(...))``: the same
    optimizer bit for bit, and the NumPy reference."""
    cls = {"adam": oo.Adam, "sgd": oo.SGD, "lion": oo.Lion}[inner]
    p, opt = run_ours(lambda ps: oo.Lookahead(cls(ps, **hyper), k, alpha, reset_state=reset))
    link = T.lookahead(k, alpha, reset_state=reset)
    chained, _ = run_ours(lambda ps: optimist.chain(T.scale_by(cls), link)(ps, **hyper))
    assert torch.equal(chained, p)
    x, state = start(), {}
    for step in range(STEPS):
        x, state = reference.lookahead(
            x, quadratic_grad(x, step), state, inner=inner, k=k, alpha=alpha, reset_state=reset,
            **hyper,
        )  # fmt: skip
    np.testing.assert_allclose(p.detach().numpy(), x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(opt.state[p]["slow_param"].numpy(), state["slow_param"], rtol=1e-10)


def test_schedulers_zero_grad_and_groups_act_on_the_inner_optimizer():
    p = torch.zeros(3, requires_grad=True)
    inner = oo.Adam([p], lr=0.1)
    opt = oo.Lookahead(inner)
    assert opt.param_groups is inner.param_groups and opt.defaults is inner.defaults
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = torch.ones(3)
        opt.step()
        scheduler.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    q = torch.zeros(2, requires_grad=True)
    opt.add_param_group({"params": [q], "lr": 0.2})
    assert len(inner.param_groups) == 2 and torch.equal(opt.state[q]["slow_param"], q.detach())
    opt.zero_grad()
    assert p.grad is None
    assert "Lookahead(k=5, alpha=0.5, Adam" in repr(opt)


@pytest.mark.parametrize("form", ["wrapper", "chain"])
def test_state_dict_holds_slow_weights_and_inner_state_and_resumes_bit_identically(form):
    def factory(ps):  # noqa: ANN001, ANN202
        if form == "chain":
            chained = optimist.chain(T.scale_by_adam(), T.lookahead(4, 0.6))
            return chained(ps, lr=0.05, state_dtype="int8")
        return oo.Lookahead(oo.Adam(ps, lr=0.05, state_dtype="int8"), k=4, alpha=0.6)

    full, _ = run_ours(factory, steps=20, shape=(70, 80))
    half, opt = run_ours(factory, steps=9, shape=(70, 80))
    saved = opt.state_dict()
    assert set(saved["inner"]["state"][0]) >= {"step", "exp_avg", "exp_avg_sq"}
    assert set(saved["state"][0]) == {"slow_param"} and saved["lookahead"]["fast_steps"] == 9
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    buffer.seek(0)
    p = half.detach().clone().requires_grad_()
    resumed = factory([p])
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.param_groups is resumed.optimizer.param_groups
    for step in range(9, 20):
        p.grad = torch.tensor(quadratic_grad(p.detach().numpy(), step))
        resumed.step()
    assert torch.equal(p, full)
    with pytest.raises(ValueError, match="not a Lookahead state_dict"):
        resumed.load_state_dict(resumed.optimizer.state_dict())


def test_deepcopy_keeps_the_wrapper_and_its_inner_optimizer():
    p, opt = run_ours(lambda ps: oo.Lookahead(oo.Adam(ps, lr=0.05), k=3), steps=4)
    twin = copy.deepcopy(opt)
    assert twin.optimizer is not opt.optimizer and twin.fast_steps == 4
    assert twin.param_groups is twin.optimizer.param_groups


def test_step_hooks_fire_and_slow_weights_swap_for_evaluation():
    p = torch.zeros(3, requires_grad=True)
    opt = oo.Lookahead(oo.SGD([p], lr=1.0), k=2, alpha=0.5)
    calls = []
    opt.register_step_pre_hook(lambda o, a, kw: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, kw: calls.append("post"))
    p.grad = -torch.ones(3)
    opt.step()
    assert calls == ["pre", "post"]
    assert torch.equal(p.detach(), torch.ones(3))  # fast weights moved, slow still at zero
    with opt.slow_weights():
        assert torch.equal(p.detach(), torch.zeros(3))
    assert torch.equal(p.detach(), torch.ones(3))
    opt.step()  # second fast step: 2; synchronise: 0 + 0.5 (2 - 0) = 1
    assert torch.equal(p.detach(), torch.ones(3))
    assert torch.equal(opt.state[p]["slow_param"], torch.ones(3))


def test_only_applied_inner_steps_count():
    """With accumulate(2) a synchronisation comes after k applied steps, not k calls."""
    p = torch.zeros(2, requires_grad=True)
    inner = optimist.chain(T.accumulate(2), T.scale_by(oo.SGD))([p], lr=1.0)
    opt = oo.Lookahead(inner, k=2, alpha=0.5)
    for _ in range(3):
        p.grad = -torch.ones(2)
        opt.step()
    assert opt.fast_steps == 1
    p.grad = -torch.ones(2)
    opt.step()  # second applied step: synchronise
    assert opt.fast_steps == 2 and torch.equal(p.detach(), torch.ones(2))


def test_over_the_new_optimizers_and_by_name():
    for inner in (
        lambda ps: oo.Prodigy(ps),
        lambda ps: oo.SophiaG(ps, lr=0.01),
        lambda ps: oo.ScheduleFreeAdamW(ps, lr=0.01),
    ):
        p, _ = run_ours(lambda ps, inner=inner: oo.Lookahead(inner(ps)), steps=12)
        assert torch.isfinite(p).all()
    opt = optimist.optimizer("lookahead", [torch.zeros(2, requires_grad=True)], inner="sgd", k=3)
    assert isinstance(opt, oo.Lookahead) and isinstance(opt.optimizer, oo.SGD)
    assert opt.k == 3 and opt.param_groups[0]["lr"] == 0.01


def test_lookahead_errors():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        oo.Lookahead([p])
    with pytest.raises(ValueError, match="Invalid k"):
        oo.Lookahead(oo.SGD([p]), k=0)
    with pytest.raises(ValueError, match="Invalid alpha"):
        oo.Lookahead(oo.SGD([p]), alpha=1.5)
    with pytest.raises(ValueError, match="Invalid alpha"):
        oo.Lookahead(oo.SGD([p]), alpha=float("nan"))
    with pytest.raises(ValueError, match="Invalid k"):
        T.lookahead(k=2.5)
    with pytest.raises(ValueError, match="Invalid reset_state"):
        T.lookahead(reset_state=1)
    with pytest.raises(ValueError, match="as the last link"):
        optimist.chain(T.lookahead(), T.scale_by_adam())
    with pytest.raises(ValueError, match="as the last link"):
        optimist.chain(T.scale_by_adam(), T.lookahead(), T.lookahead())
    with pytest.raises(ValueError, match="takes transforms"):
        optimist.chain(T.scale_by_adam(), oo.Lookahead)
