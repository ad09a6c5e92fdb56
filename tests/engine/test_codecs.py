"""Storage codecs: int8 identical in C++, torch ops and NumPy; bfloat16 stochastic rounding;
state bytes; torch checkpoints into quantized state and back; complex state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from optimist import reference
from optimist.optim import codecs, engine

from .table import clone, make_params, needs_engine, run, set_grads


def _huge_blocks(gen: torch.Generator) -> torch.Tensor:
    """Blocks with absmax 2^121 .. 2^127, unsigned and signed. From 2^126 on 1 / absmax is
    subnormal and |x| / absmax can round above 1 (the encoder's clamped branch); the absmax
    (2^126 + 12125 ulp) of the last two blocks is one where it does (asserted)."""
    blocks = torch.rand(16, 256, generator=gen)
    blocks[1::2] -= 0.5
    scale = 2.0 ** torch.arange(121, 129).repeat_interleave(2)[:, None].float()
    scale[-2:] = torch.tensor([(253 << 23) | 12125], dtype=torch.int32).view(torch.float32)
    blocks[:, 0] = 1.0
    x = blocks * scale
    assert x.isfinite().all() and (x.abs() * (1 / x.abs().amax(1, keepdim=True)) > 1).any()
    return x.reshape(-1)


def _edge_blocks(gen: torch.Generator) -> torch.Tensor:
    """Full blocks whose codes hinge on the zero and sign tests: -0.0 in a signed block (code
    0, not 0x80), zeros and -0.0 in an unsigned one, subnormal values (1 / absmax overflows to
    inf: the block is quantized times 2^24), all -0.0, a single negative value."""
    b = torch.randn(5, 256, generator=gen)
    b[0, ::3] = -0.0
    b[1] = b[1].abs()
    b[1, ::4], b[1, 1::4] = 0.0, -0.0
    b[2] *= 1e-40
    b[3] = -0.0
    b[4] = 0.0
    b[4, 3] = -1.0
    return b.reshape(-1)


@pytest.mark.parametrize("kind", ["normal", "positive", "wide", "zeros", "tail", "huge", "edges"])
def test_int8_codec_matches_numpy_and_torch(kind):
    needs_engine()
    gen = torch.Generator().manual_seed(3)
    x = {
        "normal": torch.randn(1000, generator=gen),
        "positive": torch.rand(1000, generator=gen) ** 4,
        "wide": torch.randn(1000, generator=gen) * 10 ** torch.randint(-9, 3, (1000,)).float(),
        "zeros": torch.zeros(700),
        "tail": torch.randn(257, generator=gen),
        "huge": _huge_blocks(gen),
        "edges": _edge_blocks(gen),
    }[kind]
    q_cpp, s_cpp = engine.load().quantize(x)
    q_torch, s_torch = codecs.int8_encode(x)
    assert torch.equal(q_cpp, q_torch) and torch.equal(s_cpp, s_torch)
    with np.errstate(over="raise"):  # no 1 / absmax may overflow (subnormal blocks, edges)
        codes, scales = reference.int8_encode(x.numpy())
    assert np.array_equal(q_cpp.numpy().view(np.uint8).astype(np.int64), codes)
    assert np.array_equal(s_cpp.numpy(), scales)
    decoded = engine.load().dequantize(q_cpp, s_cpp)
    assert torch.equal(decoded, codecs.int8_decode(q_cpp, s_cpp))
    # the reference decodes in float64: its exact products, rounded once, are float32's
    expected = reference.int8_decode(codes, scales).astype(np.float32)
    np.testing.assert_array_equal(decoded.numpy(), expected)
    # error bound: relative 1/32 (unsigned) or 1/16 (signed) of the value, or 2^-15 of absmax,
    # plus the rounding of a subnormal decoded value (at most half its ulp, 2^-149)
    blocks = x.reshape(-1)
    for b in range(0, blocks.numel(), 256):
        xb, db = blocks[b : b + 256], decoded.reshape(-1)[b : b + 256]
        amax = xb.abs().max()
        step = 1 / 16 if (xb < 0).any() else 1 / 32
        bound = torch.maximum(xb.abs() * step, amax * 2.0**-14)
        assert ((xb - db).abs() <= bound + 2.0**-149).all()


@pytest.mark.parametrize("scale", [2.5, -2.5, 0.0, -0.0, float("inf")])
def test_int8_decode_of_every_code(scale):
    """All 256 codes under one scale, the special scales included (there the C++ decoder
    leaves its vector loop for the scalar one), bit for bit as the torch codec."""
    needs_engine()
    codes = torch.arange(256, dtype=torch.uint8).view(torch.int8)
    scales = torch.tensor([scale])
    decoded = engine.load().dequantize(codes, scales)
    expected = codecs.int8_decode(codes, scales)
    assert torch.equal(decoded.view(torch.int32), expected.view(torch.int32))


def test_bf16_stochastic_rounding_is_unbiased_and_matches_engine():
    x = torch.full((100_000,), 1.0 + 2.0**-10)  # between two bfloat16 values
    rounded = codecs.bf16_stochastic(x, seed=7).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0078125}
    assert abs(rounded.mean().item() - x[0].item()) < 2e-5


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


@pytest.mark.parametrize("fused", [True, False])
def test_int8_blocks_of_256_with_float32_scales_and_small_tensors_stay_float32(fused):
    """The issue's numbers, written out rather than read from ``codecs``: a tensor of 4095
    values keeps float32 state, one of 4096 (or more) int8 codes with one float32 absmax per
    block of 256 values (the last block partial), on the fused and the eager path alike."""
    if fused:
        needs_engine()
    sizes = (4095, 4096, 4097, 5000)
    params = [torch.randn(n, requires_grad=True) for n in sizes]
    opt = oo.Adam(params, lr=0.01, state_dtype="int8", **({} if fused else {"foreach": False}))
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    small, *large = (opt.state[p] for p in params)
    assert small["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in small
    for n, state in zip(sizes[1:], large, strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].dtype == torch.int8 and state[key].numel() == n
            scales = state[key + "_absmax"]
            assert scales.dtype == torch.float32 and scales.numel() == -(-n // 256)


def test_bad_state_dtype():
    with pytest.raises(ValueError, match=r"Invalid state_dtype: 'int4' .*'int8'"):
        oo.Adam([torch.zeros(2, requires_grad=True)], state_dtype="int4")


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
