"""FTRL-Proximal against ``pytorch_optimizer.FTRL`` (the paper's Algorithm 1 form), in float64.

McMahan et al. 2013 write the denominator ``(beta + sqrt(n)) / lr + lambda_2`` with ``n`` from
0, as ``pytorch_optimizer`` does; optimist follows TensorFlow and Keras, whose ``l2`` is half the
paper's ``lambda_2`` (``2 * l2`` in the denominator) and whose accumulator starts at
``initial_accumulator_value``. So ``optim.Ftrl(initial_accumulator_value=0, l2=lambda_2 / 2)``
is the paper's rule (``pytorch_optimizer`` takes the square root whatever ``lr_power``, so only
``lr_power=-0.5`` is the same rule in both).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from helpers import peer
from test_peer_optimizers import problem, run_ours

SETTINGS = [
    {"lr": 0.05},
    {"lr": 0.1, "beta": 1.0, "lambda_1": 0.5, "lambda_2": 0.3},
]


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("fused", [True, False])
def test_ftrl_equals_pytorch_optimizer(kwargs, fused):
    their_ftrl = peer("pytorch_optimizer").FTRL
    param, grads = problem(5)
    p = torch.tensor(param, requires_grad=True)
    theirs = their_ftrl([p], foreach=False, **kwargs)
    for g in grads:
        p.grad = torch.tensor(g)
        theirs.step()
    ours_kwargs = {
        "lr": kwargs["lr"],
        "beta": kwargs.get("beta", 0.0),
        "l1": kwargs.get("lambda_1", 0.0),
        "l2": kwargs.get("lambda_2", 0.0) / 2,
        "initial_accumulator_value": 0.0,
    }
    ours = run_ours(oo.Ftrl, ours_kwargs, param, grads, fused=fused)
    expected = p.detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(ours == 0, expected == 0)
    assert not np.allclose(ours, param)  # it moved
    if kwargs.get("lambda_1"):
        assert (ours == 0).any()  # and L1 zeroed some weights
