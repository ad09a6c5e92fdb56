"""The batched accelerator paths of LAMB, LARS and Adafactor, and Prodigy's global pass.

On an accelerator (by default) or with ``foreach=True`` (how the CPU reaches them), LAMB and
LARS step flat buckets with their trust ratios on the device, and Adafactor stacks same-shape
parameters. On the CPU they are bitwise the per-tensor path (and Adafactor torch's); on a GPU
the reductions may round differently (``torch._foreach_norm`` is another kernel), so there the
results are compared within float32 tolerances. ``OPTIMIST_TEST_DEVICE=cpu`` runs this here.
"""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo
from helpers import device_under_test, requires_device
from optimist.optim import adafactor as adafactor_module
from optimist.optim import bucket

DEVICE = device_under_test()
pytestmark = requires_device
EXACT = DEVICE is not None and DEVICE.type == "cpu"  # None: no device, every test skips
# repeated shapes (stacked together), vectors and 0-dim (flat), a zero parameter (trust ratio
# 1), a 3-D weight, and one above the CPU's bucket limit (stepped alone)
SHAPES = [(10, 10), (10, 10), (100,), (3,), (), (7, 3, 2), (7, 3, 2), (5, 4), (1,), (64, 80)]
SHAPES += [(64, 80), (bucket.CPU_TENSOR_MAX + 1,)]
ZERO = 8


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    params[ZERO].zero_()
    return [p.to(DEVICE).requires_grad_() for p in params]


def _run(make, dtype: torch.dtype, steps: int = 4) -> tuple[list[torch.Tensor], object]:
    """``steps`` steps of ``make(params)``; parameter 1 has no gradient in the first step (it
    joins a step later: another step count, another bucket)."""
    params = _params(dtype)
    opt = make(params)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            g = torch.randn(p.shape, generator=gen, dtype=dtype).to(DEVICE)
            p.grad = None if (step == 0 and i == 1) else g
        opt.step()
    return params, opt


def _assert_same(a, opt_a, b, opt_b) -> None:
    for pa, pb in zip(a, b, strict=True):
        tensors = [(pa, pb)] + [
            (v, opt_b.state[pb][k]) for k, v in opt_a.state[pa].items() if k != "step"
        ]
        for x, y in tensors:
            if EXACT:
                assert torch.equal(x, y), (x - y).abs().max().item()
            else:
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


TRUST = [
    (oo.LAMB, {"lr": 0.01, "weight_decay": 0.1}),
    (oo.LAMB, {"lr": 0.01, "maximize": True}),
    (oo.LARS, {"lr": 1.0, "weight_decay": 0.01, "nesterov": True}),
    (oo.LARS, {"lr": 0.5, "momentum": 0.5, "eps": 1e-3, "maximize": True}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cls,kwargs", TRUST, ids=lambda x: getattr(x, "__name__", str(x)))
def test_trust_ratio_buckets_equal_the_per_tensor_path(cls, kwargs, dtype, monkeypatch):
    runs: list[int] = []
    flat = cls._flat_step

    def spy(self, group, params):
        runs.append(len(params))
        return flat(self, group, params)

    monkeypatch.setattr(cls, "_flat_step", spy)
    a, fast = _run(lambda ps: cls(ps, foreach=True, **kwargs), dtype)
    b, slow = _run(lambda ps: cls(ps, foreach=False, **kwargs), dtype)
    assert runs and max(runs) >= 9  # most tensors went through the buckets
    _assert_same(a, fast, b, slow)


ADAFACTOR = [{}, {"lr": 0.05, "weight_decay": 0.1, "d": 2.0}]
ADAFACTOR += [{"lr": 0.01, "beta2_decay": -0.5, "eps": (1e-20, 1e-2), "maximize": True}]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kwargs", ADAFACTOR, ids=["default", "decay", "maximize"])
def test_adafactor_stacks_equal_torch_and_the_per_tensor_path(kwargs, dtype, monkeypatch):
    calls: list[str] = []
    for name in ("_stacked_step", "_flat_step"):
        original = getattr(oo.Adafactor, name)

        def spy(self, group, params, original=original, name=name):
            calls.append(name)
            return original(self, group, params)

        monkeypatch.setattr(oo.Adafactor, name, spy)
    a, fast = _run(lambda ps: oo.Adafactor(ps, foreach=True, **kwargs), dtype)
    assert {"_stacked_step", "_flat_step"} <= set(calls)
    b, slow = _run(lambda ps: oo.Adafactor(ps, foreach=False, **kwargs), dtype)
    _assert_same(a, fast, b, slow)
    c, theirs = _run(lambda ps: torch.optim.Adafactor(ps, foreach=False, **kwargs), dtype)
    _assert_same(a, fast, c, theirs)


def test_the_accelerator_default_is_the_batched_path():
    params = _params(torch.float32)
    for cls in (oo.LAMB, oo.LARS):
        group = cls(params).param_groups[0]
        got = cls(params)._implementation(group, params)
        assert got == "foreach" if DEVICE.type != "cpu" else got in ("fused", "single")
        assert cls._implementation(None, {**group, "foreach": False}, params) == "single"
        assert cls._implementation(None, {**group, "foreach": True}, params) == "foreach"
    called = []
    opt = oo.Adafactor(params)
    original = opt._foreach_step
    opt._foreach_step = lambda group, ps: called.append(1) or original(group, ps)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert called  # Adafactor's default on every device (bitwise the per-tensor path on the CPU)


def test_adafactor_keeps_odd_tensors_per_tensor():
    """bfloat16, a shape met once and tensors above the limit step per tensor, as before."""
    opt = oo.Adafactor([torch.zeros(2, 2, device=DEVICE, requires_grad=True)], foreach=True)
    group = opt.param_groups[0]
    odd = [
        torch.randn(4, 4, device=DEVICE, dtype=torch.bfloat16),
        torch.randn(3, 3, device=DEVICE),
        torch.randn(adafactor_module._stack_max(DEVICE) + 1, device=DEVICE),
    ]
    for p in odd:
        p.grad = torch.randn_like(p)
        adafactor_module._init_state(p, opt.state[p])
    assert sorted(map(id, opt._foreach_step(group, odd))) == sorted(map(id, odd))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_prodigy_total_sums_agree_with_the_per_tensor_sums(dtype, monkeypatch):
    """On accelerators Prodigy's global pass sums every tensor at once (``_total_sums``):
    the same sums as prodigyopt's per tensor, added in another order."""
    from optimist.optim import prodigy

    runs = {}
    for flat in (False, True):
        monkeypatch.setattr(prodigy, "_flat_sums", lambda params, ss, flat=flat: flat)
        params = _params(dtype)
        targets = [torch.ones_like(p) for p in params]
        opt = oo.Prodigy(params, foreach=True, weight_decay=0.1)
        for _ in range(8):  # gradients towards the targets: d grows
            for p, c in zip(params, targets, strict=True):
                p.grad = p.detach() - c
            opt.step()
        runs[flat] = params, opt
    (a, fast), (b, slow) = runs[True], runs[False]
    d_fast, d_slow = fast.param_groups[0]["d"], slow.param_groups[0]["d"]
    assert d_fast > 10 * fast.param_groups[0]["d0"]  # d moved: the sums were exercised
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    assert d_fast == pytest.approx(d_slow, rel=rtol)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=rtol * 1e-2)
