"""DTensor (FSDP2) parameters in a one-process device mesh: the engine runs on local shards."""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo

from .table import ELEMENTWISE, ids, make_params, needs_engine, set_grads

# one row per rule (its first example) keeps this file quick
ONE_PER_RULE = list({row.entry.factory: row for row in reversed(ELEMENTWISE)}.values())[::-1]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    dist = torch.distributed
    from torch.distributed.tensor import DeviceMesh

    owned = not dist.is_initialized()
    if owned:
        rendezvous = tmp_path_factory.mktemp("dtensor") / "rendezvous"
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=0, world_size=1)
    try:
        yield DeviceMesh("cpu", [0])
    finally:
        if owned:
            dist.destroy_process_group()


def _replicate(tensor, mesh):
    from torch.distributed.tensor import Replicate, distribute_tensor

    return distribute_tensor(tensor, mesh, [Replicate()])


@pytest.mark.parametrize("row", ONE_PER_RULE, ids=ids)
def test_dtensor_parameters_equal_plain_tensors(row, mesh, recwarn):
    needs_engine()
    plain = make_params(torch.float64, shapes=[(6, 4), (5,)])
    wrapped = [torch.nn.Parameter(_replicate(p.detach().clone(), mesh)) for p in plain]
    ours, ref = row.build(wrapped, fused=True), row.build(plain, fused=True)
    for step in range(3):
        set_grads([plain], step)
        for w, p in zip(wrapped, plain, strict=True):
            w.grad = _replicate(p.grad.clone(), mesh)
        ours.step()
        ref.step()
    for w, p in zip(wrapped, plain, strict=True):  # the same C++ engine call: bitwise
        torch.testing.assert_close(w.full_tensor().detach(), p.detach(), rtol=0, atol=0)
    # the engine took the local shards: no "tensor subclass ... per-tensor path" warning
    assert not [w for w in recwarn if "tensor subclass" in str(w.message)]


def test_foreach_on_dtensors_takes_the_per_tensor_path_with_dtensor_state(mesh):
    """foreach=True (torch's kernel for plain tensors): DTensors take the per-tensor path, and
    the state made from the first gradient is a DTensor like its parameter."""
    needs_engine()
    plain = make_params(torch.float64, shapes=[(6, 4), (5,)])
    wrapped = [torch.nn.Parameter(_replicate(p.detach().clone(), mesh)) for p in plain]
    set_grads([plain], 0)
    for w, p in zip(wrapped, plain, strict=True):
        w.grad = _replicate(p.grad.clone(), mesh)
    sgd = oo.SGD(wrapped, lr=0.01, momentum=0.9, foreach=True)
    sgd.step()
    buffers = [sgd.state[w]["momentum_buffer"] for w in wrapped]
    assert all(isinstance(b, type(wrapped[0].data)) for b in buffers)
    for b, w in zip(buffers, wrapped, strict=True):
        torch.testing.assert_close(b.full_tensor(), w.grad.full_tensor(), rtol=0, atol=0)
