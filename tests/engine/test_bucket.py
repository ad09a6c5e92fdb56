"""The bucketed eager path (optimist.optim.bucket) is bitwise the per-tensor eager path.

``foreach=True`` takes it on the CPU for every rule whose torch path does not apply; the torch
path is switched off here so that the classic rules (Adam, SGD, ...) take it too. Every
element-wise rule (rows from the registry, table.py), float32 and float64, every state dtype,
and the engine's prologue and epilogue: maximize, clipping, L2 and decoupled decay with
per-parameter masks, EMA, bfloat16 state and parameters with stochastic rounding.
"""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo
from optimist.optim import bucket, engine
from optimist.optim.transforms import ChainConfig

from .table import ELEMENTWISE, STATE_DTYPES, ids, make_params, run_row, set_grads

# many small tensors (bucketed together), one of 5120 elements (int8 state: per tensor)
SHAPES = [(64, 80), (300,), (7,), (), (3, 5), (40,), (2, 2, 2)]


class _Calls(list):
    """The tensors of each bucket run; ``sizes``: the elements of each."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []


@pytest.fixture
def bucketed(monkeypatch):
    """Count the buckets run; the torch path off, so every rule's foreach=True buckets."""
    calls = _Calls()
    original = bucket._run_bucket

    def spy(rule, group, batch, *args, **kwargs):
        calls.append(len(batch.params))
        calls.sizes.append(sum(p.numel() for p in batch.params))
        return original(rule, group, batch, *args, **kwargs)

    monkeypatch.setattr(bucket, "_run_bucket", spy)
    monkeypatch.setattr(engine.RuleOptimizer, "_torch_path_applies", lambda self, group: False)
    return calls


def assert_bitwise(a, b, opt_a, opt_b):
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb), (pa - pb).abs().max()
        assert opt_a.state[pa].keys() == opt_b.state[pb].keys()
        for key, value in opt_a.state[pa].items():
            other = opt_b.state[pb][key]
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and torch.equal(value, other), key


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bucketed_equals_per_tensor_bitwise(row, state_dtype, dtype, bucketed):
    a, b = make_params(dtype, shapes=SHAPES), make_params(dtype, shapes=SHAPES)
    fast = run_row(row, a, steps=5, state_dtype=state_dtype, foreach=True)
    slow = run_row(row, b, steps=5, state_dtype=state_dtype, foreach=False)
    assert bucketed and max(bucketed) >= 5, bucketed  # the small tensors went in one bucket
    assert_bitwise(a, b, fast, slow)


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
def test_bucketed_vectors_bitwise(row, bucketed):
    """A bucket of vectors only (read by torch.cat, written by split_with_sizes_copy)."""
    shapes = [(300,), (7,), (40,), (1,)]
    a, b = make_params(shapes=shapes), make_params(shapes=shapes)
    fast = run_row(row, a, steps=4, foreach=True)
    slow = run_row(row, b, steps=4, foreach=False)
    assert bucketed == [4] * 4
    assert_bitwise(a, b, fast, slow)


@pytest.mark.parametrize("row", ELEMENTWISE[::3], ids=ids)
def test_bucketed_int8_state_in_whole_blocks_bitwise(row, bucketed):
    """int8 state of tensors in whole 256-element blocks shares a bucket (its blocks are the
    same flat); a tensor with a partial last block (4097 elements) is stepped alone."""
    shapes = [(64, 80), (32, 128), (4096,), (4097,), (300,)]
    a, b = make_params(shapes=shapes), make_params(shapes=shapes)
    fast = run_row(row, a, steps=4, foreach=True, state_dtype="int8")
    slow = run_row(row, b, steps=4, foreach=False, state_dtype="int8")
    assert bucketed == [3] * 4
    assert_bitwise(a, b, fast, slow)


def test_bucketed_complex_params_bitwise(bucketed):
    gen = torch.Generator().manual_seed(3)
    a = [torch.randn(s, dtype=torch.complex64, generator=gen).requires_grad_() for s in SHAPES]
    b = [p.detach().clone().requires_grad_() for p in a]
    opts = [oo.AdamW(a, lr=0.01, foreach=True), oo.AdamW(b, lr=0.01, foreach=False)]
    for _ in range(4):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = torch.randn(pa.shape, dtype=pa.dtype, generator=gen)
            pb.grad = pa.grad.clone()
        for opt in opts:
            opt.step()
    assert bucketed
    assert_bitwise(a, b, *opts)


def _chain(row) -> ChainConfig:
    """Clipping, L2 decay on matrices only, decoupled decay on all but scalars, EMA (no decay
    in the chain for the rules that refuse it there: Prodigy)."""
    masked = row.entry.name != "prodigy"
    return ChainConfig(
        clip_value=0.8,
        decay_before=[(0.05, lambda p: p.dim() >= 2)] if masked else [],
        decay_after=[(0.1, lambda p: p.dim() >= 1)] if masked else [],
        ema=0.9,
    )


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bucketed_prologue_and_epilogue_bitwise(row, dtype, bucketed):
    a, b = make_params(dtype, shapes=SHAPES), make_params(dtype, shapes=SHAPES)
    extra = dict(maximize=True, state_dtype="bfloat16")
    fast = run_row(row, a, steps=5, foreach=True, chain=_chain(row), **extra)
    slow = run_row(row, b, steps=5, foreach=False, chain=_chain(row), **extra)
    assert bucketed
    assert_bitwise(a, b, fast, slow)


@pytest.mark.parametrize("row", ELEMENTWISE[::4], ids=ids)
def test_bucketed_bf16_params_with_stochastic_rounding_bitwise(row, bucketed):
    a = [p.detach().to(torch.bfloat16).requires_grad_() for p in make_params(shapes=SHAPES)]
    b = [p.detach().clone().requires_grad_() for p in a]
    for params, foreach in ((a, True), (b, False)):
        opt = row.build(params, foreach=foreach, stochastic_params=True, state_dtype="bfloat16")
        for step in range(5):
            set_grads([params], step)
            opt.step()
        if foreach:
            fast = opt
    assert bucketed
    assert_bitwise(a, b, fast, opt)


def test_decay_masks_split_buckets(bucketed):
    a, b = make_params(shapes=SHAPES), make_params(shapes=SHAPES)
    opts = [
        oo.Lion(p, lr=0.01, foreach=f, chain=_chain(ELEMENTWISE[0]))
        for p, f in ((a, True), (b, False))
    ]
    for step in range(3):
        set_grads([a, b], step)
        for opt in opts:
            opt.step()
    # per step: (64, 80), (3, 5), (2, 2, 2) (L2 and decay) | (300,), (7,), (40,) (decay); ()
    assert bucketed == [3, 3] * 3
    assert_bitwise(a, b, *opts)


def test_step_counts_and_bucket_size_split_buckets(bucketed, monkeypatch):
    """A parameter that joins later (another step count) and a small BUCKET_MAX give more
    buckets, with the same results."""
    monkeypatch.setattr(bucket, "BUCKET_MAX", 320)
    a, b = make_params(shapes=SHAPES), make_params(shapes=SHAPES)
    opts = [oo.NAdam(a, lr=0.01, foreach=True), oo.NAdam(b, lr=0.01, foreach=False)]
    for step in range(6):
        set_grads([a, b], step)
        if step < 3:
            a[5].grad = b[5].grad = None
        for opt in opts:
            opt.step()
    assert_bitwise(a, b, *opts)
    assert max(bucketed.sizes) <= 320 and len(bucketed) >= 2 * 6


def test_dispatch_of_the_bucketed_path(bucketed):
    """foreach=True buckets; foreach=False and the CPU default (the C++ engine) do not."""
    p = make_params(shapes=SHAPES)
    for foreach, expected in ((True, True), (False, False), (None, False)):
        bucketed.clear()
        opt = oo.Lion(p, lr=0.01, foreach=foreach)
        set_grads([p], 0)
        opt.step()
        assert bool(bucketed) == expected, foreach
    group = {"foreach": None}
    assert engine.RuleOptimizer._bucketed(group, [torch.empty(2, device="meta")])
    assert not engine.RuleOptimizer._bucketed(group, [torch.empty(2)])
