"""The engine's prologue and codecs, bit for bit.

* Every prologue combination (gradient scale from clipping by norm, clipping by value before or
  after it, maximize, L2 penalty, decoupled decay with a mask) in the C++ engine gives exactly the
  parameters and state of the same rule run by the engine *without* a prologue on gradients and
  parameters prepared in torch ops, for every state dtype, over tensors with several blocks, a
  tail, and one large enough to be split between threads.
* The int8 codec's edge cases (NaN, inf, -0.0, all-zero blocks, a partial last block) are equal in
  C++ and torch ops.
"""

from __future__ import annotations

import math
from functools import reduce
from operator import add

import pytest
import torch

import optimist
import optimist.optim as oo
from helpers import needs_engine
from optimist import transforms as T
from optimist.optim import codecs, engine

Tensor = torch.Tensor

# several 1024-element blocks with a tail; one over the engine's 32K-element thread split; small
SHAPES = [(37, 111), (70_001,), (300,), (5,)]
STEPS = 6  # RAdam rectifies from step 6


def params_and_grads(dtype: torch.dtype, seed: int = 0) -> tuple[list[Tensor], list[list[Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) * 3 for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def decayed(p: Tensor) -> bool:
    return p.dim() > 1  # the mask: matrices decay, vectors (biases) do not


# (name, chain transforms before the rule, after the rule, rule kwargs)
CASES = {
    "maximize": ([], [], {"maximize": True}),
    "decay_after_masked": ([], [T.add_decayed_weights(0.05, mask=decayed)], {}),
    "l2_before": ([T.add_decayed_weights(0.05)], [], {}),
    "clip_norm": ([T.clip_by_global_norm(1.0)], [], {}),
    "clip_value": ([T.clip_by_value(0.5)], [], {}),
    # the scale, L2 and decay that Adam, NAdam and RAdam take into their loop (kFusesPrologue)
    "clip_norm_l2_masked": (
        [T.clip_by_global_norm(1.0), T.add_decayed_weights(0.05, mask=decayed)],
        [],
        {},
    ),
    "clip_norm_decay_after": (
        [T.clip_by_global_norm(1.0)],
        [T.add_decayed_weights(0.05, mask=decayed)],
        {},
    ),
    "maximize_l2_decay_after": (
        [T.add_decayed_weights(0.02)],
        [T.add_decayed_weights(0.05, mask=decayed)],
        {"maximize": True},
    ),
    "all": (
        [T.clip_by_global_norm(1.0), T.clip_by_value(0.01), T.add_decayed_weights(0.02)],
        [T.add_decayed_weights(0.05, mask=decayed)],
        {"maximize": True},
    ),
}

RULES = {
    "adam": (T.scale_by_adam, oo.Adam, {"lr": 0.01}),
    "amsgrad": (lambda: T.scale_by_adam(amsgrad=True), oo.Adam, {"lr": 0.01, "amsgrad": True}),
    "nadam": (lambda: T.scale_by(oo.NAdam), oo.NAdam, {"lr": 0.01}),
    "radam": (lambda: T.scale_by(oo.RAdam), oo.RAdam, {"lr": 0.01}),
    "sgd": (lambda: T.scale_by_sgd(momentum=0.9), oo.SGD, {"lr": 0.05, "momentum": 0.9}),
}


def by_hand(params, grads, before, after, kwargs, rule_cls, rule_kwargs, state_dtype):
    """The same steps with the prologue done in torch ops, then the rule with no prologue."""
    opt = rule_cls(params, fused=True, state_dtype=state_dtype, **rule_kwargs)
    lr = rule_kwargs["lr"]
    for step_grads in grads:
        gs = [g.clone() for g in step_grads]
        clip_norm = next((t.args[0] for t in before if t.kind == "clip_norm"), None)
        clip_value = next((t.args[0] for t in before if t.kind == "clip_value"), None)
        scale = 1.0
        if clip_norm is not None:
            sums, _ = engine.grad_stats(gs)
            norm = math.sqrt(reduce(add, sums.tolist(), 0.0))  # pass 0 adds them in order
            scale = min(1.0, clip_norm / (norm + 1e-6))
        clip_first = clip_norm is None  # clip_by_value listed before clip_by_global_norm
        with torch.no_grad():
            for p, g in zip(params, gs, strict=True):
                if clip_value is not None and clip_first:
                    g.clamp_(-clip_value, clip_value)
                if scale != 1.0:
                    g.mul_(scale)
                if clip_value is not None and not clip_first:
                    g.clamp_(-clip_value, clip_value)
                if kwargs.get("maximize"):
                    g.neg_()
                factor = 1.0
                for t in after:
                    rate, mask = t.args
                    if mask is None or mask(p):
                        factor -= lr * rate
                if factor != 1.0:
                    p.mul_(factor)
                for t in before:
                    if t.kind == "decay" and (t.args[1] is None or t.args[1](p)):
                        g.add_(p, alpha=t.args[0])
                p.grad = g
        opt.step()
    return opt


# every state dtype for Adam and SGD; the other rules share Adam's codec path
RULE_STATES = [
    (rule, state_dtype)
    for rule in RULES
    for state_dtype in ([None, "bfloat16", "int8"] if rule in ("adam", "sgd") else [None, "int8"])
]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("rule", "state_dtype"), RULE_STATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_prologue_equals_torch_ops_prologue_bitwise(case, rule, state_dtype, dtype):
    needs_engine()
    before, after, kwargs = CASES[case]
    make_rule, rule_cls, rule_kwargs = RULES[rule]
    params_a, grads = params_and_grads(dtype)
    params_b = [p.clone() for p in params_a]
    fused = optimist.chain(*before, make_rule(), *after)(
        params_a, fused=True, state_dtype=state_dtype, **{**rule_kwargs, **kwargs}
    )
    for step_grads in grads:
        for p, g in zip(params_a, step_grads, strict=True):
            p.grad = g.clone()
        fused.step()
    hand = by_hand(params_b, grads, before, after, kwargs, rule_cls, rule_kwargs, state_dtype)
    for pa, pb in zip(params_a, params_b, strict=True):
        assert torch.equal(pa, pb), (pa - pb).abs().max()
        for key, value in fused.state[pa].items():
            other = hand.state[pb][key]
            assert value.dtype == other.dtype, key
            assert torch.equal(value, other), key


# --- the int8 codec's edge cases ----------------------------------------------------------------


def blocks_with(*values: float, n: int = 256) -> Tensor:
    gen = torch.Generator().manual_seed(len(values))
    x = torch.randn(n, generator=gen)
    x[: len(values)] = torch.tensor(values)
    return x


@pytest.mark.parametrize(
    "x",
    [
        blocks_with(float("nan")),
        blocks_with(float("inf")),
        blocks_with(-float("inf"), 2.0),
        blocks_with(float("nan"), n=300),  # a NaN in the first block, a finite tail block
        torch.full((256,), -0.0),
        torch.cat([torch.rand(256), torch.full((256,), -0.0), torch.zeros(100)]),
        torch.cat([torch.rand(200), torch.tensor([-0.0] * 56)]),  # -0.0 keeps a block unsigned
        torch.rand(1000) ** 6,
        -torch.rand(513),
    ],
    ids=["nan", "inf", "-inf", "nan-tail", "-0", "mixed-zero", "neg-zero", "tiny", "negative"],
)
def test_int8_codec_edge_cases_equal_in_cpp_and_torch(x):
    needs_engine()
    q_cpp, s_cpp = engine.load().quantize(x)
    q_torch, s_torch = codecs.int8_encode(x)
    assert torch.equal(q_cpp, q_torch)
    assert torch.equal(s_cpp, s_torch) or (
        torch.equal(s_cpp.isnan(), s_torch.isnan())
        and torch.equal(s_cpp.nan_to_num(), s_torch.nan_to_num())
    )
    for b in range(0, x.numel(), 256):  # a block with a NaN or inf has a NaN scale
        bad = not torch.isfinite(x[b : b + 256]).all()
        assert bool(s_cpp[b // 256].isnan()) == bad
