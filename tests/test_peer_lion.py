"""Lion against the authors' reference package (``lion-pytorch``) and Optax, in float64.

Chen et al. 2023 decay decoupled (``p <- p - lr * (sign(c) + wd * p)``); ``lion-pytorch``
multiplies by ``1 - lr * wd`` first and Optax adds ``wd * p`` to the sign: the same update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from helpers import needs_optax, peer
from test_peer_optimizers import problem, run_optax, run_ours

SETTINGS = [
    {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.0},
    {"lr": 0.003, "betas": (0.95, 0.98), "weight_decay": 0.5},
]


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("fused", [True, False])
def test_lion_equals_lion_pytorch(kwargs, fused):
    TheirLion = peer("lion_pytorch").Lion

    param, grads = problem(3)
    p = torch.tensor(param, requires_grad=True)
    theirs = TheirLion([p], **kwargs)
    for g in grads:
        p.grad = torch.tensor(g)
        theirs.step()
    ours = run_ours(oo.Lion, kwargs, param, grads, fused=fused)
    np.testing.assert_allclose(ours, p.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert not np.allclose(ours, param)  # it moved


@pytest.mark.parametrize("kwargs", SETTINGS)
def test_lion_equals_optax(kwargs):
    param, grads = problem(4)
    b1, b2 = kwargs["betas"]
    ours = run_ours(oo.Lion, kwargs, param, grads)

    optax = needs_optax()
    transform = optax.lion(kwargs["lr"], b1=b1, b2=b2, weight_decay=kwargs["weight_decay"])
    np.testing.assert_allclose(ours, run_optax(transform, param, grads), rtol=1e-12, atol=1e-14)
