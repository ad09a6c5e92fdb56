"""LAMB and LARS on the C++ engine's per-tensor norm pass against their torch-ops path.

The two paths compute the same element-wise updates with the same roundings; the trust ratios'
norms differ only in summation order (float64 sums on the engine; torch's norm eagerly), so
float64 agrees to a few ulps and float32 to the float32 norm's rounding.
"""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo
from optimist.optim import codecs, engine, trust_ratio

pytestmark = pytest.mark.skipif(not engine.available(), reason="the C++ engine is unavailable")

SHAPES = [(37, 29), (5000,), (3,), (70_000,), ()]
CASES = [
    (oo.LAMB, {"lr": 0.01, "weight_decay": 0.1}),
    (oo.LAMB, {"lr": 0.01, "betas": (0.5, 0.9), "maximize": True}),  # lerp's other branch
    (oo.LARS, {"lr": 1.0, "weight_decay": 0.01, "nesterov": True}),
    (oo.LARS, {"lr": 0.5, "momentum": 0.5, "eps": 1e-3, "maximize": True}),
    (oo.LARS, {"lr": 0.5, "weight_decay": 0.01, "lr_inside_momentum": False}),
    (oo.LARS, {"lr": 1.0, "weight_decay": 0.1, "trust_ratio_form": "paper", "nesterov": True}),
]


def _params(dtype, shapes=SHAPES):
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]


def _run(cls, kwargs, params, steps=4, zero_grad_of=None):
    opt = cls(params, **kwargs)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1
            if i == zero_grad_of:
                p.grad.zero_()
        opt.step()
    return opt


def _eager(monkeypatch, cls, kwargs, params, **extra):
    monkeypatch.setenv("OPTIMIST_DISABLE_FUSED", "1")
    try:
        return _run(cls, kwargs, params, **extra)
    finally:
        monkeypatch.delenv("OPTIMIST_DISABLE_FUSED")


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_engine_equals_torch_ops(monkeypatch, cls, kwargs, dtype):
    a, b = _params(dtype), _params(dtype)
    fused = _run(cls, kwargs, a, zero_grad_of=2)  # a zero update: the ratio is 1
    eager = _eager(monkeypatch, cls, kwargs, b, zero_grad_of=2)
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=tol, atol=tol)
        for key, value in fused.state[pa].items():
            torch.testing.assert_close(value, eager.state[pb][key], rtol=tol, atol=tol)


def test_the_engine_takes_float_cpu_tensors_and_torch_ops_the_rest(monkeypatch):
    """A group mixing contiguous float32, bfloat16 and non-contiguous parameters: the engine
    steps only the first kind (so the eager step is never called for them)."""
    plain = torch.nn.Parameter(torch.randn(6, 5))
    low = torch.nn.Parameter(torch.randn(7).bfloat16())
    strided = torch.nn.Parameter(torch.randn(5, 6).t())
    opt = oo.LAMB([plain, low, strided], lr=0.01)
    for p in (plain, low, strided):
        p.grad = torch.ones_like(p)
    stepped = []
    original = oo.LAMB._eager_step
    monkeypatch.setattr(
        oo.LAMB,
        "_eager_step",
        lambda self, g, p, i=0: (stepped.append(p), original(self, g, p, i)),
    )
    before = [p.detach().clone() for p in (plain, low, strided)]
    opt.step()
    assert [id(p) for p in stepped] == [id(low), id(strided)]
    assert all(not torch.equal(p, q) for p, q in zip((plain, low, strided), before, strict=True))


def test_lamb_parameters_at_different_steps(monkeypatch):
    """A parameter that joins later has its own bias correction on both paths."""

    def run(params):
        opt = oo.LAMB(params[:1], lr=0.01)
        gen = torch.Generator().manual_seed(3)
        for step in range(4):
            if step == 2:
                opt.add_param_group({"params": params[1:]})
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            opt.step()
        return opt

    a, b = _params(torch.float64, [(40,), (50,)]), _params(torch.float64, [(40,), (50,)])
    run(a)
    monkeypatch.setenv("OPTIMIST_DISABLE_FUSED", "1")
    run(b)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-14, atol=1e-14)

    def preset(params):  # steps 3 and 1 in one engine call
        opt = oo.LAMB(params, lr=0.01)
        state = opt.state[params[0]]
        state["step"] = torch.tensor(2.0)
        state["exp_avg"] = torch.full((40,), 0.1, dtype=torch.float64)
        state["exp_avg_sq"] = torch.full((40,), 0.01, dtype=torch.float64)
        for p in params:
            p.grad = torch.linspace(-1, 1, p.numel(), dtype=p.dtype)
        opt.step()
        assert [float(opt.state[p]["step"]) for p in params] == [3.0, 1.0]

    c, d = _params(torch.float64, [(40,), (50,)]), _params(torch.float64, [(40,), (50,)])
    preset(d)
    monkeypatch.delenv("OPTIMIST_DISABLE_FUSED")
    preset(c)
    for pc, pd in zip(c, d, strict=True):
        torch.testing.assert_close(pc, pd, rtol=1e-14, atol=1e-14)


# a tensor larger than one group (updated backwards in pieces), one of several pieces, and
# small ones read together; with 2 threads the first is shared (over half a thread's share of
# the step) and the second goes whole to one thread, with 3 threads both are shared
GROUPING_SHAPES = [(70_000,), (33_000,), (300, 7), (20_000,), (3,), (9_000,), ()]


def _trajectory(cls, kwargs, dtype, threads=1, reduction=None):
    """Parameters and state after 3 steps (with ``reduction`` forced on every engine call)."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        if reduction is not None:
            patch.setattr(trust_ratio.TrustRatioOptimizer, "_reduction", lambda s, b: reduction)
        torch.set_num_threads(threads)
        try:
            params = _params(dtype, GROUPING_SHAPES)
            opt = _run(cls, kwargs, params, steps=3, zero_grad_of=4)
        finally:
            torch.set_num_threads(before)
    return [p.detach() for p in params], [dict(opt.state[p]) for p in params]


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tensor_by_tensor_equals_the_phase_split_and_two_threads(cls, kwargs, dtype):
    """Updating each tensor (or group of small ones) right after its norm pass gives exactly
    the numbers of the phase-split path that sharded tensors take (every norm pass, the
    rank-wide reduction, then every update; here forced, with an identity reduction that must
    be called once per step), and of two and three threads (which share the largest tensors'
    blocks unevenly and hand the others out whole): each tensor's sums are added block by block
    and chunk by chunk in one order whatever the path, the threads and each thread's share."""
    calls = []

    def identity(sums):
        calls.append(sums.shape)
        return sums.clone()

    reference = _trajectory(cls, kwargs, dtype)
    split = _trajectory(cls, kwargs, dtype, reduction=identity)
    assert calls == [(len(GROUPING_SHAPES), 2)] * 3
    threaded = [_trajectory(cls, kwargs, dtype, threads=t) for t in (2, 3)]
    for other in (split, *threaded):
        for a, b in zip(reference[0], other[0], strict=True):
            assert torch.equal(a, b)
        for a, b in zip(reference[1], other[1], strict=True):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_reduction_must_return_the_sums():
    mod = engine.load()
    p, g, buf = torch.ones(4), torch.ones(4), torch.zeros(4)
    plan = mod.plan([[p], [g], [buf], []], [], [], [], False, False, True)
    with pytest.raises(RuntimeError, match="reduce must return"):
        mod.trust_step(plan, "lars", [False], [0.0, 0.9], False, True, 1.0, 1e-3, 0.0, 0,
                       lambda sums: sums[:, :1])  # fmt: skip
    assert torch.equal(p, torch.ones(4))  # nothing was updated


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")
@pytest.mark.parametrize(("cls", "kwargs"), CASES[::2], ids=lambda c: getattr(c, "__name__", ""))
def test_dtensor_parameters_take_the_engine_with_rank_wide_norms(
    tmp_path, monkeypatch, cls, kwargs
):
    """Sharded (FSDP2-style) parameters on a one-process mesh: the engine steps their local
    shards and reduces each tensor's row of sums over the mesh (``tensor_sums``), equal to the
    plain run."""
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor

    dist = torch.distributed
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
        )
    try:
        mesh = DeviceMesh("cpu", [0])
        plain = _params(torch.float64, [(40, 3), (50,)])
        sharded = [
            torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, [Shard(0)]))
            for p in plain
        ]
        reduced = []
        original = trust_ratio.tensor_sums
        monkeypatch.setattr(
            trust_ratio,
            "tensor_sums",
            lambda s, refs: (reduced.append(len(refs)), original(s, refs))[1],
        )
        opt_a, opt_b = cls(plain, **kwargs), cls(sharded, **kwargs)
        gen = torch.Generator().manual_seed(2)
        for _ in range(3):
            for a, b in zip(plain, sharded, strict=True):
                a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
                b.grad = distribute_tensor(a.grad.clone(), mesh, [Shard(0)])
            opt_a.step()
            opt_b.step()
        assert reduced == [2, 2, 2]  # both tensors' rows in one call per step
        for a, b in zip(plain, sharded, strict=True):
            torch.testing.assert_close(b.full_tensor(), a.detach(), rtol=1e-14, atol=1e-14)
        with pytest.raises(ValueError, match="not supported for DTensor"):
            cls(sharded, **kwargs, state_dtype="int8")  # not for DTensors: said plainly
    finally:
        if owned:
            dist.destroy_process_group()


# --- state_dtype: the moments / momentum buffer through the engine's codecs -----------------

CODED_SHAPES = [(70, 100), (5000,), (30,)]  # int8 for the first two, float32 for the last


@pytest.mark.parametrize(("cls", "kwargs"), CASES, ids=lambda c: getattr(c, "__name__", ""))
@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_state_dtype_engine_equals_torch_ops(monkeypatch, cls, kwargs, state_dtype, dtype):
    """The engine's norm pass with coded state (decoded per block, stored back with the same
    seeds) against the torch-ops path (read_slot / write_slot): the state bit for bit, the
    parameters to the trust norms' summation order; stored as asked, and close to the run with
    state in the parameter's dtype."""
    kwargs = {**kwargs, "state_dtype": state_dtype}
    a, b = _params(dtype, CODED_SHAPES), _params(dtype, CODED_SHAPES)
    with monkeypatch.context() as m:  # the engine takes every tensor, coded state included
        m.setattr(cls, "_eager_step", lambda *args: pytest.fail("the torch-ops path ran"))
        fused = _run(cls, kwargs, a)
    eager = _eager(monkeypatch, cls, kwargs, b)
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    # LARS's buffer takes the ratio (whose rounding differs between the paths) before it is
    # stored: one stored ulp of it may flip, and the parameters follow by lr times that
    loose = cls is oo.LARS and state_dtype != "float32"
    ptol = (1e-10 if dtype == torch.float64 else 1e-4) if loose else tol
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=ptol, atol=ptol)
        state_a, state_b = fused.state[pa], eager.state[pb]
        assert state_a.keys() == state_b.keys()
        for key in cls.slot_keys:
            stored = state_a[key].dtype
            expected = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(state_dtype)
            if state_dtype == "int8":
                expected = torch.int8 if pa.numel() >= 4096 else torch.float32
            assert stored == (expected if dtype == torch.float32 or state_dtype != "int8"
                              or pa.numel() >= 4096 else torch.float64)  # fmt: skip
            if cls is oo.LAMB:  # the moments come before the ratio: bit for bit
                assert torch.equal(state_a[key], state_b[key])
            else:  # LARS's buffer takes the ratio's rounding, then its storage's
                da, db = (
                    codecs.decode(s[key], s.get(key + "_absmax"), dtype) for s in (state_a, state_b)
                )
                step = {"float32": tol, "bfloat16": 2.0**-7, "int8": 1 / 8}[state_dtype]
                torch.testing.assert_close(da, db, rtol=step, atol=step * float(da.abs().max()))
    plain = _params(dtype, CODED_SHAPES)
    _run(cls, {k: v for k, v in kwargs.items() if k != "state_dtype"}, plain)
    close = {"float32": 1e-5, "bfloat16": 1e-2, "int8": 5e-2}[state_dtype]
    for pa, pp in zip(a, plain, strict=True):
        torch.testing.assert_close(pa, pp, rtol=close, atol=close)


@pytest.mark.parametrize("cls", [oo.LAMB, oo.LARS])
def test_bad_state_dtype_is_refused(cls):
    with pytest.raises(ValueError, match="Invalid state_dtype: 'int4'"):
        cls(_params(torch.float32), state_dtype="int4")


def test_bad_trust_ratio_form_is_refused():
    with pytest.raises(ValueError, match="trust_ratio_form must be one of 'optax', 'paper'"):
        oo.LARS(_params(torch.float32), trust_ratio_form="you2017")
