"""The bucketed eager path on the device (optimist.optim.bucket): bitwise the per-tensor path
there, for every element-wise rule, and it is what runs by default on an accelerator.

Skipped without CUDA; ``OPTIMIST_TEST_DEVICE=cpu`` runs it on the CPU (with ``foreach=True``,
since the CPU default is the C++ engine). The torch path is switched off so that the classic
rules take the buckets too (as they do with ``state_dtype`` or a chain).
"""

from __future__ import annotations

import pytest
import torch

from engine.table import ELEMENTWISE, ids, make_params
from helpers import device_under_test, requires_device
from optimist.optim import bucket, engine
from optimist.optim.transforms import ChainConfig

DEVICE = device_under_test()
pytestmark = requires_device
SHAPES = [(64, 80), (300,), (7,), (), (3, 5), (40,), (2, 2, 2)]


@pytest.fixture
def buckets_run(monkeypatch):
    calls: list[int] = []
    original = bucket._run_bucket

    def spy(rule, group, batch, *args, **kwargs):
        calls.append(len(batch.params))
        return original(rule, group, batch, *args, **kwargs)

    monkeypatch.setattr(bucket, "_run_bucket", spy)
    monkeypatch.setattr(engine.RuleOptimizer, "_torch_path_applies", lambda self, group: False)
    return calls


def _run(row, foreach, **extra):
    params = [p.detach().to(DEVICE).requires_grad_() for p in make_params(shapes=SHAPES)]
    opt = row.build(params, foreach=foreach, **extra)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(DEVICE)
        opt.step()
    return params, opt


@pytest.mark.parametrize("row", ELEMENTWISE, ids=ids)
@pytest.mark.parametrize("extra", ["plain", "chain-bf16"])
def test_bucketed_equals_per_tensor_on_the_device(row, extra, buckets_run):
    kwargs = {}
    if extra == "chain-bf16":
        masked = row.entry.name != "prodigy"  # Prodigy refuses decay in the chain
        kwargs = dict(
            state_dtype="bfloat16",
            maximize=True,
            chain=ChainConfig(
                clip_value=0.8,
                decay_after=[(0.1, lambda p: p.dim() >= 1)] if masked else [],
                ema=0.9,
            ),
        )
    default = True if DEVICE.type == "cpu" else None  # the accelerator's default buckets
    a, fast = _run(row, default, **kwargs)
    if extra == "chain-bf16":
        kwargs["chain"] = ChainConfig(**vars(kwargs["chain"]))
    b, slow = _run(row, False, **kwargs)
    assert buckets_run and max(buckets_run) >= 5
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb), (row.id, (pa - pb).abs().max().item())
        for key, value in fast.state[pa].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, slow.state[pb][key]), (row.id, key)
