"""Regression tests for issue 7 (optimizers): aliasing, shapes, old checkpoints, copies, inputs.

Every test compares with torch.optim (``foreach=False``) as the oracle, for all nine optimizers.
"""

from __future__ import annotations

import copy
import decimal
import fractions
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import torch

import optimist.optim as oo

# name -> keyword arguments that exercise every state tensor of the rule
NINE: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.05, "momentum": 0.9},
    "Adagrad": {"lr": 0.1},
    "RMSprop": {"lr": 1e-2, "momentum": 0.5, "centered": True},
    "Adadelta": {"lr": 1.0},
    "Adam": {"lr": 1e-2, "amsgrad": True},
    "AdamW": {"lr": 1e-2},
    "Adamax": {"lr": 1e-2},
    "NAdam": {"lr": 1e-2},
    "RAdam": {"lr": 1e-2},
}
NAMES = list(NINE)


def pair(name: str, params_ours, params_torch, **overrides):
    kwargs = {**NINE[name], **overrides}
    ours = getattr(oo, name)(params_ours, **kwargs)
    theirs = getattr(torch.optim, name)(params_torch, foreach=False, **kwargs)
    return ours, theirs


def outcome(function) -> Any:
    """What ``function()`` returns, or its exception's type and message."""
    try:
        return function()
    except Exception as exc:  # the oracle's exception is part of the expected behaviour
        return (type(exc).__name__, str(exc).split("\n")[0])


# --- item 6: aliased parameters -----------------------------------------------------------


def aliased_params(storage: torch.Tensor) -> list[torch.Tensor]:
    """Two overlapping views of one storage (one small, one large enough to be split over
    threads), a separate tensor, and the small view listed twice."""
    small, large = storage[:1000], storage[500:40000]
    other = storage[40000:]
    return [small, large, other, small]


@pytest.mark.parametrize("name", NAMES)
def test_aliased_and_duplicate_params_match_torch(name):
    gen = torch.Generator().manual_seed(0)
    base_ours = torch.randn(41000, dtype=torch.float64, generator=gen)
    base_torch = base_ours.clone()
    params_ours, params_torch = aliased_params(base_ours), aliased_params(base_torch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about the duplicate
        # weight decay makes each update depend on the param's value, so order matters
        ours, theirs = pair(name, params_ours, params_torch, weight_decay=0.1)
    for _ in range(4):
        for a, b in zip(params_ours, params_torch, strict=True):
            grad = torch.randn(a.shape, dtype=torch.float64, generator=gen)
            a.grad, b.grad = grad, grad.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(base_ours, base_torch, rtol=1e-12, atol=1e-12)


# --- item 7: shapes of state ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("foreach", [None, False], ids=["fused", "single"])
def test_state_of_another_shape_raises_like_torch(name, foreach):
    def params(shapes):
        return [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]

    def train_then_swap(cls, kwargs) -> None:
        first = params([(2, 3), (3, 2)])
        opt = cls(first, **kwargs)
        for p in first:
            p.grad = torch.ones_like(p)
        opt.step()
        swapped = params([(3, 2), (2, 3)])
        again = cls(swapped, **kwargs)
        again.load_state_dict(opt.state_dict())
        for p in swapped:
            p.grad = torch.ones_like(p)
        again.step()

    with pytest.raises(RuntimeError):
        train_then_swap(getattr(torch.optim, name), {**NINE[name], "foreach": False})
    with pytest.raises(RuntimeError):
        train_then_swap(getattr(oo, name), {**NINE[name], "foreach": foreach})


# --- item 8: older checkpoints -------------------------------------------------------------


def _old_format(state_dict: dict[str, Any], as_int_tensor: bool) -> dict[str, Any]:
    state_dict = copy.deepcopy(state_dict)
    for p_state in state_dict["state"].values():
        for key in ("step", "mu_product"):
            if key in p_state:
                value = p_state[key].item()
                if key == "step" and as_int_tensor:
                    p_state[key] = torch.tensor(int(value), dtype=torch.int64)
                else:
                    p_state[key] = value  # torch < 1.12 stored Python numbers
    return state_dict


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("foreach", [None, False], ids=["fused", "single"])
@pytest.mark.parametrize("as_int_tensor", [False, True], ids=["number", "int64"])
def test_old_checkpoint_formats_load_and_train_like_torch(name, foreach, as_int_tensor):
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(5, dtype=torch.float64, generator=gen) for _ in range(2)]
    grads = [[torch.randn(5, dtype=torch.float64, generator=gen) for _ in start] for _ in range(6)]
    trained = [p.clone() for p in start]
    first = getattr(torch.optim, name)(trained, foreach=False, **NINE[name])
    for step_grads in grads[:3]:
        for p, g in zip(trained, step_grads, strict=True):
            p.grad = g
        first.step()
    checkpoint = _old_format(first.state_dict(), as_int_tensor)
    checkpoint["param_groups"][0]["foreach"] = foreach

    params_ours = [p.detach().clone() for p in trained]
    params_torch = [p.detach().clone() for p in trained]
    ours, theirs = pair(name, params_ours, params_torch)
    ours.load_state_dict(copy.deepcopy(checkpoint))  # torch keeps (shares) the tensors
    theirs.load_state_dict(checkpoint)
    for step_grads in grads[3:]:
        for a, b, g in zip(params_ours, params_torch, step_grads, strict=True):
            a.grad, b.grad = g, g.clone()
        ours.step()
        theirs.step()
    for a, b in zip(params_ours, params_torch, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(params_ours, params_torch, strict=True):
        for key in ("step", "mu_product"):
            if key in ours.state[a]:
                assert float(ours.state[a][key]) == pytest.approx(float(theirs.state[b][key]))


@pytest.mark.parametrize("name", NAMES)
def test_missing_group_key_gets_the_class_default(name):
    p = torch.zeros(2, requires_grad=True)
    checkpoint = getattr(oo, name)([p], **NINE[name]).state_dict()
    del checkpoint["param_groups"][0]["maximize"]
    ours = getattr(oo, name)([p], maximize=True, **NINE[name])
    theirs = getattr(torch.optim, name)([p], maximize=True, **NINE[name])
    ours.load_state_dict(checkpoint)
    theirs.load_state_dict(checkpoint)
    assert ours.param_groups[0]["maximize"] is theirs.param_groups[0]["maximize"] is False


# --- item 9: copies keep optimist's settings ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_keep_skip_nonfinite(name, how):
    p = torch.ones(3, requires_grad=True)
    opt = getattr(oo, name)([p], skip_nonfinite=True, **NINE[name])
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.skipped_steps == 1
    clone = copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))
    assert clone.skip_nonfinite is True
    assert clone.skipped_steps == 1
    (q,) = clone.param_groups[0]["params"]
    before = q.detach().clone()
    q.grad = torch.tensor([float("inf"), 0.0, 0.0])
    clone.step()
    assert clone.skipped_steps == 2
    assert torch.equal(q.detach(), before)


# --- item 10: real numbers of every kind -----------------------------------------------------

REALS = [np.float32(0.01), np.float64(0.01), fractions.Fraction(1, 100), decimal.Decimal("0.01")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", REALS, ids=lambda v: type(v).__name__)
def test_any_real_number_is_accepted_like_torch(name, lr):
    kwargs = {"momentum": np.int64(0)} if name == "SGD" else {}
    ours_p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    torch_p = torch.ones(4, dtype=torch.float64, requires_grad=True)
    ours = getattr(oo, name)([ours_p], lr=lr, **kwargs)
    theirs = getattr(torch.optim, name)([torch_p], lr=float(lr), foreach=False, **kwargs)
    for p, opt in ((ours_p, ours), (torch_p, theirs)):
        p.grad = torch.linspace(-1, 1, 4, dtype=torch.float64)
        opt.step()
    torch.testing.assert_close(ours_p, torch_p, rtol=1e-12, atol=1e-14)
    assert type(ours.param_groups[0]["lr"]) is float


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", [np.float64("nan"), True, np.bool_(True), "0.1"], ids=repr)
def test_nan_bool_and_strings_are_rejected(name, lr):
    with pytest.raises(ValueError, match="lr"):
        getattr(oo, name)([torch.ones(1, requires_grad=True)], lr=lr)


@pytest.mark.parametrize("name", NAMES)
def test_fused_and_foreach_together_is_a_runtime_error_as_in_torch(name):
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        getattr(oo, name)([torch.ones(1, requires_grad=True)], fused=True, foreach=True)


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_lr_with_foreach_raises_like_torch(name):
    p = torch.ones(1, requires_grad=True)
    for cls in (getattr(torch.optim, name), getattr(oo, name)):
        with pytest.raises(ValueError, match="lr as a Tensor is not supported"):
            cls([p], lr=torch.tensor(0.01), foreach=True)


# --- item 15: smaller differences from torch ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_inference_tensors_are_refused_like_torch(name):
    def run(cls, **kwargs):
        with torch.inference_mode():
            p = torch.ones(3)
        p.grad = torch.ones(3)
        cls([p], **{**NINE[name], **kwargs}).step()
        return p.tolist()

    expected = outcome(lambda: run(getattr(torch.optim, name), foreach=False))
    assert expected[0] == "RuntimeError"
    assert outcome(lambda: run(getattr(oo, name))) == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("dtype", "lr"),
    [(torch.float32, 1e300), (torch.float16, 1e5), (torch.bfloat16, 1e300), (torch.float64, 1e300)],
    ids=["float32", "float16", "bfloat16", "float64"],
)
def test_huge_lr_behaves_like_torch(name, dtype, lr):
    def run(cls, **kwargs):
        p = torch.ones(3, dtype=dtype, requires_grad=True)
        p.grad = torch.ones(3, dtype=dtype)
        cls([p], **{**NINE[name], "lr": lr, **kwargs}).step()
        return p.tolist()

    assert outcome(lambda: run(getattr(oo, name))) == outcome(
        lambda: run(getattr(torch.optim, name), foreach=False)
    )


@pytest.mark.parametrize("lr", [1, 0.5])
def test_sgd_on_integer_params_like_torch(lr):
    def run(cls):
        p = torch.tensor([5, 7, 9])
        p.grad = torch.tensor([1, 2, 3])
        cls([p], lr=lr).step()
        return p.tolist()

    assert outcome(lambda: run(oo.SGD)) == outcome(lambda: run(torch.optim.SGD))


def tensor_lr_error(name: str, **implementation: Any) -> float:
    """Max relative difference from torch.optim after 50 float64 steps with ``lr`` a float32
    tensor (3 params of 1000 elements, seed 0); the README quotes these numbers."""
    gen = torch.Generator().manual_seed(0)
    ours_p = [torch.randn(1000, dtype=torch.float64, generator=gen) for _ in range(3)]
    torch_p = [p.clone() for p in ours_p]
    kwargs = {k: v for k, v in NINE[name].items() if k != "lr"}
    ours = getattr(oo, name)(ours_p, lr=torch.tensor(0.01), **kwargs, **implementation)
    theirs = getattr(torch.optim, name)(torch_p, lr=torch.tensor(0.01), foreach=False, **kwargs)
    for _ in range(50):
        for a, b in zip(ours_p, torch_p, strict=True):
            grad = torch.randn(1000, dtype=torch.float64, generator=gen)
            a.grad, b.grad = grad, grad.clone()
        ours.step()
        theirs.step()
    return max(
        ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()
        for a, b in zip(ours_p, torch_p, strict=True)
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("foreach", [None, False], ids=["fused", "single"])
def test_tensor_lr_stays_within_the_documented_bound(name, foreach):
    # torch rounds the lr-derived step sizes of these four to float32 (lr's dtype)
    bound = 5e-5 if name in ("Adam", "AdamW", "Adamax", "NAdam") else 1e-12
    assert tensor_lr_error(name, foreach=foreach) < bound


@pytest.mark.parametrize("cls", ["ScheduleFreeAdamW", "ScheduleFreeSGD"])
def test_schedule_free_step_count_past_float16_range_keeps_the_fused_path(cls, monkeypatch):
    """Schedule-Free keeps its step count ``k`` and ``weight_sum`` in the param group: past
    65504 steps they exceed float16's range, but they are statistics, not hyperparameters, so
    the engine's float16-overflow fallback (torch's behaviour for huge ``lr``) must not fire."""
    from optimist.optim import engine

    if not engine.available():
        pytest.skip("the C++ engine did not build")
    p = torch.nn.Parameter(torch.randn(64))
    opt = getattr(oo, cls)([p], lr=0.01)
    p.grad = torch.randn(64)
    opt.step()
    opt.param_groups[0]["k"] = 70_000
    opt.param_groups[0]["weight_sum"] = 1e6

    def eager(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the per-tensor path ran")

    monkeypatch.setattr(engine, "run_eager", eager)
    opt.step()
    assert opt.param_groups[0]["k"] == 70_001
