"""Every registered optimizer under ZeroRedundancyOptimizer and FSDP2 equals one process.

Rows from the registry (tests/dist_table.py): 2 gloo processes on loopback, float64, one spawn
for the whole table, both ranks against one process. Plus SOAP with back-propagated gradients
on a model whose Shampoo factors are full-rank.
"""

from __future__ import annotations

import pytest
import torch

import dist_cases
import dist_table
import optimist.optim as oo
from optimist.optim.distributed import sync_zero_params

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed"),
]
ROWS = list(dist_table.rows())
KINDS = list(dist_table.KINDS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist_registry")
    ranks = dist_cases.spawn(folder, "dist_table:table_rank", timeout=400.0)
    return ranks, dist_table.table_single(), folder / "checkpoints"


def test_every_registered_optimizer_has_a_row():
    assert {entry.name for entry in dist_table.entries()} <= set(ROWS)
    assert {"prodigy", "sophiag", "lookahead", "soap", "muon", "adafactor"} <= set(ROWS)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", ROWS)
def test_registered_optimizer_on_two_ranks_equals_one_process(runs, kind, row):
    _check(runs, kind, row)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", dist_table.guarded_rows())
def test_skip_nonfinite_skips_a_nan_of_one_rank_on_every_rank(runs, kind, row):
    # a NaN in rank 1's partition (ZeRO) or shard (FSDP2) only: both ranks skip that step (the
    # pass-0 finiteness is rank-wide), and the other steps equal one process that skipped it
    got = _check(runs, kind, f"{row}/guarded", row)
    assert got is None or got["skipped"] == 1


def _check(runs, kind: str, name: str, row: str | None = None) -> dict | None:
    """Both ranks' run ``name`` equals one process's (or raises the expected error)."""
    ranks, single, _ = runs
    row = row or name
    got = None
    for rank in ranks:
        got = rank[f"{kind}/{name}"]
        if (kind, row) in dist_table.UNSUPPORTED:
            assert got == dist_table.UNSUPPORTED[kind, row]
            return None
        assert isinstance(got, dict), got  # the error it raised
        want = single[name]
        assert got["skipped"] == want["skipped"]
        for a, b in zip(got["params"], want["params"], strict=True):
            # only the order of all-reduced float64 sums differs (dist_table's docstring)
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        for key in dist_table.PRODIGY_SUMS:  # Prodigy: one d on every rank, as one process
            if key in want:  # (replicated: the sums counted once, not once per rank)
                assert got[key] == pytest.approx(want[key], rel=1e-12, abs=0), key
    return got


@pytest.mark.parametrize("kind", ["zero", "fsdp"])
def test_soap_with_backward_on_full_rank_factors_equals_one_process(runs, kind):
    # The half-batch gradients differ from the whole batch's in the last bits (~1e-16); with
    # full-rank, well-separated factors (dist_table.SOAP_DATA) SOAP keeps that at ~5e-9 after
    # 3 steps (a tall weight's rank-deficient factor amplifies it to ~0.02)
    ranks, _, _ = runs
    want = dist_table.soap_backward_single()
    for rank in ranks:
        for a, b in zip(rank[f"soap_backward/{kind}"], want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")  # on purpose
def test_soap_fsdp2_checkpoint_continues_identically_on_two_and_on_one(runs):
    ranks, _, checkpoints = runs
    for rank in ranks:  # its whole state, the same on both ranks, saved and loaded by 2 ranks
        for a, b in zip(rank["dcp/soap/reloaded"], rank["dcp/soap/continued"], strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    # one process loads it and trains on the whole batch (the 2 ranks: half batches; measured
    # 2e-12 apart after 3 more steps)
    got = dist_table.soap_load_on_one(checkpoints)
    for a, b in zip(got, ranks[0]["dcp/soap/continued"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_lookahead_slow_weights_under_zero_need_sync_zero_params(runs):
    # ZeRO's Lookahead (zero.optim) holds the slow weights of its own partition only: its
    # slow_weights() block swaps those, sync_zero_params(zero) inside it takes the owners'
    # (README, "Schedule-Free under ZeRO"), and again after it restores the fast weights
    ranks, _, _ = runs
    want = dist_table.lookahead_slow_single()

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, rtol=0, atol=1e-12)

    assert not any(map(close, want["slow"], want["fast"]))  # one fast step since the sync
    assert all(map(close, want["after"], want["fast"]))
    owned = []
    for rank in ranks:
        for key in ("fast", "slow", "after", "next"):
            for a, b in zip(rank[f"lookahead_slow/{key}"], want[key], strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        # before the sync: the slow weights of its own partition, the fast ones elsewhere
        unsynced = rank["lookahead_slow/unsynced"]
        own = list(map(close, unsynced, want["slow"]))
        assert all(o or close(a, f) for o, a, f in zip(own, unsynced, want["fast"], strict=True))
        owned.append(own)
    assert all(a != b for a, b in zip(*owned, strict=True))  # the partitions split the model


def test_sync_zero_params_refuses_another_optimizer():
    opt = oo.ScheduleFreeAdamW([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(TypeError, match="needs a torch.distributed.optim.ZeroRedundancyOptimizer"):
        sync_zero_params(opt)


def test_prodigy_sums_over_mixed_layouts_equal_plain_tensors(tmp_path):
    # one DTensor and one plain parameter in a group: split by layout (_by_layout), each part
    # reduced its own way (global_sums), every part counted once: the all-plain run's sums and
    # d, bit for bit (on one rank; 2 ranks hold one layout each in tests/dist_table.py)
    from torch.distributed.tensor import DeviceMesh, Shard, distribute_tensor

    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rv'}", rank=0, world_size=1)
    try:
        mesh = DeviceMesh("cpu", [0])
        gen = torch.Generator().manual_seed(0)
        starts = [torch.randn(8, 4, generator=gen, dtype=torch.float64) for _ in range(2)]
        grads = torch.randn(2, 8, 4, generator=gen, dtype=torch.float64)  # a steady direction
        grads = grads + 0.1 * torch.randn(4, 2, 8, 4, generator=gen, dtype=torch.float64)
        mixed = [
            torch.nn.Parameter(distribute_tensor(starts[0].clone(), mesh, [Shard(0)])),
            torch.nn.Parameter(starts[1].clone()),
        ]
        plain = [torch.nn.Parameter(s.clone()) for s in starts]
        opts = [oo.Prodigy(mixed, d0=1e-3), oo.Prodigy(plain, d0=1e-3)]
        for g in grads:
            mixed[0].grad = distribute_tensor(g[0].clone(), mesh, [Shard(0)])
            mixed[1].grad, plain[0].grad, plain[1].grad = g[1].clone(), g[0].clone(), g[1].clone()
            for opt in opts:
                opt.step()
        assert opts[0].param_groups[0]["d"] > 1e-3  # d moved: the sums were used
        for key in ("d", "d_numerator", "d_denom"):
            assert opts[0].param_groups[0][key] == opts[1].param_groups[0][key], key
        torch.testing.assert_close(mixed[0].full_tensor(), plain[0], rtol=0, atol=0)
        torch.testing.assert_close(mixed[1], plain[1], rtol=0, atol=0)
    finally:
        dist.destroy_process_group()
