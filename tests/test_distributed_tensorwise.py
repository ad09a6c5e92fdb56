"""The tensor-wise optimizers under ZeroRedundancyOptimizer and FSDP2: 2 gloo processes equal one.

Muon (Newton-Schulz on the gathered matrix), Adafactor (factored moments of the gathered
gradient), LAMB and LARS (trust ratios from all-reduced norms), float64, 2 ranks on loopback
against one process on the concatenated batch; LAMB's ``skip_nonfinite`` skips on both ranks
when only rank 1's part of the gradients holds a NaN.
"""

from __future__ import annotations

import pytest
import torch

import dist_cases

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist_tensorwise")
    return dist_cases.spawn(folder, "tensorwise_rank"), dist_cases.run_single_tensorwise()


def _assert_same(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", ["zero", "fsdp"])
@pytest.mark.parametrize("name", list(dist_cases.TENSORWISE))
def test_tensorwise_optimizer_sharded_equals_single_process(runs, kind, name):
    (rank0, rank1), single = runs
    _assert_same(rank0[f"{kind}/{name}"], single[f"{kind}/{name}"])
    _assert_same(rank1[f"{kind}/{name}"], single[f"{kind}/{name}"])  # full_tensor on each rank


@pytest.mark.parametrize("kind", ["zero", "fsdp"])
def test_tensorwise_nan_on_one_rank_is_skipped_by_every_rank(runs, kind):
    (rank0, rank1), single = runs
    assert single["lamb_skipped"] == 1
    assert rank0[f"{kind}/lamb_skipped@0"] == rank1[f"{kind}/lamb_skipped@1"] == 1
    _assert_same(rank0[f"{kind}/lamb_nan"], single[f"{kind}/lamb_nan"])


@pytest.mark.parametrize("name", list(dist_cases.TENSORWISE))
def test_tensorwise_checkpoint_on_two_processes_continues_identically(runs, name):
    # FSDP2 + torch.distributed.checkpoint: sharded (Muon, LAMB, LARS) and replicated
    # (Adafactor's factored moments) state saved by 2 ranks, loaded by 2 fresh ranks
    (rank0, rank1), _ = runs
    for rank in (rank0, rank1):
        got, want = rank[f"dcp/{name}/reloaded"], rank[f"dcp/{name}/continued"]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
