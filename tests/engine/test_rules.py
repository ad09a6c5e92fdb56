"""Every element-wise rule (rows from the registry, table.py): fused == eager for every state
dtype and parameter dtype, the NumPy reference in float64, low-precision parameters."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from .table import ELEMENTWISE, STATE_DTYPES, ids, make_params, needs_engine, run_row, set_grads


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_eager(row, state_dtype, dtype):
    needs_engine()
    a, b = make_params(dtype), make_params(dtype)
    fused = run_row(row, a, state_dtype=state_dtype, fused=True)
    eager = run_row(row, b, state_dtype=state_dtype, foreach=False)
    exact = state_dtype is None and dtype == torch.float64
    for pa, pb in zip(a, b, strict=True):
        if exact:
            torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)
        else:  # float32 sqrt/division may differ by an ulp; a quantized state can flip a code
            torch.testing.assert_close(pa, pb, rtol=2e-3, atol=2e-3)
    for pa, pb in zip(a, b, strict=True):  # the state is stored in the same formats
        for key, value in fused.state[pa].items():
            assert value.dtype == eager.state[pb][key].dtype, key


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
def test_every_rule_matches_numpy_reference(row):
    """Each rule's fused path against its optimist.reference function in float64."""
    needs_engine()
    rule = row.entry.reference
    assert rule is not None, f"{row.id}: no NumPy reference"
    params = make_params(torch.float64, shapes=[(5, 3)])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch-style scalar state (step, mu_product) in f64
    try:
        opt = row.build(params, fused=True)
        keys = set(inspect.signature(rule).parameters) - {"param", "grad", "state"}
        hyper = {k: v for k, v in opt.defaults.items() if k in keys}
        ref_param = params[0].detach().numpy().copy()
        ref_state: dict = {}
        for step in range(15):
            set_grads([params], step)
            grad = params[0].grad.numpy().copy()
            opt.step()
            ref_param, ref_state = rule(ref_param, grad, ref_state, **hyper)
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_allclose(params[0].detach().numpy(), ref_param, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_params_close_to_float32(row, low):
    """bf16/fp16 parameters: the engine computes in float32 and rounds once on store."""
    needs_engine()
    a = make_params(torch.float32)
    b = [p.detach().to(low).requires_grad_() for p in a]
    run_a, run_b = row.build(a), row.build(b)
    for step in range(5):
        set_grads([a], step)
        for pa, pb in zip(a, b, strict=True):
            pb.grad = pa.grad.to(low)
        run_a.step()
        run_b.step()
    tol = 3e-2 if low == torch.bfloat16 else 5e-3
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pb.float(), pa.detach(), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["AdamW", "NAdam", "RAdam"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decoupled_decay_fused_into_the_rule_is_bitwise_a_decay_first(name, dtype):
    """Rules that take decoupled weight decay into their loop (rules.h's kFusesPrologue) give
    exactly ``p *= 1 - lr * wd`` followed by the same rule without decay: 8 steps, so RAdam
    runs both its unrectified and its rectified steps."""
    needs_engine()
    import optimist.optim as oo

    lr, wd = 0.01, 0.1
    decoupled = {} if name == "AdamW" else {"decoupled_weight_decay": True}
    a, b = make_params(dtype), make_params(dtype)
    fused = getattr(oo, name)(a, lr=lr, weight_decay=wd, fused=True, **decoupled)
    plain = getattr(oo, name)(b, lr=lr, weight_decay=0.0, fused=True, **decoupled)
    for step in range(8):
        set_grads([a, b], step)
        fused.step()
        with torch.no_grad():
            for p in b:
                p.mul_(1 - lr * wd)
        plain.step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb), (pa - pb).abs().max()
        for key, value in fused.state[pa].items():
            assert torch.equal(value, plain.state[pb][key]), key
