"""Every element-wise rule on the C++ engine gives the same bits at 1, 2 and 3 threads.

The engine shares each large tensor's blocks evenly among the threads (2 and 3 threads cut them
at different places) and hands runs of small tensors to whichever thread is free; Prodigy's
global pass shares each tensor's chunks the same way, last to first. Element-wise updates and
the chunked sums depend on neither, so parameters, state and Prodigy's ``d`` must be equal bit
for bit, with the stored state in each codec (bfloat16 is rounded stochastically, seeded per
element; int8 per block of 256).
"""

from __future__ import annotations

import pytest
import torch

from .table import ELEMENTWISE, ids, make_params, needs_engine, run_row

# two large tensors (69 and 33 blocks: shares cut mid-tensor), small ones in three runs
SHAPES = [(70_000,), (300, 7), (33_000,), (5,), (20_000,), (20_000,), ()]
FIRST_EXAMPLES = list({row.entry.name: row for row in reversed(ELEMENTWISE)}.values())


def _trajectory(row, state_dtype, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        params = make_params(shapes=SHAPES)
        opt = run_row(row, params, steps=3, fused=True, state_dtype=state_dtype)
    finally:
        torch.set_num_threads(before)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, [opt.state[p] for p in params], groups


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "int8"])
@pytest.mark.parametrize("row", FIRST_EXAMPLES, ids=ids)
def test_the_step_is_bitwise_the_same_at_one_two_and_three_threads(row, state_dtype):
    needs_engine()
    params, states, groups = _trajectory(row, state_dtype, 1)
    start = make_params(shapes=SHAPES)
    assert any(not torch.equal(p, q) for p, q in zip(params, start, strict=True))
    for threads in (2, 3):
        other_params, other_states, other_groups = _trajectory(row, state_dtype, threads)
        assert groups == other_groups  # Prodigy's d and its sums among them
        for p, q in zip(params, other_params, strict=True):
            assert torch.equal(p, q), threads
        for a, b in zip(states, other_states, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], torch.Tensor):
                    assert torch.equal(a[key], b[key]), (threads, key)
                else:
                    assert a[key] == b[key], (threads, key)
