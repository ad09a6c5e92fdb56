"""SophiaG against the authors' code (``sophia-opt`` 0.2.2) and the NumPy reference.

Each run alternates steps on the loss gradient with ``update_hessian()`` every ``K`` steps on a
second gradient (the GNB gradient of sampled labels in real use; an independent random one here),
so both the clipped and the unclipped branch of the update are reached.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import needs_engine, peer
from optimist import reference
from optimist import transforms as T
from optimist.optim import engine

SHAPES = [(6, 5), (7,), (70, 80)]
STEPS, K = 30, 3
# small rho * bs, so that |m| / (rho bs h) straddles the clip at 1
BASE = {"lr": 0.01, "rho": 0.05, "bs": 4, "weight_decay": 0.1}
CONFIGS = [
    BASE,
    {**BASE, "betas": (0.9, 0.9), "weight_decay": 0.0},
    {**BASE, "maximize": True},
    {},  # the authors' defaults
]


def needs_theirs():  # noqa: ANN201
    return peer("sophia_opt").SophiaG


def grads_at(params, step, which):  # noqa: ANN001, ANN201
    gen = torch.Generator().manual_seed(10_000 * which + step)
    return [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) for p in params]


def drive(opt, params, steps=STEPS, hessian=None):  # noqa: ANN001, ANN201
    """Steps, with update_hessian (or ``hessian(opt)``) every K-th step."""
    for step in range(steps):
        for p, g in zip(params, grads_at(params, step, 1), strict=True):
            p.grad = g + 0.3 * p.detach()
        opt.step(**({"bs": opt.param_groups[0]["bs"]} if hessian == "theirs" else {}))
        if step % K == 0:
            for p, g in zip(params, grads_at(params, step, 2), strict=True):
                p.grad = g
            opt.update_hessian()
    return params


def make(dtype=torch.float64, seed=0):  # noqa: ANN001, ANN201
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kwargs", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_sophia_g_equals_the_authors_code(kwargs, fused):
    if fused:
        needs_engine()
    Theirs = needs_theirs()
    theirs = make()
    their_kwargs = {k: v for k, v in kwargs.items() if k != "bs"}
    their_opt = Theirs(theirs, **their_kwargs)
    their_opt.param_groups[0]["bs"] = kwargs.get("bs", 5120)  # their step(bs=...) argument
    drive(their_opt, theirs, hessian="theirs")
    ours = make()
    opt = oo.SophiaG(ours, **kwargs, **({"fused": True} if fused else {"foreach": False}))
    drive(opt, ours)
    clipped = 0
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        for key in ("exp_avg", "hessian"):
            torch.testing.assert_close(
                opt.state[a][key], their_opt.state[b][key], rtol=1e-12, atol=0
            )
        m, h = opt.state[a]["exp_avg"], opt.state[a]["hessian"]
        group = opt.param_groups[0]
        clipped += int((m.abs() >= group["rho"] * group["bs"] * h).sum())
    total = sum(p.numel() for p in ours)
    if kwargs:  # both branches of the min(., 1) are exercised
        assert 0 < clipped < total


def _update_hessian_both(opt, params, x, states, step, betas):  # noqa: ANN001, ANN202
    """The same curvature gradients into ``opt.update_hessian()`` and into the reference's
    ``x`` and ``states`` (updated in place)."""
    for i, (p, g) in enumerate(zip(params, grads_at(params, step, 2), strict=True)):
        p.grad = g
        x[i], states[i] = reference.sophia_g_update_hessian(x[i], g.numpy(), states[i], betas=betas)
    opt.update_hessian()


@pytest.mark.parametrize("kwargs", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_sophia_g_matches_numpy_reference(kwargs):
    needs_engine()
    params = make(seed=3)
    x = [p.detach().numpy().copy() for p in params]
    states: list[dict] = [{} for _ in params]
    opt = oo.SophiaG(params, **kwargs, fused=True)
    hyper = {k: v for k, v in opt.defaults.items() if k in _keys(reference.sophia_g)}
    for step in range(STEPS):
        for i, (p, g) in enumerate(zip(params, grads_at(params, step, 1), strict=True)):
            p.grad = g + 0.3 * p.detach()
            x[i], states[i] = reference.sophia_g(x[i], p.grad.numpy().copy(), states[i], **hyper)
        opt.step()
        if step % K == 0:
            _update_hessian_both(opt, params, x, states, step, hyper["betas"])
    for p, ref in zip(params, x, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-9, atol=1e-12)


def _keys(rule):  # noqa: ANN001, ANN202
    import inspect

    return set(inspect.signature(rule).parameters) - {"param", "grad", "state"}


def _fused_and_eager(dtype, **kwargs):  # noqa: ANN001, ANN202
    """SophiaG with ``kwargs`` driven on the engine and on the per-tensor path, from the same
    parameters: ((optimizer, params) fused, (optimizer, params) eager)."""
    needs_engine()
    runs = []
    for implementation in ({"fused": True}, {"foreach": False}):
        params = make(dtype)
        opt = oo.SophiaG(params, **kwargs, **implementation)
        drive(opt, params)
        runs.append((opt, params))
    return runs


@pytest.mark.parametrize("state_dtype", [None, "float32", "bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sophia_g_fused_equals_eager(state_dtype, dtype):
    (opt_a, a), (opt_b, b) = _fused_and_eager(dtype, **BASE, state_dtype=state_dtype)
    exact = state_dtype is None and dtype == torch.float64
    tol = dict(rtol=1e-12, atol=1e-12) if exact else dict(rtol=2e-3, atol=2e-3)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, **tol)
        for key, value in opt_a.state[pa].items():
            assert value.dtype == opt_b.state[pb][key].dtype, key
    if state_dtype in ("bfloat16", "int8"):
        assert opt_a.state[a[2]]["hessian"].dtype == getattr(torch, state_dtype)


# eps near rho * bs * h, so that max(rho bs h, eps) takes both sides and the two forms part
FORMS = {**BASE, "eps": 0.01}


def _floored(opt, params):  # noqa: ANN001, ANN202
    """How many elements of ``params`` have rho * bs * h below eps (the "max" form's floor)."""
    group = opt.param_groups[0]
    return sum(
        int((group["rho"] * group["bs"] * opt.state[p]["hessian"] < group["eps"]).sum())
        for p in params
    )


@pytest.mark.parametrize("eps_form", ["add", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_both_eps_forms_fused_equal_eager_bitwise(eps_form, dtype):
    (opt_a, a), (opt_b, b) = _fused_and_eager(dtype, **FORMS, eps_form=eps_form)
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
        for key in ("exp_avg", "hessian"):
            assert torch.equal(opt_a.state[pa][key], opt_b.state[pb][key]), key
    assert 0 < _floored(opt_a, a) < sum(p.numel() for p in a)  # both sides of the max


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("eps_form", ["add", "max"])
def test_both_eps_forms_match_numpy_reference_step_by_step(eps_form, fused):
    """Every step in float64 against ``reference.sophia_g(..., eps_form=...)``. From the same
    point the other form's step lands elsewhere, so a kernel that ignored the flag would fail."""
    if fused:
        needs_engine()
    other = {"add": "max", "max": "add"}[eps_form]
    params = make(seed=4)
    x = [p.detach().numpy().copy() for p in params]
    states: list[dict] = [{} for _ in params]
    opt = oo.SophiaG(params, **FORMS, eps_form=eps_form, fused=fused)
    hyper = {k: v for k, v in opt.defaults.items() if k in _keys(reference.sophia_g)}
    assert hyper["eps_form"] == eps_form
    apart = 0.0
    for step in range(STEPS):
        for i, (p, g) in enumerate(zip(params, grads_at(params, step, 1), strict=True)):
            p.grad = g + 0.3 * p.detach()
            grad = p.grad.numpy().copy()
            y, _ = reference.sophia_g(x[i], grad, states[i], **{**hyper, "eps_form": other})
            x[i], states[i] = reference.sophia_g(x[i], grad, states[i], **hyper)
            apart = max(apart, float(np.abs(y - x[i]).max()))
        opt.step()
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.detach().numpy(), x[i], rtol=1e-12, atol=1e-14)
            m = opt.state[p]["exp_avg"].numpy()
            np.testing.assert_allclose(m, states[i]["exp_avg"], rtol=1e-12, atol=1e-15)
        if step % K == 0:
            _update_hessian_both(opt, params, x, states, step, hyper["betas"])
    assert apart > 1e-6  # the forms differ at this eps: a kernel ignoring the flag would fail
    assert 0 < _floored(opt, params) < sum(p.numel() for p in params)


def test_bad_eps_form_is_one_clear_error_naming_the_accepted_values():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"Invalid eps_form: 'paper'.*'add', 'max'"):
        oo.SophiaG([p], eps_form="paper")
    opt = oo.SophiaG([p])
    with pytest.raises(ValueError, match="eps_form"):  # a group added later is checked too
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "eps_form": "Max"})
    assert len(opt.param_groups) == 1 and opt.defaults["eps_form"] == "add"
    with pytest.raises(ValueError, match="'add' or 'max'"):
        reference.sophia_g(np.zeros(2), np.ones(2), {}, eps_form="min")
    by_name = optimist.optimizer("sophia", [p], eps_form="max")
    assert isinstance(by_name, oo.SophiaG) and by_name.defaults["eps_form"] == "max"


def test_update_hessian_leaves_params_momentum_and_the_chain_alone():
    needs_engine()
    params = make(torch.float32)
    ema_chain = (T.clip_by_global_norm(0.1), T.ema(0.9), T.scale_by(oo.SophiaG, **BASE))
    opt = optimist.chain(*ema_chain)(params)
    drive(opt, params, steps=4)
    before = [p.detach().clone() for p in params]
    m = [opt.state[p]["exp_avg"].clone() for p in params]
    ema = [opt.state[p]["ema"].clone() for p in params]
    h = [opt.state[p]["hessian"].clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, 10.0)  # far above the clip norm: unclipped g^2 must land
    opt.update_hessian()
    beta2 = BASE.get("betas", (0.965, 0.99))[1]
    for i, p in enumerate(params):
        assert torch.equal(p, before[i])
        assert torch.equal(opt.state[p]["exp_avg"], m[i])
        assert torch.equal(opt.state[p]["ema"], ema[i])
        torch.testing.assert_close(opt.state[p]["hessian"], beta2 * h[i] + (1 - beta2) * 100.0)


@pytest.mark.parametrize("fused", [False, True])
def test_skip_nonfinite_leaves_the_hessian_alone_on_a_nan_gradient(fused):
    if fused:
        needs_engine()
    params = make(torch.float32)
    for skip in (True, False):
        opt = oo.SophiaG(params, **BASE, skip_nonfinite=skip, fused=fused)
        drive(opt, params, steps=4)
        h = [opt.state[p]["hessian"].clone() for p in params]
        for p in params:
            p.grad = torch.ones_like(p)
        params[1].grad[0] = float("nan")
        opt.update_hessian()
        same = all(torch.equal(opt.state[p]["hessian"], h[i]) for i, p in enumerate(params))
        assert same is skip
        assert opt.skipped_steps == 0


def test_sophia_g_state_dict_round_trip_continues_bit_identically():
    needs_engine()
    a = make(torch.float32)
    opt = oo.SophiaG(a, **BASE, state_dtype="int8")
    drive(opt, a, steps=7)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    b = [p.detach().clone().requires_grad_() for p in a]
    other = oo.SophiaG(b, **BASE, state_dtype="int8")
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    drive(opt, a, steps=5)
    drive(other, b, steps=5)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_sophia_g_trains_a_classifier_with_gnb_hessian_estimates():
    """The documented recipe (sampled labels every k steps) beats its first loss by far."""
    torch.manual_seed(0)
    x = torch.randn(512, 20)
    y = (x @ torch.randn(20, 4)).argmax(1)
    model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    opt = oo.SophiaG(model.parameters(), lr=0.02, rho=0.05, bs=512, weight_decay=0.0)
    loss_fn = torch.nn.functional.cross_entropy
    first = None
    for step in range(150):
        loss = loss_fn(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            opt.zero_grad()
            logits = model(x)
            sampled = torch.distributions.Categorical(logits=logits).sample()
            loss_fn(logits, sampled).backward()
            opt.update_hessian()
    assert loss.item() < 0.25 * first


def test_sophia_errors_and_registry():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="rho"):
        oo.SophiaG([p], rho=-1.0)
    with pytest.raises(ValueError, match="bs"):
        oo.SophiaG([p], bs=0)
    with pytest.raises(ValueError, match="beta"):
        oo.SophiaG([p], betas=(1.0, 0.99))
    for name in ("sophia", "SophiaG"):
        opt = optimist.optimizer(name, [p])
        assert isinstance(opt, oo.SophiaG) and opt.defaults["lr"] == 1e-4
        assert opt.defaults["rho"] == 0.04 and opt.defaults["weight_decay"] == 0.1


def test_a_large_batch_size_keeps_the_fused_path(monkeypatch):
    """bs = 2^17 (a token batch) is past float16's range; it must not send steps to eager."""
    needs_engine()
    params = make(torch.float32)
    opt = oo.SophiaG(params, fused=True, bs=2**17, rho=1e-4)

    def eager(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the eager path ran")

    monkeypatch.setattr(engine, "run_eager", eager)  # the per-tensor path
    drive(opt, params, steps=4)
    assert all(torch.isfinite(p).all() for p in params)
