"""``fused=True`` off the CPU runs torch's fused kernel: what can be checked without a GPU.

The dispatch decision with the device check mocked, the errors, and torch's fused kernel driven
through the rule (``run_torch_foreach(..., fused=True)``) on the CPU, where torch has the same
fused kernels: bitwise ``torch.optim.X(fused=True)``. tests/cuda/test_cuda.py checks the same
equality on CUDA.
"""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo
from engine.table import ELEMENTWISE, assert_steps_as_twin, clone, ids, make_params
from optimist.optim import engine
from optimist.optim.eager import torch_fused_available

CPU = torch.device("cpu")
META = torch.device("meta")  # not a device torch runs fused kernels on: stands for "no kernel"
# one row per rule with a torch functional (the classic nine)
CLASSIC = list(
    {
        row.entry.factory: row
        for row in reversed(ELEMENTWISE)
        if row.entry.torch_twin is not None and row.entry.cls.rule.torch_foreach is not None
    }.values()
)[::-1]
FUSED = [row for row in CLASSIC if torch_fused_available(row.entry.cls.rule, CPU)]


def test_the_rules_with_a_torch_fused_kernel_are_adam_adamw_sgd_adagrad():
    assert {row.entry.cls.__name__ for row in FUSED} == {"Adam", "AdamW", "SGD", "Adagrad"}
    assert not torch_fused_available(oo.Lion.rule, CPU)
    assert not torch_fused_available(oo.Adam.rule, META)


def _group_and_device_tensor(opt):
    return opt.param_groups[0], [torch.empty(3, device=META)]


def test_fused_off_the_cpu_takes_torch_fused_kernel_where_torch_has_one(monkeypatch):
    monkeypatch.setattr(engine, "torch_fused_available", lambda rule, device: True)
    opt = oo.Adam(make_params(), fused=True)
    assert opt._implementation(*_group_and_device_tensor(opt)) == "torch_fused"


def test_fused_off_the_cpu_without_a_kernel_names_the_alternatives():
    opt = oo.Lion(make_params(), fused=True)
    lion = r"Lion has no fused kernel on meta .*use fused=None \(the eager path\)$"
    with pytest.raises(RuntimeError, match=lion):
        opt._implementation(*_group_and_device_tensor(opt))
    opt = oo.RMSprop(make_params(), fused=True)
    rmsprop = r"use fused=None \(torch's foreach kernel\) or foreach=False"
    with pytest.raises(RuntimeError, match=rmsprop):
        opt._implementation(*_group_and_device_tensor(opt))


@pytest.mark.parametrize("settings", [{"state_dtype": "int8"}, {"stochastic_params": True}])
def test_fused_off_the_cpu_refuses_what_torch_fused_kernel_lacks(monkeypatch, settings):
    monkeypatch.setattr(engine, "torch_fused_available", lambda rule, device: True)
    opt = oo.AdamW(make_params(), fused=True, **settings)
    with pytest.raises(RuntimeError, match="has no state_dtype, chain transforms"):
        opt._implementation(*_group_and_device_tensor(opt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("row", FUSED, ids=ids)
def test_torch_fused_path_equals_torch_fused(row, dtype, monkeypatch):
    """The path fused=True takes on an accelerator, forced on the CPU: bitwise torch.optim's
    ``fused=True``, parameters and state (``step`` moved to float32 as torch keeps it)."""
    settings = {**row.entry.defaults, **row.kwargs}
    a = make_params(dtype, shapes=[(6, 5), (4, 3), (7,)])
    b = clone(a)
    ours = row.build(a, fused=True)
    monkeypatch.setattr(ours, "_implementation", lambda group, params: "torch_fused")
    theirs = row.entry.torch_twin(b, fused=True, **settings)
    assert_steps_as_twin(ours, theirs, a, b, same_dtypes=True)


def test_rank_sums_go_through_the_collective_device_of_the_backend(monkeypatch):
    """NCCL has no CPU collectives: the all-gather of clip_by_global_norm's, skip_nonfinite's
    and Prodigy's per-rank sums runs on the current GPU under NCCL, on the CPU under gloo."""
    from optimist.optim import distributed

    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "gloo")
    assert distributed.collective_device() == CPU
    monkeypatch.setattr(torch.distributed, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert distributed.collective_device() == torch.device("cuda", 0)


def test_fused_is_refused_where_torch_optim_own_class_refuses_it(monkeypatch):
    """A registered kernel is not enough: torch 2.11's ``Adagrad`` refuses ``fused=True`` on CUDA
    although ``aten::_fused_adagrad_`` has a CUDA kernel. optimist asks the twin class, so it
    refuses where torch.optim does (here: an Adagrad that refuses the CPU too)."""
    from optimist.optim import eager

    assert torch_fused_available(oo.Adagrad.rule, CPU)
    original = torch.optim.Adagrad._init_group

    def refuses(self, group, *args, **kwargs):  # noqa: ANN001
        if group["fused"]:  # where torch 2.11 checks it: in the first step, not the constructor
            raise RuntimeError("`fused=True` requires ... supported devices: ['mps']")
        return original(self, group, *args, **kwargs)

    eager._twin_takes_fused.cache_clear()
    monkeypatch.setattr(torch.optim.Adagrad, "_init_group", refuses)
    try:
        assert not torch_fused_available(oo.Adagrad.rule, CPU)
        assert torch_fused_available(oo.Adam.rule, CPU)
    finally:
        eager._twin_takes_fused.cache_clear()
