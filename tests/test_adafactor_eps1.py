"""Adafactor's ``eps1_form``: torch's floors ("clamp") or the paper's eps1 added to g^2 ("add").

The float64 comparison with ``reference.adafactor`` for both forms is in
``test_matrix_reference.py``; here: the batched paths equal the per-tensor one bit for bit with
"add", and what the forms do with zero gradient entries at the paper's eps1 = 1e-30.
"""

from __future__ import annotations

import io

import pytest
import torch

import optimist.optim as oo

# stacked shapes (met twice or more), shapes met once, vectors and a 0-dim tensor (flat path)
SHAPES = ((16, 8), (16, 8), (16, 8), (3, 5, 4), (3, 5, 4), (5, 12), (9,), (9,), (4,), ())
PAPER = {"eps": (1e-30, 1e-3), "eps1_form": "add"}


def _params(shapes=SHAPES, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def _grads(params, step):
    """Random gradients with zero entries: a zero row and a zero column in every matrix, the
    first element of every vector (what a dead ReLU unit or an unused embedding row gives)."""
    gen = torch.Generator().manual_seed(100 + step)
    grads = []
    for p in params:
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        if p.dim() >= 2:
            g[..., 0, :] = 0.0
            g[..., :, 1] = 0.0
        elif p.dim() == 1:
            g[0] = 0.0
        grads.append(g)
    return grads


def _run(opt, params, steps):
    for step in range(steps):
        for p, g in zip(params, _grads(params, step), strict=True):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("kwargs", [PAPER, {**PAPER, "lr": 0.3, "weight_decay": 0.1, "d": 2.0}])
@pytest.mark.parametrize("maximize", [False, True])
def test_add_form_batched_paths_equal_per_tensor_bitwise(kwargs, maximize):
    a, b = _params(), _params()
    batched = oo.Adafactor(a, **kwargs, maximize=maximize)
    single = oo.Adafactor(b, **kwargs, maximize=maximize, foreach=False)
    _run(batched, a, 6)
    _run(single, b, 6)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q), p.shape
        for key, value in single.state[q].items():
            assert torch.equal(batched.state[p][key], value), (p.shape, key)


@pytest.mark.parametrize("foreach", [None, False])
def test_zero_gradient_entries_nan_under_torchs_floor_and_still_under_the_papers(foreach):
    """At eps1 = 1e-30 in float32 torch's floor eps1^2 = 1e-60 is 0, so an entry whose gradient
    and estimate are 0 becomes 0/0 (as ``torch.optim.Adafactor``); with eps1 added to g^2 the
    estimate stays positive and those entries do not move."""
    start = _params()
    clamped = [p.detach().clone().requires_grad_() for p in start]
    torch_twin = [p.detach().clone().requires_grad_() for p in start]
    added = [p.detach().clone().requires_grad_() for p in start]
    _run(oo.Adafactor(clamped, eps=(1e-30, 1e-3), foreach=foreach), clamped, 3)
    _run(torch.optim.Adafactor(torch_twin, eps=(1e-30, 1e-3), foreach=False), torch_twin, 3)
    _run(oo.Adafactor(added, **PAPER, foreach=foreach), added, 3)
    for theirs, ours in zip(torch_twin, clamped, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0, equal_nan=True)
        assert ours.isnan().any() if ours.dim() else ours.isfinite()  # a 0-dim has no zero
    for p, p0 in zip(added, start, strict=True):
        assert p.isfinite().all()
        if p.dim() >= 2:  # a zero row and a zero column: no gradient, no move (the entry in
            # both too, whose estimate eps1^2 / mean(R) is 0 in float32: Keras gives NaN there)
            assert torch.equal(p[..., 0, :], p0[..., 0, :])
            assert torch.equal(p[..., :, 1], p0[..., :, 1])
        elif p.dim() == 1:
            assert p[0] == p0[0]
        assert not torch.equal(p, p0)


def test_eps1_form_is_checked_and_kept_in_the_checkpoint():
    with pytest.raises(ValueError, match="eps1_form"):
        oo.Adafactor(_params(), eps1_form="max")
    with pytest.raises(ValueError, match="eps1_form"):
        oo.Adafactor([{"params": _params(), "eps1_form": "paper"}])
    a = _params()
    opt = oo.Adafactor(a, **PAPER)
    _run(opt, a, 2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    b = [p.detach().clone().requires_grad_() for p in a]
    again = oo.Adafactor(b)  # the default form: the checkpoint's group brings "add"
    again.load_state_dict(torch.load(buffer, weights_only=True))
    assert again.param_groups[0]["eps1_form"] == "add"
    _run(opt, a, 2)
    _run(again, b, 2)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p, q)
