"""The engine: fused == eager, == today's hand-written kernels, codecs, state_dtype, transforms.

The per-optimizer contract (torch.optim equality, errors, state_dict interop, ...) is
``tests/test_optimizers.py``; this file covers what the engine adds for every rule.
"""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import require
from optimist import reference
from optimist import transforms as T
from optimist.optim import codecs, engine

# (class, constructor kwargs) for every rule, with non-default settings that reach every slot
RULES = [
    (oo.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (oo.Adagrad, {"lr": 0.05, "lr_decay": 0.01, "initial_accumulator_value": 0.1}),
    (oo.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    (oo.Adadelta, {"lr": 0.5, "weight_decay": 0.01}),
    (oo.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (oo.AdamW, {"lr": 0.01}),
    (oo.Adamax, {"lr": 0.01, "weight_decay": 0.01}),
    (oo.NAdam, {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.01}),
    (oo.RAdam, {"lr": 0.01, "weight_decay": 0.01}),
    (oo.Lion, {"lr": 1e-3, "weight_decay": 0.1}),
    (oo.ADOPT, {"lr": 0.01, "weight_decay": 0.01}),
    (oo.ADOPT, {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (oo.ADOPT, {"lr": 0.01, "clip_exponent": None, "betas": (0.8, 0.99), "eps": 1e-2}),
    (oo.AdEMAMix, {"lr": 0.01, "weight_decay": 0.1}),
    (oo.AdEMAMix, {"lr": 0.01, "alpha": 5.0, "beta3_warmup": 12, "alpha_warmup": 9}),
    (oo.Adan, {"lr": 0.01, "weight_decay": 0.1}),
    (oo.Adan, {"lr": 0.01, "weight_decay": 0.1, "no_prox": True, "betas": (0.9, 0.9, 0.95)}),
    (oo.ScheduleFreeAdamW, {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5}),
    (oo.ScheduleFreeAdamW, {"lr": 0.01, "r": 1.0, "weight_lr_power": 1.0, "betas": (0.8, 0.9)}),
    (oo.ScheduleFreeSGD, {"lr": 0.1, "weight_decay": 0.1, "warmup_steps": 3}),
]
IDS = [cls.__name__ for cls, _ in RULES]  # pytest numbers repeated names
SHAPES = [(64, 80), (300,), (7,), ()]  # one tensor >= 4096 elements (int8), others float32


def needs_engine() -> None:
    if not engine.available():
        require(False, "the C++ engine", "a C++ compiler and ninja")


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(sets, step, seed=1):
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    for i, p in enumerate(sets[0]):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        for params in sets:
            params[i].grad = g.clone()


def run(cls, kwargs, params, steps=20, seed=1, **extra):
    opt = cls(params, **kwargs, **extra)
    for step in range(steps):
        set_grads([params], step, seed)
        opt.step()
    return opt


def clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


# --- fused == eager for every rule, state dtype and parameter dtype -----------------------------


@pytest.mark.parametrize(("cls", "kwargs"), RULES, ids=IDS)
@pytest.mark.parametrize("state_dtype", [None, "float32", "bfloat16", "int8"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_eager(cls, kwargs, state_dtype, dtype):
    needs_engine()
    a, b = make_params(dtype), make_params(dtype)
    fused = run(cls, kwargs, a, state_dtype=state_dtype, fused=True)
    eager = run(cls, kwargs, b, state_dtype=state_dtype, foreach=False)
    exact = state_dtype is None and dtype == torch.float64
    for pa, pb in zip(a, b, strict=True):
        if exact:
            torch.testing.assert_close(pa, pb, rtol=1e-12, atol=1e-12)
        else:  # float32 sqrt/division may differ by an ulp; a quantized state can flip a code
            torch.testing.assert_close(pa, pb, rtol=2e-3, atol=2e-3)
    for pa, pb in zip(a, b, strict=True):  # the state is stored in the same formats
        for key, value in fused.state[pa].items():
            assert value.dtype == eager.state[pb][key].dtype, key


@pytest.mark.parametrize(("cls", "kwargs"), RULES, ids=IDS)
def test_lion_and_every_rule_matches_numpy_reference(cls, kwargs):
    """Each rule's fused path against optimist.reference in float64 (Lion has no torch twin)."""
    needs_engine()
    special = {
        oo.AdamW: "adamw",
        oo.ScheduleFreeAdamW: "schedule_free_adamw",
        oo.ScheduleFreeSGD: "schedule_free_sgd",
    }
    name = special.get(cls, cls.__name__.lower())
    rule = reference.RULES[name]
    params = make_params(torch.float64, shapes=[(5, 3)])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch-style scalar state (step, mu_product) in f64
    try:
        opt = cls(params, **kwargs, fused=True)
        _run_against_reference(opt, params, cls, kwargs, rule)
    finally:
        torch.set_default_dtype(previous)


def _run_against_reference(opt, params, cls, kwargs, rule):
    ref_param = params[0].detach().numpy().copy()
    ref_state: dict = {}
    defaults = {k: v for k, v in opt.defaults.items() if k in _ref_keys(rule)}
    for step in range(15):
        set_grads([params], step)
        grad = params[0].grad.numpy().copy()
        opt.step()
        ref_param, ref_state = rule(ref_param, grad, ref_state, **defaults)
    np.testing.assert_allclose(params[0].detach().numpy(), ref_param, rtol=1e-9, atol=1e-12)


def _ref_keys(rule):
    import inspect

    return set(inspect.signature(rule).parameters) - {"param", "grad", "state"}


# --- codecs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "positive", "wide", "zeros", "tail"])
def test_int8_codec_matches_numpy_and_torch(kind):
    needs_engine()
    gen = torch.Generator().manual_seed(3)
    x = {
        "normal": torch.randn(1000, generator=gen),
        "positive": torch.rand(1000, generator=gen) ** 4,
        "wide": torch.randn(1000, generator=gen) * 10 ** torch.randint(-9, 3, (1000,)).float(),
        "zeros": torch.zeros(700),
        "tail": torch.randn(257, generator=gen),
    }[kind]
    q_cpp, s_cpp = engine.load().quantize(x)
    q_torch, s_torch = codecs.int8_encode(x)
    assert torch.equal(q_cpp, q_torch) and torch.equal(s_cpp, s_torch)
    codes, scales = reference.int8_encode(x.numpy())
    assert np.array_equal(q_cpp.numpy().view(np.uint8).astype(np.int64), codes)
    assert np.array_equal(s_cpp.numpy(), scales)
    decoded = engine.load().dequantize(q_cpp, s_cpp)
    assert torch.equal(decoded, codecs.int8_decode(q_cpp, s_cpp))
    np.testing.assert_allclose(decoded.numpy(), reference.int8_decode(codes, scales), rtol=1e-7)
    # error bound: relative 1/32 (unsigned) or 1/16 (signed) of the value, or 2^-15 of absmax
    blocks = x.reshape(-1)
    for b in range(0, blocks.numel(), 256):
        xb, db = blocks[b : b + 256], decoded.reshape(-1)[b : b + 256]
        amax = xb.abs().max()
        step = 1 / 16 if (xb < 0).any() else 1 / 32
        bound = torch.maximum(xb.abs() * step, amax * 2.0**-14)
        assert ((xb - db).abs() <= bound + 1e-12).all()


def test_bf16_stochastic_rounding_is_unbiased_and_matches_engine():
    x = torch.full((100_000,), 1.0 + 2.0**-10)  # between two bfloat16 values
    rounded = codecs.bf16_stochastic(x, seed=7).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0078125}
    assert abs(rounded.mean().item() - x[0].item()) < 2e-5


# --- state_dtype --------------------------------------------------------------------------------


def state_bytes(opt):
    return sum(
        t.numel() * t.element_size()
        for s in opt.state.values()
        for k, t in s.items()
        if isinstance(t, torch.Tensor) and k != "step"
    )


def test_state_dtype_bytes():
    needs_engine()
    sizes = {}
    for sd in (None, "bfloat16", "int8"):
        params = make_params(shapes=[(256, 256), (128, 64)])
        sizes[sd] = state_bytes(run(oo.Adam, {}, params, steps=2, state_dtype=sd))
    assert sizes["int8"] <= 0.30 * sizes[None]
    assert sizes["bfloat16"] <= 0.55 * sizes[None]


def test_bad_state_dtype():
    with pytest.raises(ValueError, match=r"Invalid state_dtype: 'int4' .*'int8'"):
        oo.Adam([torch.zeros(2, requires_grad=True)], state_dtype="int4")


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize(("cls", "kwargs"), RULES, ids=IDS)
def test_quantized_state_dict_round_trip_is_bit_identical(cls, kwargs, state_dtype):
    needs_engine()
    a = make_params()
    opt = run(cls, kwargs, a, steps=5, state_dtype=state_dtype)
    b = clone(a)
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    opt_b = cls(b, **kwargs, state_dtype=state_dtype)
    opt_b.load_state_dict(torch.load(saved, weights_only=True))
    for step in range(5, 10):
        set_grads([a, b], step)
        opt.step()
        opt_b.step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)


def test_torch_checkpoint_into_int8_optimizer_and_back():
    needs_engine()
    a = make_params()
    theirs = torch.optim.Adam(a, lr=0.01)
    for step in range(5):
        set_grads([a], step)
        theirs.step()
    b = clone(a)
    ours = oo.Adam(b, lr=0.01, state_dtype="int8")
    ours.load_state_dict(theirs.state_dict())
    big = ours.state[b[0]]
    assert big["exp_avg"].dtype == torch.int8 and big["exp_avg_absmax"].dtype == torch.float32
    back = torch.optim.Adam(clone(a), lr=0.01)  # and back into torch.optim, float32 again
    back.load_state_dict(engine.float_state_dict(ours.state_dict()))
    restored = back.state[back.param_groups[0]["params"][0]]["exp_avg_sq"]
    original = theirs.state[a[0]]["exp_avg_sq"]
    assert restored.dtype == torch.float32
    torch.testing.assert_close(restored, original, rtol=1 / 30, atol=original.max() * 2.0**-14)


# --- transforms ---------------------------------------------------------------------------------


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


# --- tensor subclasses --------------------------------------------------------------------------


def test_dtensor_parameters_run_the_engine_on_their_local_shards(tmp_path, recwarn):
    needs_engine()
    dist = torch.distributed
    from torch.distributed.tensor import DeviceMesh, Replicate, distribute_tensor

    if not dist.is_initialized():
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
        )
    try:
        mesh = DeviceMesh("cpu", [0])
        plain = make_params(torch.float64, shapes=[(6, 4), (5,)])
        wrapped = [
            torch.nn.Parameter(distribute_tensor(p.detach().clone(), mesh, [Replicate()]))
            for p in plain
        ]
        ours = oo.Adam(wrapped, lr=0.01)
        ref = oo.Adam(plain, lr=0.01)  # the same C++ engine call on plain tensors: bitwise
        for step in range(3):
            set_grads([plain], step)
            for w, p in zip(wrapped, plain, strict=True):
                w.grad = distribute_tensor(p.grad.clone(), mesh, [Replicate()])
            ours.step()
            ref.step()
        for w, p in zip(wrapped, plain, strict=True):
            torch.testing.assert_close(w.full_tensor().detach(), p.detach(), rtol=0, atol=0)
        # the engine took the local shards: no "tensor subclass ... per-tensor path" warning
        assert not [w for w in recwarn if "tensor subclass" in str(w.message)]
        # foreach=True (torch's kernel for plain tensors): DTensors take the per-tensor path,
        # and the state made from the first gradient is a DTensor like its parameter
        sgd = oo.SGD(wrapped, lr=0.01, momentum=0.9, foreach=True)
        sgd.step()
        buffers = [sgd.state[w]["momentum_buffer"] for w in wrapped]
        assert all(isinstance(b, type(wrapped[0].data)) for b in buffers)
        for b, w in zip(buffers, wrapped, strict=True):
            torch.testing.assert_close(b.full_tensor(), w.grad.full_tensor(), rtol=0, atol=0)
    finally:
        dist.destroy_process_group()


def test_lion_is_registered_by_name():
    opt = optimist.optimizer("lion", [torch.zeros(2, requires_grad=True)])
    assert isinstance(opt, oo.Lion) and opt.defaults["lr"] == 1e-4


# --- low-precision parameters, many tensors, autograd bookkeeping, build failures --------------


@pytest.mark.parametrize(("cls", "kwargs"), RULES, ids=IDS)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_params_close_to_float32(cls, kwargs, low):
    """bf16/fp16 parameters: the engine computes in float32 and rounds once on store."""
    needs_engine()
    a = make_params(torch.float32)
    b = [p.detach().to(low).requires_grad_() for p in a]
    run_a, run_b = cls(a, **kwargs), cls(b, **kwargs)
    for step in range(5):
        set_grads([a], step)
        for pa, pb in zip(a, b, strict=True):
            pb.grad = pa.grad.to(low)
        run_a.step()
        run_b.step()
    tol = 3e-2 if low == torch.bfloat16 else 5e-3
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pb.float(), pa.detach(), rtol=tol, atol=tol)


def test_stochastic_params_round_bf16_updates_without_bias():
    """Updates far below a bfloat16 ulp still move the parameter on average (pure-bf16)."""
    needs_engine()
    n = 50_000
    nearest = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    stochastic = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    opts = [
        oo.SGD([nearest], lr=1e-4),
        oo.SGD([stochastic], lr=1e-4, stochastic_params=True),
    ]
    for _ in range(20):
        for p, opt in zip((nearest, stochastic), opts, strict=True):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            opt.step()
    assert torch.all(nearest == 1.0)  # 1e-4 is far below half an ulp of 1.0 (2^-8)
    expected = 1.0 - 20 * 1e-4
    assert abs(stochastic.float().mean().item() - expected) < 2e-4


def test_many_small_tensors_take_the_tensor_parallel_path():
    needs_engine()
    gen = torch.Generator().manual_seed(5)
    a = [
        torch.randn(300 + i, generator=gen, dtype=torch.float64).requires_grad_()
        for i in range(400)
    ]
    b = clone(a)
    fused = oo.AdamW(a, lr=0.01, fused=True)
    eager = oo.AdamW(b, lr=0.01, foreach=False)
    for step in range(3):
        set_grads([a, b], step)
        fused.step()
        eager.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_version_counter_is_bumped():
    needs_engine()
    p = torch.randn(10, requires_grad=True)
    p.grad = torch.randn(10)
    before = p._version
    oo.Adam([p], lr=0.1, fused=True).step()
    assert p._version > before


def test_disable_env_var(monkeypatch):
    monkeypatch.setenv("OPTIMIST_DISABLE_FUSED", "1")
    assert engine.available() is False
    p = torch.ones(3, requires_grad=True)
    p.grad = torch.ones(3)
    opt = oo.Adam([p], lr=0.1)
    assert opt._implementation(opt.param_groups[0], [p]) == "single"
    opt.step()
    assert p[0].item() < 1.0
    monkeypatch.delenv("OPTIMIST_DISABLE_FUSED")


def test_failed_build_warns_once_and_falls_back(tmp_path):
    """With no compiler, available() is False with one warning, and load() says why."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import warnings
        import torch
        import optimist.optim as oo
        from optimist.optim import engine
        engine.NAME_PREFIX = "optimist_engine_test_no_compiler"
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert engine.available() is False
            assert engine.available() is False
            p = torch.ones(3, requires_grad=True)
            p.grad = torch.ones(3)
            oo.Adam([p], lr=0.1).step()
        assert len(w) == 1 and "per-tensor" in str(w[0].message), [str(x.message) for x in w]
        assert p[0].item() < 1.0
        try:
            engine.load()
        except RuntimeError as e:
            assert "compiler" in str(e), e
        else:
            raise AssertionError("load() should raise")
        print("ok")
        """
    )
    env = dict(os.environ, CXX="/nonexistent/c++", TORCH_EXTENSIONS_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_complex_params_keep_complex_state_under_any_state_dtype():
    needs_engine()
    p = torch.randn(5000, dtype=torch.complex64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    a, b = oo.Adam([p], lr=0.01, state_dtype="int8"), oo.Adam([q], lr=0.01)
    for _ in range(3):
        g = torch.randn(5000, dtype=torch.complex64)
        p.grad, q.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert a.state[p]["exp_avg"].dtype == torch.complex64
    assert torch.equal(p, q)
