"""Dispatch and bookkeeping: registry, stochastic parameter rounding, many small tensors, the
version counter, OPTIMIST_DISABLE_FUSED and a failed build."""

from __future__ import annotations

import torch

import optimist
import optimist.optim as oo
from optimist.optim import engine

from .table import clone, needs_engine, set_grads


def test_lion_is_registered_by_name():
    opt = optimist.optimizer("lion", [torch.zeros(2, requires_grad=True)])
    assert isinstance(opt, oo.Lion) and opt.defaults["lr"] == 1e-4


def test_stochastic_params_round_bf16_updates_without_bias():
    """Updates far below a bfloat16 ulp still move the parameter on average (pure-bf16)."""
    needs_engine()
    n = 50_000
    nearest = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    stochastic = torch.ones(n, dtype=torch.bfloat16, requires_grad=True)
    opts = [
        oo.SGD([nearest], lr=1e-4),
        oo.SGD([stochastic], lr=1e-4, stochastic_params=True),
    ]
    for _ in range(20):
        for p, opt in zip((nearest, stochastic), opts, strict=True):
            p.grad = torch.ones(n, dtype=torch.bfloat16)
            opt.step()
    assert torch.all(nearest == 1.0)  # 1e-4 is far below half an ulp of 1.0 (2^-8)
    expected = 1.0 - 20 * 1e-4
    assert abs(stochastic.float().mean().item() - expected) < 2e-4


def test_many_small_tensors_take_the_tensor_parallel_path():
    needs_engine()
    gen = torch.Generator().manual_seed(5)
    a = [
        torch.randn(300 + i, generator=gen, dtype=torch.float64).requires_grad_()
        for i in range(400)
    ]
    b = clone(a)
    fused = oo.AdamW(a, lr=0.01, fused=True)
    eager = oo.AdamW(b, lr=0.01, foreach=False)
    for step in range(3):
        set_grads([a, b], step)
        fused.step()
        eager.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def test_version_counter_is_bumped():
    needs_engine()
    p = torch.randn(10, requires_grad=True)
    p.grad = torch.randn(10)
    before = p._version
    oo.Adam([p], lr=0.1, fused=True).step()
    assert p._version > before


def test_disable_env_var(monkeypatch):
    monkeypatch.setenv("OPTIMIST_DISABLE_FUSED", "1")
    assert engine.available() is False
    p = torch.ones(3, requires_grad=True)
    p.grad = torch.ones(3)
    opt = oo.Adam([p], lr=0.1)
    assert opt._implementation(opt.param_groups[0], [p]) == "single"
    opt.step()
    assert p[0].item() < 1.0
    monkeypatch.delenv("OPTIMIST_DISABLE_FUSED")


def test_failed_build_warns_once_and_falls_back(tmp_path):
    """With no compiler, available() is False with one warning, and load() says why."""
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import warnings
        import torch
        import optimist.optim as oo
        from optimist.optim import engine, native
        native.NAME_PREFIX = "optimist_engine_test_no_compiler"
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            assert engine.available() is False
            assert engine.available() is False
            p = torch.ones(3, requires_grad=True)
            p.grad = torch.ones(3)
            oo.Adam([p], lr=0.1).step()
        assert len(w) == 1 and "per-tensor" in str(w[0].message), [str(x.message) for x in w]
        assert p[0].item() < 1.0
        try:
            engine.load()
        except RuntimeError as e:
            assert "compiler" in str(e), e
        else:
            raise AssertionError("load() should raise")
        print("ok")
        """
    )
    env = dict(os.environ, CXX="/nonexistent/c++", TORCH_EXTENSIONS_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
