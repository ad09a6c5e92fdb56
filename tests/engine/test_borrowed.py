"""The engine's entry points that read Python lists of tensors without copying them (``plan``,
``advance_steps``, ``scale_scalars``, ``unsupported_indices``, ``prodigy_plan_stats``) and its
``grads`` (``[p.grad for p in params]`` with the cache misses fetched ahead): the same objects
and results as the Python they replace, the lists kept alive by a plan, a clear error for what
is not a tensor."""

from __future__ import annotations

import gc

import pytest
import torch
from torch.overrides import TorchFunctionMode

from optimist.optim import engine

from .table import needs_engine


@pytest.fixture
def mod():
    needs_engine()
    return engine.load()


class _GradOverride(torch.Tensor):
    """A tensor subclass whose ``grad`` Python computes (so C++ must not read it directly)."""

    @property
    def grad(self):  # type: ignore[override]
        return "from python"


class _CountGrad(TorchFunctionMode):
    """A torch function mode that sees every ``.grad`` read (as ``Tensor.grad.__get__``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        owner = repr(getattr(func, "__self__", None))  # the getset descriptor of the attribute
        if getattr(func, "__name__", "") == "__get__" and "'grad'" in owner:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def test_grads_are_the_very_objects_python_reads(mod) -> None:
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(40)] + [torch.randn(2)]
    for i, p in enumerate(params):
        if i % 7 != 3:
            p.grad = torch.randn_like(p)
    expected = [p.grad for p in params]
    got = mod.grads(params)
    assert len(got) == len(expected) and all(map(lambda a, b: a is b, got, expected))
    assert got[3] is None and mod.grads(tuple(params))[3] is None
    assert mod.grads([]) == []
    subclass = torch.randn(2).as_subclass(_GradOverride)
    assert mod.grads([params[0], subclass])[1] == "from python"


def test_grads_under_a_torch_function_mode_go_through_python(mod) -> None:
    params = [torch.nn.Parameter(torch.randn(3)) for _ in range(5)]
    for p in params:
        p.grad = torch.ones(3)
    with _CountGrad() as python:
        expected = [p.grad for p in params]
    with _CountGrad() as native:
        got = mod.grads(params)
    assert python.reads == len(params)  # (the mode sees Python's reads: the test can tell)
    assert native.reads == python.reads
    assert all(map(lambda a, b: a is b, got, expected))


def test_a_plan_keeps_its_lists_alive(mod) -> None:
    """The plan borrows the tensors of its lists: it holds the lists, so the tensors outlive
    the caller's references until run."""
    p = torch.zeros(300)
    reference = torch.zeros(300)
    plan = mod.plan([[p], [torch.full((300,), 2.0)], [torch.zeros(300)], []], [], [], [],
                    False, False, False)  # fmt: skip
    gc.collect()
    torch.randn(10_000)  # (memory reused if the gradient had been freed)
    # SGD with momentum (h: momentum, 1 - dampening, -lr), its buffer's first step (fresh)
    mod.run(plan, "sgd", [True], 1, [0.9, 1.0, -0.5], [True], 1.0, 0.0, True, False, [], [],
            0.0, 1.0, 0.0, 0)  # fmt: skip
    reference.add_(torch.full((300,), 2.0), alpha=-0.5)
    assert torch.equal(p, reference)


def test_what_is_not_a_tensor_is_a_clear_error(mod) -> None:
    p = torch.zeros(3)
    with pytest.raises(RuntimeError, match=r"lists\[1\]\[0\] is not a tensor"):
        mod.plan([[p], [p, "x"][1:], [], []], [], [], [], False, False, False)
    with pytest.raises(TypeError, match="expected a list of tensors"):
        mod.plan([[p], 3, [], []], [], [], [], False, False, False)
    with pytest.raises(RuntimeError, match=r"steps\[0\] is not a tensor"):
        mod.advance_steps([1.0])
    with pytest.raises(TypeError):
        mod.grads(5)


def test_steps_and_scalars_from_lists_and_tuples(mod) -> None:
    steps = (torch.tensor(3.0), torch.tensor(3.0, dtype=torch.float64))
    assert mod.advance_steps(steps) == 4.0 and mod.advance_steps(list(steps)) == 5.0
    assert [float(s) for s in steps] == [5.0, 5.0]
    xs = [torch.tensor(2.0), torch.tensor(3.0)]
    value = mod.scale_scalars(xs, 0.5)
    assert value != value and [float(x) for x in xs] == [1.0, 1.5]  # NaN: not common
    assert mod.unsupported_indices([[torch.zeros(2)], [torch.zeros(3)]]) == [0]
