"""Transforms (optimist.chain) against their plain equivalents."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch

import optimist
import optimist.optim as oo
from optimist import transforms as T

from .table import make_params, needs_engine, set_grads


def test_clip_by_global_norm_equals_torch_clip_then_step():
    needs_engine()
    a, b = make_params(torch.float64), make_params(torch.float64)
    ours = optimist.chain(T.clip_by_global_norm(0.5), T.scale_by_adam())(a, lr=0.01)
    theirs = torch.optim.Adam(b, lr=0.01, foreach=False)
    for step in range(10):
        set_grads([a, b], step)
        torch.nn.utils.clip_grad_norm_(b, 0.5)
        ours.step()
        theirs.step()
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_decayed_weights_mask_by_name_and_callable():
    needs_engine()
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = optimist.chain(
        T.scale_by_sgd(), T.add_decayed_weights(0.5, mask=T.exclude("*bias", "1.*"))
    )(model.named_parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        expected = start[name] * (1 - 0.1 * 0.5) if name == "0.weight" else start[name]
        torch.testing.assert_close(p.detach(), expected)
    assert T.mask_matches(T.no_bias_or_norm, torch.zeros(3, 3), None)
    assert not T.mask_matches(T.no_bias_or_norm, torch.zeros(3), None)
    with pytest.raises(ValueError, match="named parameters"):
        T.mask_matches("*.bias", torch.zeros(3), None)


def _weight_and_bias() -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    return torch.nn.Parameter(torch.full((2, 2), 2.0)), torch.nn.Parameter(torch.full((2,), 2.0))


def _counting_matrix_mask() -> tuple[Callable[[torch.Tensor], bool], list[int]]:
    """A callable mask selecting matrices, and the list of the ranks it was called with."""
    seen: list[int] = []

    def matrices(p: torch.Tensor) -> bool:
        seen.append(p.dim())
        return p.dim() >= 2

    return matrices, seen


def test_decay_masks_follow_the_parameters_that_have_a_gradient_each_step():
    # the masks' rates are kept per parameter list: a parameter that has no gradient in one
    # step and has one in the next is decayed by its own mask each time, two decays after the
    # rule are applied one after the other, and a callable mask runs once per parameter of each
    # distinct list (not at every step)
    needs_engine()
    w, b = _weight_and_bias()
    matrices, seen = _counting_matrix_mask()
    opt = optimist.chain(
        T.scale_by_sgd(),
        T.add_decayed_weights(0.5, mask=matrices),
        T.add_decayed_weights(0.25),
    )([w, b], lr=0.1)
    expect_w, expect_b = 2.0, 2.0
    for with_bias in [False, True, True, False, True]:
        w.grad = torch.zeros_like(w)
        b.grad = torch.zeros_like(b) if with_bias else None
        opt.step()
        expect_w *= (1.0 - 0.1 * 0.5) - 0.1 * 0.25
        if with_bias:
            expect_b *= 1.0 - 0.1 * 0.25
        torch.testing.assert_close(w.detach(), torch.full((2, 2), expect_w), rtol=0, atol=1e-6)
        torch.testing.assert_close(b.detach(), torch.full((2,), expect_b), rtol=0, atol=1e-6)
    assert sorted(seen) == [1, 2, 2]  # w when alone, then w and b together: once each


def test_a_scheduled_chain_runs_a_callable_mask_once_per_parameter():
    # a scheduled step runs on a copy of the param group: the masks' rates are still made once
    needs_engine()
    w, b = _weight_and_bias()
    matrices, seen = _counting_matrix_mask()
    opt = optimist.chain(
        T.scale_by_sgd(),
        T.add_decayed_weights(0.5, mask=matrices),
        T.scale_by_schedule(lambda n: 0.5**n),
    )([w, b], lr=0.1)
    expect = 2.0
    for n in range(4):
        w.grad, b.grad = torch.zeros_like(w), torch.zeros_like(b)
        opt.step()
        expect *= 1.0 - 0.1 * 0.5**n * 0.5
        torch.testing.assert_close(w.detach(), torch.full((2, 2), expect), rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), torch.full((2,), 2.0))
    assert sorted(seen) == [1, 2]


def test_decay_before_rule_is_l2_after_is_decoupled():
    needs_engine()
    a, b, c = make_params(torch.float64), make_params(torch.float64), make_params(torch.float64)
    before = optimist.chain(T.add_decayed_weights(0.1), T.scale_by_adam())(a, lr=0.01)
    after = optimist.chain(T.scale_by_adam(), T.add_decayed_weights(0.1))(b, lr=0.01)
    adam_l2 = oo.Adam(c, lr=0.01, weight_decay=0.1)
    d = make_params(torch.float64)
    adamw = oo.AdamW(d, lr=0.01, weight_decay=0.1)
    for step in range(5):
        set_grads([a, b, c, d], step)
        for opt in (before, after, adam_l2, adamw):
            opt.step()
    for x, y in zip(a, c, strict=True):
        assert torch.equal(x, y)
    for x, y in zip(b, d, strict=True):
        assert torch.equal(x, y)


def test_accumulate_equals_mean_gradient_step():
    needs_engine()
    a, b = make_params(torch.float64), make_params(torch.float64)
    acc = optimist.chain(T.accumulate(3), T.clip_by_global_norm(1.0), T.scale_by_adam())(a, lr=0.01)
    plain = optimist.chain(T.clip_by_global_norm(1.0), T.scale_by_adam())(b, lr=0.01)
    for outer in range(4):
        grads = []
        for inner in range(3):
            set_grads([a], outer * 3 + inner)
            grads.append([p.grad.clone() for p in a])
            before = [p.detach().clone() for p in a]
            acc.step()
            if inner < 2:
                assert all(torch.equal(p, q) for p, q in zip(a, before, strict=True))
        for i, p in enumerate(b):
            p.grad = sum(g[i] for g in grads) / 3
        plain.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14)


def test_ema_and_swap():
    needs_engine()
    params = make_params(torch.float64)
    opt = optimist.chain(T.scale_by_sgd(), T.ema(0.9))(params, lr=0.1)
    ema = [p.detach().clone() for p in params]
    for step in range(5):
        set_grads([params], step)
        opt.step()
        ema = [0.9 * e + 0.1 * p.detach() for e, p in zip(ema, params, strict=True)]
    live = [p.detach().clone() for p in params]
    with opt.swap_ema():
        for p, e in zip(params, ema, strict=True):
            torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-12)
    assert all(torch.equal(p, q) for p, q in zip(params, live, strict=True))


def test_skip_nonfinite_and_schedule_and_clip_value():
    needs_engine()
    params = make_params(torch.float64, shapes=[(4,)])
    opt = optimist.chain(
        T.clip_by_value(0.1),
        T.skip_nonfinite(),
        T.scale_by_sgd(),
        T.scale_by_schedule(lambda n: 0.5**n),
    )(params, lr=1.0)
    start = params[0].detach().clone()
    params[0].grad = torch.tensor([1.0, -1.0, 0.05, float("nan")], dtype=torch.float64)
    opt.step()
    assert opt.skipped_steps == 1 and torch.equal(params[0], start)
    params[0].grad = torch.tensor([1.0, -1.0, 0.05, 0.0], dtype=torch.float64)
    opt.step()  # multiplier 0.5**0
    opt.step()  # multiplier 0.5**1
    expected = start - 1.5 * torch.tensor([0.1, -0.1, 0.05, 0.0], dtype=torch.float64)
    torch.testing.assert_close(params[0].detach(), expected)


def test_chain_errors():
    with pytest.raises(ValueError, match="exactly one update rule"):
        optimist.chain(T.clip_by_global_norm(1.0))
    with pytest.raises(ValueError, match="max_norm"):
        T.clip_by_global_norm(-1)
    with pytest.raises(ValueError, match="every"):
        T.accumulate(0)


def test_state_survives_deepcopy_and_pickle():
    needs_engine()
    params = make_params()
    opt = optimist.chain(T.clip_by_global_norm(1.0), T.scale_by_adam(), T.ema(0.9))(
        params, lr=0.01, state_dtype="int8"
    )
    set_grads([params], 0)
    opt.step()
    twin = copy.deepcopy(opt)
    assert twin.chain == opt.chain and twin.param_groups[0]["state_dtype"] == "int8"


def _chained(params, **hyper):  # noqa: ANN001, ANN202
    return optimist.chain(
        T.clip_by_global_norm(1.0),
        T.scale_by_adam(),
        T.add_decayed_weights(0.01, mask=T.no_bias_or_norm),
        T.ema(0.9),
    )(params, **hyper)


@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_a_chain_is_a_torch_optimizer_groups_state_dict_schedulers_and_hooks(state_dtype):
    """What ``chain(...)`` builds behaves as a ``torch.optim.Optimizer``: a group added later
    with its own lr, an ``lr_scheduler`` acting on every group, step hooks, and a
    ``state_dict`` (EMA and quantized moments included) that a fresh chain continues bitwise."""
    needs_engine()
    shapes = [(64, 80), (80,), (7, 3)]  # 5120 values: int8 blocks; a vector without decay
    a, b = make_params(shapes=shapes), make_params(shapes=shapes)
    extra_a, extra_b = make_params(seed=5, shapes=[(4, 4)]), make_params(seed=5, shapes=[(4, 4)])
    opt = _chained(a, lr=0.01, state_dtype=state_dtype)
    assert isinstance(opt, torch.optim.Optimizer)
    opt.add_param_group({"params": extra_a, "lr": 0.1})
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    for step in range(3):
        set_grads([a + extra_a], step)
        opt.step()
        scheduler.step()
    assert calls == ["pre", "post"] * 3
    assert [g["lr"] for g in opt.param_groups] == [0.005, 0.05]  # halved once, after step 2
    assert all("ema" in opt.state[p] for p in a + extra_a)
    if state_dtype == "int8":
        assert opt.state[a[0]]["exp_avg"].dtype == torch.int8

    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    with torch.no_grad():
        for p, q in zip(a + extra_a, b + extra_b, strict=True):
            q.copy_(p)
    twin = _chained(b, lr=0.01, state_dtype=state_dtype)
    twin.add_param_group({"params": extra_b, "lr": 0.1})
    twin_scheduler = torch.optim.lr_scheduler.StepLR(twin, step_size=2, gamma=0.5)
    twin.load_state_dict(saved["opt"])
    twin_scheduler.load_state_dict(saved["sched"])
    for step in range(3, 6):
        for params, o, s in ((a + extra_a, opt, scheduler), (b + extra_b, twin, twin_scheduler)):
            set_grads([params], step)
            o.step()
            s.step()
    for p, q in zip(a + extra_a, b + extra_b, strict=True):
        assert torch.equal(p, q)
    with opt.swap_ema(), twin.swap_ema():
        for p, q in zip(a + extra_a, b + extra_b, strict=True):
            assert torch.equal(p, q)
