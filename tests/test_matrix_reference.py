"""Muon, Adafactor, LAMB and LARS against their NumPy references, float64, step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from optimist import reference

SHAPES = [(6, 4), (6, 4), (3, 8), (2, 3, 2, 2), (5,), ()]
STEPS = 12


@pytest.fixture(autouse=True)
def float64_default():
    """torch keeps ``step`` in the default dtype; the reference keeps it exact."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


CASES = [
    (oo.Muon, reference.muon, {"ns_dtype": None}, {}),
    (
        oo.Muon,
        reference.muon,
        {"ns_dtype": None, "lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
        {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"},
    ),
    (
        oo.Muon,
        reference.muon,
        {"ns_dtype": None, "momentum": 0.8, "ns_steps": 3, "adamw_lr": 0.01, "adamw_eps": 1e-6},
        {"momentum": 0.8, "ns_steps": 3, "adamw_lr": 0.01, "adamw_eps": 1e-6},
    ),
    (oo.Adafactor, reference.adafactor, {}, {}),
    (oo.Adafactor, reference.adafactor, *[{"lr": 0.05, "weight_decay": 0.1, "d": 2.0}] * 2),
    (oo.Adafactor, reference.adafactor, *[{"eps": (1e-20, 1e-2), "maximize": True}] * 2),
    (oo.Adafactor, reference.adafactor, *[{"eps": (1e-30, 1e-3), "eps1_form": "add"}] * 2),
    (oo.Adafactor, reference.adafactor, *[{"lr": 0.5, "d": 2.0, "eps1_form": "add"}] * 2),
    (oo.LAMB, reference.lamb, {}, {}),
    (oo.LAMB, reference.lamb, *[{"lr": 0.01, "betas": (0.8, 0.9), "weight_decay": 0.1}] * 2),
    (oo.LAMB, reference.lamb, *[{"eps": 1e-3, "maximize": True}] * 2),
    (oo.LARS, reference.lars, {}, {}),
    (oo.LARS, reference.lars, *[{"lr": 0.5, "weight_decay": 0.01, "nesterov": True}] * 2),
    (oo.LARS, reference.lars, *[{"trust_coefficient": 0.02, "eps": 1e-3, "maximize": True}] * 2),
    (oo.LARS, reference.lars, *[{"lr": 0.5, "nesterov": True, "lr_inside_momentum": False}] * 2),
    (oo.LARS, reference.lars, *[{"weight_decay": 0.1, "trust_ratio_form": "paper"}] * 2),
]


@pytest.mark.parametrize(
    ("cls", "rule", "ours_kwargs", "ref_kwargs"),
    CASES,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)],
)
def test_matches_numpy_reference_step_by_step(cls, rule, ours_kwargs, ref_kwargs):
    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s) for s in SHAPES]
    params = [torch.tensor(v, requires_grad=True) for v in values]
    opt = cls(params, **ours_kwargs)
    states: list[dict] = [{} for _ in SHAPES]
    for t in range(STEPS):
        grads = [rng.standard_normal(s) for s in SHAPES]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
        for i, g in enumerate(grads):
            values[i], states[i] = rule(values[i], g, states[i], **ref_kwargs)
        for p, v in zip(params, values, strict=True):
            scale = max(float(np.max(np.abs(v))), 1e-300)
            error = float(np.max(np.abs(p.detach().numpy() - v))) / scale
            assert error < 1e-10, (t, p.shape, error)
    for p, state in zip(params, states, strict=True):
        for key, value in state.items():
            mine = opt.state[p][key]
            mine = mine.item() if key == "step" else mine.numpy()
            np.testing.assert_allclose(mine, value, rtol=1e-10, atol=1e-300, err_msg=key)


def test_reference_muon_orthogonalises():
    """Newton-Schulz (5 quintic steps) puts every singular value of the update in ~[0.7, 1.2]."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((12, 7))
    ortho = reference.newton_schulz(g, (3.4445, -4.775, 2.0315), 5, 1e-7)
    singular = np.linalg.svd(ortho, compute_uv=False)
    assert ortho.shape == g.shape and singular.min() > 0.6 and singular.max() < 1.25


def test_matrix_references_reject_complex():
    with pytest.raises(ValueError, match="real"):
        reference.soap(np.zeros((2, 2), complex), np.ones((2, 2), complex), {})
