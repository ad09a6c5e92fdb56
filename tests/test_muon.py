"""Muon and Adafactor against torch.optim's (bit for bit), and Muon's AdamW fallback."""

from __future__ import annotations

import io

import pytest
import torch

import optimist
import optimist.optim as oo


def matrices(seed=0, shapes=((16, 8), (5, 12), (7, 7))):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).requires_grad_() for s in shapes]


def grads_for(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen) for p in params]


def step_both(first, a, second, b, steps):  # noqa: ANN001
    """``steps`` steps of two optimizers over twin parameters ``a``/``b``, same gradients."""
    for step in range(steps):
        for p, q, g in zip(a, b, grads_for(a, step), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        first.step()
        second.step()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"lr": 0.02, "nesterov": False, "weight_decay": 0.0},
        {"momentum": 0.9, "adjust_lr_fn": "match_rms_adamw", "ns_steps": 3},
    ],
)
def test_equals_torch_muon_bitwise(kwargs):
    a, b = matrices(), matrices()
    ours, theirs = oo.Muon(a, **kwargs), torch.optim.Muon(b, **kwargs)
    step_both(ours, a, theirs, b, 8)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])


def test_non_matrix_parameters_use_adamw_and_checkpoints_round_trip():
    # seeded: the engine's AdamW and torch's round differently, and for 1 initialisation in ~40
    # (a bias whose gradient is near 0, where Adam's step is ~sign(g)) that exceeds the 1e-6 below
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.LayerNorm(4))
    twin.load_state_dict(model.state_dict())
    opt = oo.Muon(model.parameters(), lr=0.02, adamw_lr=0.01, adamw_weight_decay=0.05)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    muon = torch.optim.Muon([twin[0].weight], lr=0.02)
    adamw = torch.optim.AdamW(
        [twin[0].bias, *twin[1].parameters()], lr=0.01, betas=(0.9, 0.95), weight_decay=0.05
    )
    x = torch.randn(10, 6)
    for _ in range(5):
        for m, opts in ((model, [opt]), (twin, [muon, adamw])):
            m.zero_grad()
            m(x).square().mean().backward()
            for o in opts:
                o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    again = oo.Muon(model.parameters(), lr=0.02, adamw_lr=0.01, adamw_weight_decay=0.05)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(again.state[model[0].weight]["momentum_buffer"],
                       opt.state[model[0].weight]["momentum_buffer"])  # fmt: skip


def test_conv_weights_and_explicit_groups_and_errors():
    conv = torch.randn(4, 3, 3, 3, requires_grad=True)
    emb = torch.randn(10, 4, requires_grad=True)
    opt = optimist.optimizer("muon", [{"params": [conv]}, {"params": [emb], "use_muon": False}])
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    conv.grad, emb.grad = torch.randn_like(conv), torch.randn_like(emb)
    before = conv.detach().clone()
    opt.step()
    assert not torch.equal(conv, before) and "exp_avg" in opt.state[emb]
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        oo.Muon([conv], adjust_lr_fn="other")
    with pytest.raises(ValueError, match="ns_steps"):
        oo.Muon([conv], ns_steps=100)


# --- Adafactor ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"lr": 0.05, "weight_decay": 0.1, "d": 2.0}, {"eps": (1e-20, 1e-2), "maximize": True}],
)
def test_adafactor_equals_torch_bitwise(kwargs):
    shapes = ((16, 8), (9,), (3, 5, 4), ())
    a, b = matrices(1, shapes), matrices(1, shapes)
    ours = oo.Adafactor(a, **kwargs)
    theirs = torch.optim.Adafactor(b, **kwargs, foreach=False)
    step_both(ours, a, theirs, b, 8)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
        for key, value in theirs.state[q].items():
            assert torch.equal(ours.state[p][key], value), key
    again = oo.Adafactor(a, **kwargs)  # torch's checkpoint loads into ours
    again.load_state_dict(theirs.state_dict())
    assert set(again.state[a[0]]) == {"step", "row_var", "col_var"}


def test_adafactor_errors():
    with pytest.raises(ValueError, match="beta2_decay"):
        oo.Adafactor([torch.zeros(2, requires_grad=True)], beta2_decay=0.5)
    with pytest.raises(ValueError, match="eps"):
        oo.Adafactor([torch.zeros(2, requires_grad=True)], eps=1e-3)
    with pytest.raises(ValueError, match="d"):
        oo.Adafactor([torch.zeros(2, requires_grad=True)], d=0.5)


# --- batching over same-shape weights, state_dtype ------------------------------------------------


def test_same_shape_weights_are_batched_and_still_equal_torch_bitwise(monkeypatch):
    shapes = ((16, 8), (16, 8), (16, 8), (8, 16), (8, 16), (5, 12))
    a, b = matrices(2, shapes), matrices(2, shapes)
    ours, theirs = oo.Muon(a), torch.optim.Muon(b)
    seen = []
    original = oo.muon.newton_schulz
    monkeypatch.setattr(
        oo.muon, "newton_schulz", lambda g, *r: seen.append(g.shape) or original(g, *r)
    )
    step_both(ours, a, theirs, b, 5)
    assert seen[:3] == [(3, 16, 8), (2, 8, 16), (5, 12)]  # one call per shape
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_cpu_batches_are_capped_and_still_equal_torch_bitwise(monkeypatch):
    # a cap of 300 elements: the three 16 x 8 matrices go as (2, 16, 8) and (16, 8)
    monkeypatch.setattr(oo.muon, "CPU_NS_BATCH_MAX", 300)
    shapes = ((16, 8), (16, 8), (16, 8), (5, 12))
    a, b = matrices(4, shapes), matrices(4, shapes)
    ours, theirs = oo.Muon(a), torch.optim.Muon(b)
    seen = []
    original = oo.muon.newton_schulz
    monkeypatch.setattr(
        oo.muon, "newton_schulz", lambda g, *r: seen.append(g.shape) or original(g, *r)
    )
    step_both(ours, a, theirs, b, 3)
    assert seen[:3] == [(2, 16, 8), (16, 8), (5, 12)]
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
    # matrices above CPU_NS_BATCH_MATRIX_MAX elements go one by one
    monkeypatch.setattr(oo.muon, "CPU_NS_BATCH_MATRIX_MAX", 100)
    seen.clear()
    step_both(ours, a, theirs, b, 1)
    assert seen == [(16, 8), (16, 8), (16, 8), (5, 12)]
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)


def test_batched_newton_schulz_equals_per_matrix_bitwise():
    gen = torch.Generator().manual_seed(3)
    for shape in ((6, 40, 24), (3, 24, 40), (2, 64, 64)):
        g = torch.randn(shape, generator=gen)
        coefficients = (3.4445, -4.775, 2.0315)
        batched = oo.muon.newton_schulz(g, coefficients, 5, 1e-7)
        single = torch.stack([oo.muon.newton_schulz(x, coefficients, 5, 1e-7) for x in g])
        assert batched.dtype == torch.bfloat16 and torch.equal(batched, single)


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_momentum_buffer_honours_state_dtype(state_dtype):
    shapes = ((96, 64), (96, 64), (40, 30))
    a, b = matrices(4, shapes), matrices(4, shapes)
    starts = [p.detach().clone() for p in a]
    full, low = oo.Muon(a, lr=0.02), oo.Muon(b, lr=0.02, state_dtype=state_dtype)
    step_both(full, a, low, b, 6)
    big = {"bfloat16": torch.bfloat16, "int8": torch.int8}[state_dtype]
    assert low.state[b[0]]["momentum_buffer"].dtype == big
    small = torch.bfloat16 if state_dtype == "bfloat16" else torch.float32  # int8: >= 4096 values
    assert low.state[b[2]]["momentum_buffer"].dtype == small
    for p, q, start in zip(a, b, starts, strict=True):
        # within 5% of the float32 run's total movement (Newton-Schulz itself is bfloat16)
        assert (p - q).abs().max() < 0.05 * (p - start).abs().max()
    big_params = b[:2]  # (40, 30) is under 4096 values: int8 keeps it float32
    state_bytes = sum(
        t.numel() * t.element_size() for p in big_params for t in low.state[p].values()
    )
    full_bytes = sum(4 * p.numel() for p in big_params)
    assert state_bytes < {"bfloat16": 0.51, "int8": 0.27}[state_dtype] * full_bytes


def test_int8_momentum_checkpoint_round_trip_and_torch_checkpoint_conversion():
    a = matrices(5, ((96, 64),))
    opt = oo.Muon(a, state_dtype="int8")
    grads = [grads_for(a, step)[0] for step in range(6)]
    for g in grads[:3]:
        a[0].grad = g.clone()
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    b = [a[0].detach().clone().requires_grad_()]
    again = oo.Muon(b, state_dtype="int8")
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert again.state[b[0]]["momentum_buffer"].dtype == torch.int8
    for g in grads[3:]:
        a[0].grad, b[0].grad = g.clone(), g.clone()
        opt.step()
        again.step()
    assert torch.equal(a[0], b[0])
    # ... and float_state_dict turns it into a checkpoint torch.optim.Muon loads (decoded)
    from optimist.optim.engine import float_state_dict

    theirs_too = torch.optim.Muon([a[0].detach().clone().requires_grad_()])
    theirs_too.load_state_dict(float_state_dict(opt.state_dict()))
    (q,) = theirs_too.param_groups[0]["params"]
    state = opt.state[a[0]]
    decoded = oo.codecs.int8_decode(state["momentum_buffer"], state["momentum_buffer_absmax"])
    assert torch.equal(theirs_too.state[q]["momentum_buffer"], decoded)
    # a torch.optim.Muon checkpoint (float momentum) loads and is stored as int8 from then on
    c = [a[0].detach().clone().requires_grad_()]
    theirs = torch.optim.Muon(c)
    c[0].grad = grads[0].clone()
    theirs.step()
    ours = oo.Muon([a[0].detach().clone().requires_grad_()], state_dtype="int8")
    ours.load_state_dict(theirs.state_dict())
    (p,) = ours.param_groups[0]["params"]
    p.grad = grads[1].clone()
    ours.step()
    assert ours.state[p]["momentum_buffer"].dtype == torch.int8
    assert "momentum_buffer_absmax" in ours.state[p]


def test_ns_dtype_argument():
    p = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    p.grad = torch.randn_like(p)
    oo.Muon([p], ns_dtype=None).step()
    assert p.dtype == torch.float64
    with pytest.raises(ValueError, match="ns_dtype"):
        oo.Muon([p], ns_dtype="int8")
