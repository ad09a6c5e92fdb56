"""lr_finder: the Smith range test restores everything and suggests a sensible learning rate."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import optimist


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))


def test_lr_finder_restores_model_optimizer_and_rng_and_suggests(tmp_path):
    net = _net()
    opt = optimist.optim.SGD(net.parameters(), lr=0.123, momentum=0.9)
    x, y = _digits()
    # give the optimizer some state first, to check that it comes back unchanged
    loss = nn.functional.cross_entropy(net(torch.tensor(x[:32])), torch.tensor(y[:32]))
    loss.backward()
    opt.step()
    before = copy.deepcopy(net.state_dict())
    opt_before = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    net.eval()

    result = optimist.lr_finder(net, (x, y), optimizer=opt, loss="cross_entropy", steps=80)

    assert not net.training
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    after = opt.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    for k, s in opt_before["state"].items():
        assert torch.equal(after["state"][k]["momentum_buffer"], s["momentum_buffer"])
    assert len(result.lrs) == len(result.losses) > 20
    assert result.lrs == sorted(result.lrs)
    # SGD with momentum on digits trains well around 1e-2..1
    assert result.suggestion is not None and 1e-3 <= result.suggestion <= 2.0
    assert "loss" in result.stopped or result.stopped == "reached end_lr"
    path = result.plot(tmp_path / "lr.png")
    assert path.stat().st_size > 1000


def test_lr_finder_takes_batches_and_names():
    x, y = _digits()
    batches = [
        (torch.tensor(x[i : i + 64]), torch.tensor(y[i : i + 64])) for i in range(0, 640, 64)
    ]
    net = _net()
    result = optimist.monitor.lr_finder(net, batches, optimizer="adam", steps=30)
    assert len(result.lrs) >= 5


def test_lr_finder_bad_input():
    net = _net()
    x, y = _digits()
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        optimist.lr_finder(net, (x, y), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="unknown loss"):
        optimist.lr_finder(net, (x, y), loss="hinge-ish")
    with pytest.raises(ValueError, match="different lengths"):
        optimist.lr_finder(net, (x, y[:10]))
    with pytest.raises(ValueError, match="no data"):
        optimist.lr_finder(net, [])
    with pytest.raises(ValueError, match="steps"):
        optimist.lr_finder(net, (x, y), steps=1)
