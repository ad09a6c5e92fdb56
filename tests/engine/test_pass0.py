"""Pass 0 summed: ``grad_total`` (what ``clip_by_global_norm`` and ``skip_nonfinite`` use) is
``grad_stats``' per-tensor sums added in the order given, in one C++ call; the fallback where
the engine refuses the gradients gives the same numbers."""

from __future__ import annotations

from functools import reduce
from operator import add

import numpy as np
import pytest
import torch

from helpers import needs_engine
from optimist.optim import native
from optimist.optim.distributed import global_grad_stats


def in_order(sums: torch.Tensor) -> float:
    return reduce(add, sums.tolist(), 0.0)


@pytest.mark.parametrize("clip_value", [0.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_total_is_grad_stats_summed_in_order(dtype, clip_value):
    needs_engine()
    gen = torch.Generator().manual_seed(0)
    shapes = [(5000,), (1,), (300, 250), (33,), (2**21 + 5,)]  # the last: two chunks
    grads = [torch.randn(s, generator=gen, dtype=dtype) * 10.0**k for k, s in enumerate(shapes)]
    sums, finite = native.grad_stats(grads, clip_value)
    total = native.grad_total(grads, clip_value)
    assert total == (in_order(sums), True) and finite
    assert global_grad_stats(grads, clip_value, native.grad_total) == total  # no process group


def test_grad_total_adds_the_tensors_in_the_order_given():
    needs_engine()
    big = torch.tensor([1e8], dtype=torch.float64)  # 1e16 + 1 rounds back to 1e16
    ones = [torch.ones(1, dtype=torch.float64) for _ in range(100)]
    assert native.grad_total([big, *ones]) == (1e16, True)
    assert native.grad_total([*ones, big]) == (1e16 + 100, True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("clip_value", [0.0, 0.5])
def test_grad_total_reports_a_nonfinite_gradient(bad, clip_value):
    needs_engine()
    grads = [torch.ones(3000), torch.tensor([1.0, bad, 2.0])]
    assert native.grad_total(grads, clip_value)[1] is False
    assert native.grad_total(grads[:1], clip_value) == (3000.0 if not clip_value else 750.0, True)


def test_grad_total_falls_back_where_the_engine_refuses_the_gradients():
    needs_engine()
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(5, 7, generator=gen, dtype=torch.float64).t(), torch.ones(4)]
    assert native.load().grad_total(grads, 0.0) is None  # not contiguous
    sums, finite = native.grad_stats(grads)
    assert native.grad_total(grads) == (in_order(sums), finite)
    assert native.grad_total([]) == (0.0, True)


def lane_total(lanes) -> float:
    """reduce.h's lane_total: 32 lanes added as a tree, (k, k+8, k+16, k+24) first."""
    t = [(float(lanes[k]) + float(lanes[k + 8])) + (float(lanes[k + 16]) + float(lanes[k + 24]))
         for k in range(8)]  # fmt: skip
    return ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))


def chunked_sum_of_squares(g: torch.Tensor, clip_value: float) -> float:
    """Pass 0's sum as reduce.h and norms.h define it, in NumPy: per chunk of 2^20 elements, per
    block of 1024, 32 float64 lanes (the tail into lane 0), the lanes added as reduce.h's tree
    (lane_total), the blocks into their chunk, the chunks into the tensor's sum, each from 0.0."""
    x = g.detach().reshape(-1).double().numpy()
    if clip_value > 0:
        x = np.clip(x, -clip_value, clip_value)
    total = 0.0
    for c in range(0, x.size, 2**20):
        chunk = 0.0
        for b in range(c, min(x.size, c + 2**20), 1024):
            sq = x[b : min(b + 1024, c + 2**20, x.size)] ** 2
            body = sq.size // 32 * 32
            lanes = np.zeros(32) if body == 0 else np.cumsum(sq[:body].reshape(-1, 32), axis=0)[-1]
            for v in sq[body:]:
                lanes[0] += v
            chunk += lane_total(lanes)
        total += chunk
    return total


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("clip_value", [0.0, 0.5])
def test_grad_stats_is_the_chunked_sum_whatever_the_schedule_and_threads(threads, clip_value):
    """Each tensor's sum is its chunks' (block by block) whatever stream or thread reads them:
    tensors of several chunks, single blocks and block tails, more tensors than streams."""
    needs_engine()
    gen = torch.Generator().manual_seed(2)
    shapes = [(2**21 + 77,), (3,), (1025,), (40, 33), (2**20,), (31,), (5000,), (7,), (2**20 + 1,)]
    grads = [torch.randn(s, generator=gen) * (1 + k) for k, s in enumerate(shapes)]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sums, finite = native.grad_stats(grads, clip_value)
    finally:
        torch.set_num_threads(before)
    assert finite
    assert sums.tolist() == [chunked_sum_of_squares(g, clip_value) for g in grads]
