"""SOAP against the NumPy reference (float64, step by step) and pytorch_optimizer.SOAP."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import peer
from optimist import reference

# Shapes where every preconditioned dimension is at most the product of the others, so each
# factor L_i is full rank after the first gradient and its eigenbasis is unique up to signs
# (which cancel): a rank-deficient factor has a free basis of its null space, and two correct
# implementations may pick different ones.
SHAPES = [(5, 5), (5, 5), (3, 4, 5), (6,), ()]


def problem(shapes, steps, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]
    return params, grads


def run_ours(params, grads, **kwargs):
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    opt = oo.SOAP(ps, **kwargs)
    history = []
    for step in grads:
        for p, g in zip(ps, step, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
        history.append([p.detach().numpy().copy() for p in ps])
    return history, opt, ps


def run_reference(params, grads, **kwargs):
    states = [{} for _ in params]
    params = list(params)
    history = []
    for step in grads:
        for i, g in enumerate(step):
            params[i], states[i] = reference.soap(params[i], g, states[i], **kwargs)
        history.append(list(params))
    return history, states


def rel_error(a, b) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        (SHAPES, {"precondition_frequency": 3}),
        (SHAPES, {"precondition_frequency": 4, "weight_decay": 0.1, "maximize": True}),
        (SHAPES, {"betas": (0.9, 0.99), "shampoo_beta": 0.8, "correct_bias": False}),
        (SHAPES, {"normalize_grads": True, "eps": 1e-3, "lr": 0.01}),
        ([(2, 3, 4, 4)], {"merge_dims": True, "max_precond_dim": 8, "precondition_frequency": 2}),
        ([(5, 12), (12, 5)], {"max_precond_dim": 6, "precondition_frequency": 2}),
    ],
)
def test_matches_numpy_reference_float64(shapes, kwargs):
    params, grads = problem(shapes, steps=14)
    ours, opt, ps = run_ours(params, grads, **kwargs)
    ref, states = run_reference(params, grads, **kwargs)
    for t, (mine, theirs) in enumerate(zip(ours, ref, strict=True)):
        for a, b in zip(mine, theirs, strict=True):
            assert rel_error(a, b) < 1e-10, (t, a.shape)
    for p, state in zip(ps, states, strict=True):
        mine = opt.state[p]
        assert int(mine["step"].item()) == state["step"]
        assert rel_error(mine["exp_avg_sq"].numpy(), state["exp_avg_sq"]) < 1e-10
        # the class keeps M in the eigenbasis (as the authors' code), the reference in the
        # parameter's space (as the paper): project it back to compare
        shape, _ = opt._layout(p, opt.param_groups[0])
        m = mine["exp_avg"].numpy().reshape(shape)
        for i, q in enumerate(mine.get("Q", [])):
            if q is not None:
                m = np.moveaxis(np.tensordot(m, q.numpy(), axes=([i], [1])), -1, i)
        assert rel_error(m.reshape(p.shape), state["exp_avg"]) < 1e-10
        for mine_f, ref_f in zip(mine["GG"], state.get("GG", [None]), strict=True):
            assert (mine_f is None) == (ref_f is None)
            if ref_f is not None:
                assert rel_error(mine_f.numpy(), ref_f) < 1e-10


def test_first_gradient_builds_the_preconditioner_only():
    params, grads = problem([(4, 4), (3,)], steps=1)
    history, opt, ps = run_ours(params, grads, weight_decay=0.5)
    for before, after in zip(params, history[0], strict=True):
        np.testing.assert_array_equal(before, after)
    state = opt.state[ps[0]]
    assert state["step"].item() == 0 and [q.shape for q in state["Q"]] == [(4, 4), (4, 4)]
    assert opt.state[ps[1]]["GG"] == [None]  # vectors: Adam unless precondition_1d


def test_matches_pytorch_optimizer_soap():
    pytorch_optimizer = peer("pytorch_optimizer")

    params, grads = problem(SHAPES[:4], steps=20, seed=3)
    ours, _, _ = run_ours(params, grads)
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    theirs = pytorch_optimizer.SOAP(ps)  # the same variant and defaults (frequency 10)
    for t, step in enumerate(grads):
        for p, g in zip(ps, step, strict=True):
            p.grad = torch.tensor(g)
        theirs.step()
        # pytorch_optimizer computes the QR refresh in float32 (its comment: torch's QR lacks
        # bfloat16), so from the first refresh (Adam step 10 = call 11) the bases differ by
        # float32 rounding; before it the two agree to float64 rounding.
        tolerance = 1e-12 if t <= 10 else 1e-7
        for a, p in zip(ours[t], ps, strict=True):
            assert rel_error(a, p.detach().numpy()) < tolerance, t


def test_same_shape_weights_batched_equal_one_at_a_time():
    params, grads = problem([(6, 4)] * 3, steps=8)
    together, _, _ = run_ours(params, grads, precondition_frequency=2)
    for i in range(3):
        alone, _, _ = run_ours([params[i]], [[g[i]] for g in grads], precondition_frequency=2)
        for t in range(8):
            assert rel_error(together[t][i], alone[t][0]) < 1e-13


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_state_dtype_stores_the_adam_moments_and_stays_close(state_dtype):
    gen = torch.Generator().manual_seed(0)
    a = [torch.randn(96, 64, generator=gen).requires_grad_() for _ in range(2)]
    b = [p.detach().clone().requires_grad_() for p in a]
    starts = [p.detach().clone() for p in a]
    full = oo.SOAP(a, precondition_frequency=2)
    low = oo.SOAP(b, precondition_frequency=2, state_dtype=state_dtype)
    for _ in range(6):
        for p, q in zip(a, b, strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        full.step()
        low.step()
    state = low.state[b[0]]
    stored = {"bfloat16": torch.bfloat16, "int8": torch.int8}[state_dtype]
    assert state["exp_avg"].dtype == stored and state["exp_avg_sq"].dtype == stored
    assert state["GG"][0].dtype == torch.float32 and state["Q"][1].dtype == torch.float32
    for p, q, start in zip(a, b, starts, strict=True):
        # the low-precision run ends within 10% of the float32 run's total movement
        assert (p - q).abs().max() < 0.1 * (p - start).abs().max(), state_dtype


def test_low_precision_params_keep_float32_preconditioners():
    p = torch.randn(8, 6).bfloat16().requires_grad_()
    opt = oo.SOAP([p])
    for _ in range(3):
        p.grad = torch.randn(8, 6).bfloat16()
        opt.step()
    state = opt.state[p]
    assert all(x.dtype == torch.float32 for x in state["GG"] + state["Q"])
    assert state["exp_avg"].dtype == torch.bfloat16 and torch.isfinite(p).all()


@pytest.mark.parametrize("state_dtype", [None, "int8"])
def test_state_dict_round_trip_continues_identically(state_dtype):
    # same-shape weights: their batched state lives in views of one tensor between steps
    gen = torch.Generator().manual_seed(1)
    ps = [torch.randn(80, 64, generator=gen).requires_grad_() for _ in range(3)]
    kwargs = {"state_dtype": state_dtype, "precondition_frequency": 2}
    opt = oo.SOAP(ps, **kwargs)
    grads = [[torch.randn(80, 64, generator=gen) for _ in ps] for _ in range(6)]
    for step in grads[:3]:
        for p, g in zip(ps, step, strict=True):
            p.grad = g
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    qs = [p.detach().clone().requires_grad_() for p in ps]
    again = oo.SOAP(qs, **kwargs)
    again.load_state_dict(torch.load(buffer, weights_only=True))
    twin = copy.deepcopy(opt)
    rs = twin.param_groups[0]["params"]
    stored = torch.int8 if state_dtype else torch.float32
    assert again.state[qs[0]]["exp_avg"].dtype == stored
    assert again.state[qs[0]]["exp_avg"].data_ptr() != opt.state[ps[0]]["exp_avg"].data_ptr()
    for step in grads[3:]:
        for p, q, r, g in zip(ps, qs, rs, step, strict=True):
            p.grad, q.grad, r.grad = g, g.clone(), g.clone()
        opt.step()
        again.step()
        twin.step()
    for p, q, r in zip(ps, qs, rs, strict=True):
        assert torch.equal(p, q) and torch.equal(p, r)


def test_descends_a_quadratic_and_is_registered():
    gen = torch.Generator().manual_seed(2)
    target = torch.randn(10, 8, generator=gen)
    w = torch.zeros(10, 8, requires_grad=True)
    opt = optimist.optimizer("soap", [w], lr=0.05, weight_decay=0.0)
    assert isinstance(opt, oo.SOAP)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((w - target) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "index 1"),
        ({"shampoo_beta": 1.5}, "shampoo_beta"),
        ({"precondition_frequency": 0}, "precondition_frequency"),
        ({"max_precond_dim": 2.5}, "max_precond_dim"),
        ({"merge_dims": 1}, "merge_dims"),
        ({"state_dtype": "int4"}, "state_dtype"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        oo.SOAP([torch.zeros(2, 2, requires_grad=True)], **kwargs)


def test_complex_parameters_rejected():
    p = torch.zeros(2, 2, dtype=torch.complex64, requires_grad=True)
    p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="complex"):
        oo.SOAP([p]).step()


def test_precondition_1d_matches_reference_from_the_same_first_basis():
    # A vector's first factor g g^T has rank 1: its eigenbasis is free on the null space, and
    # LAPACK through torch and NumPy picks different ones. Given the class's first basis, the
    # reference reproduces every later step.
    params, grads = problem([(4,)], steps=10)
    ours, opt, (p,) = run_ours(params, grads[:1], precondition_1d=True, precondition_frequency=3)
    mine = opt.state[p]
    state = {"step": 0, "exp_avg": np.zeros(4), "exp_avg_sq": np.zeros(4)}
    state.update(GG=[mine["GG"][0].numpy().copy()], Q=[mine["Q"][0].numpy().copy()])
    x = ours[0][0]
    for (g,) in grads[1:]:
        p.grad = torch.tensor(g)
        opt.step()
        x, state = reference.soap(x, g, state, precondition_1d=True, precondition_frequency=3)
        assert rel_error(p.detach().numpy(), x) < 1e-10
    assert opt.state[p]["GG"][0].shape == (4, 4)


def test_dtensor_parameters_step_as_plain_ones(tmp_path):
    # SOAP on DTensor (FSDP2) parameters gathers the gradient and keeps its state whole: on one
    # rank the same steps as a plain tensor (2 ranks: tests/test_distributed_registry.py);
    # Muon's encoded momentum on DTensors is refused (its state_dtype=None works)
    dist = torch.distributed
    from torch.distributed.tensor import DeviceMesh, Replicate, Shard, distribute_tensor

    if not dist.is_initialized():
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
        )
    try:
        mesh = DeviceMesh("cpu", [0])
        gen = torch.Generator().manual_seed(0)
        start, grads = torch.randn(80, 64, generator=gen), torch.randn(3, 80, 64, generator=gen)
        for state_dtype in (None, "int8"):  # int8: the whole moments' blocks, as one process
            w = torch.nn.Parameter(distribute_tensor(start.clone(), mesh, [Shard(0)]))
            plain = torch.nn.Parameter(start.clone())
            settings = dict(precondition_frequency=2, state_dtype=state_dtype)
            sharded, whole = oo.SOAP([w], **settings), oo.SOAP([plain], **settings)
            for g in grads:
                w.grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
                plain.grad = g.clone()
                sharded.step()
                whole.step()
            torch.testing.assert_close(w.full_tensor(), plain, rtol=0, atol=0)
            assert not isinstance(sharded.state[w]["exp_avg"], type(w))  # whole, plain state
        w = torch.nn.Parameter(distribute_tensor(torch.randn(80, 64), mesh, [Replicate()]))
        w.grad = distribute_tensor(torch.randn(80, 64), mesh, [Replicate()])
        with pytest.raises(RuntimeError, match="state_dtype='int8' is not supported for DTensor"):
            oo.Muon([w], state_dtype="int8").step()
        oo.Muon([w], state_dtype="float32").step()  # the parameter's own dtype: fine
    finally:
        dist.destroy_process_group()
