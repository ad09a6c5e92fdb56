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
    for step in range(8):
        for p, q, g in zip(a, b, grads_for(a, step), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
        assert torch.equal(ours.state[p]["momentum_buffer"], theirs.state[q]["momentum_buffer"])


def test_non_matrix_parameters_use_adamw_and_checkpoints_round_trip():
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
    for step in range(8):
        for p, q, g in zip(a, b, grads_for(a, step), strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
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
