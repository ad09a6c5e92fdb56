"""Pass 0 summed: ``grad_total`` (what ``clip_by_global_norm`` and ``skip_nonfinite`` use) is
``grad_stats``' per-tensor sums added in the order given, in one C++ call; the fallback where
the engine refuses the gradients gives the same numbers."""

from __future__ import annotations

from functools import reduce
from operator import add

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
