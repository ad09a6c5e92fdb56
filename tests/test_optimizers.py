"""Contract tests for every optimizer, driven by one table (no optimizer escapes it).

Oracles: torch.optim (same rule, ``foreach=False``), optimist's NumPy reference, and optimist's
own per-tensor path for the fused one.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimist
import optimist.optim as oo
from helpers import require
from optimist import reference
from optimist.optim import engine


@dataclass
class Case:
    name: str  # optimist.optim class name == torch.optim class name
    configs: list[dict[str, Any]]
    errors: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    lr: float = 1e-2  # a learning rate that converges on the test problems

    @property
    def ours(self) -> type[torch.optim.Optimizer]:
        return getattr(oo, self.name)

    @property
    def theirs(self) -> type[torch.optim.Optimizer]:
        return getattr(torch.optim, self.name)


NEG_LR = ({"lr": -1e-3}, "Invalid lr: -0.001")
NAN_LR = ({"lr": float("nan")}, "Invalid lr: nan")
NEG_WD = ({"weight_decay": -0.1}, "Invalid weight_decay: -0.1")
BAD_BETA0 = ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0")
BAD_BETA1 = ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1")
NEG_EPS = ({"eps": -1e-8}, "Invalid eps: -1e-08")

TABLE = [
    Case(
        "SGD",
        [
            {"lr": 0.05},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
            {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "maximize": True},
        ],
        errors=[
            NEG_LR,
            NAN_LR,
            NEG_WD,
            ({"momentum": -0.5}, "Invalid momentum: -0.5"),
            ({"nesterov": True}, "Nesterov momentum requires a momentum > 0"),
            ({"momentum": 0.9, "dampening": 0.1, "nesterov": True}, "zero dampening"),
        ],
        lr=1e-3,
    ),
    Case(
        "Adagrad",
        [
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
            {"lr": 0.1, "eps": 1e-3, "maximize": True},
        ],
        errors=[
            NEG_LR,
            NAN_LR,
            NEG_WD,
            NEG_EPS,
            ({"lr_decay": -1.0}, "Invalid lr_decay: -1.0"),
            ({"initial_accumulator_value": -1.0}, "Invalid initial_accumulator_value"),
        ],
        lr=0.1,
    ),
    Case(
        "RMSprop",
        [
            {"lr": 1e-2},
            {"lr": 1e-2, "momentum": 0.9, "centered": True, "weight_decay": 0.1},
            {"lr": 1e-3, "alpha": 0.9, "momentum": 0.5, "maximize": True},
            {"lr": 1e-3, "centered": True},
        ],
        errors=[
            NEG_LR,
            NAN_LR,
            NEG_WD,
            NEG_EPS,
            ({"alpha": 1.5}, "Invalid alpha: 1.5"),
            ({"momentum": -0.1}, "Invalid momentum: -0.1"),
        ],
        lr=1e-3,
    ),
    Case(
        "Adadelta",
        [{}, {"lr": 0.5, "rho": 0.5, "weight_decay": 0.1}, {"eps": 1e-4, "maximize": True}],
        errors=[NEG_LR, NAN_LR, NEG_WD, NEG_EPS, ({"rho": 1.1}, "Invalid rho: 1.1")],
        lr=1.0,
    ),
    Case(
        "Adam",
        [
            {},
            {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1},
            {"lr": 1e-2, "betas": (0.5, 0.9), "maximize": True},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ],
        errors=[NEG_LR, NAN_LR, NEG_WD, NEG_EPS, BAD_BETA0, BAD_BETA1],
    ),
    Case(
        "AdamW",
        [{}, {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.5}, {"maximize": True}],
        errors=[NEG_LR, NAN_LR, NEG_WD, BAD_BETA0],
    ),
    Case(
        "Adamax",
        [{}, {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.8, 0.99)}, {"maximize": True}],
        errors=[NEG_LR, NAN_LR, NEG_WD, NEG_EPS, BAD_BETA1],
    ),
    Case(
        "NAdam",
        [
            {},
            {"lr": 1e-2, "weight_decay": 0.1, "momentum_decay": 1e-2},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ],
        errors=[
            NEG_LR,
            NAN_LR,
            NEG_WD,
            BAD_BETA0,
            ({"momentum_decay": -1.0}, "Invalid momentum_decay: -1.0"),
        ],
    ),
    Case(
        "RAdam",
        [
            {},
            {"lr": 1e-2, "weight_decay": 0.1},
            {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ],
        errors=[NEG_LR, NAN_LR, NEG_WD, NEG_EPS, BAD_BETA0],
    ),
]

NO_TORCH_TWIN = ("Lion", "ADOPT", "AdEMAMix", "Adan", "ScheduleFreeAdamW", "ScheduleFreeSGD")
NO_TORCH_TWIN += ("Ftrl",)  # TensorFlow/Keras' rule: tests/keras_compat/test_ftrl_vs_keras.py
# torch.optim has these two, but they are matrix optimizers outside the element-wise
# contract table: tests/test_muon.py compares them with torch.optim
NO_TORCH_TWIN += ("Muon", "Adafactor")  # and Adafactor: tests/test_muon.py too
NO_TORCH_TWIN += ("LAMB", "LARS")  # per-tensor norms: tests/test_peer_optimizers.py
NO_TORCH_TWIN += ("SOAP",)  # eigenbases: tests/test_soap.py
NO_TORCH_TWIN += ("Prodigy",)  # global step size: tests/test_prodigy.py
NO_TORCH_TWIN += ("SophiaG",)  # update_hessian(): tests/test_sophia.py
CONFIGS = [(case, config) for case in TABLE for config in case.configs]
CONFIG_IDS = [f"{case.name}-{i}" for case in TABLE for i, _ in enumerate(case.configs)]
ERRORS = [(case, kw, msg) for case in TABLE for kw, msg in case.errors]
ERROR_IDS = [f"{case.name}-{next(iter(kw))}" for case, kw, _ in ERRORS]
CASE_IDS = [case.name for case in TABLE]
SHAPES = [(7, 5), (13,), (), (3, 1, 4)]


def needs_fused() -> None:
    require(engine.available(), "optimist's C++ engine", "a C++ compiler (g++) and ninja")


def implementation_kwargs(implementation: str) -> dict[str, Any]:
    if implementation == "fused":
        needs_fused()
        return {"fused": True}
    return {"foreach": False}


def make_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


def clone_params(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def set_grads(params_sets: list[list[torch.Tensor]], step: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed * 1000 + step)
    grads = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params_sets[0]]
    for params in params_sets:
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()


def max_rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.is_complex():
        a, b = torch.view_as_real(a.detach()), torch.view_as_real(b.detach())
    a, b = a.detach().double(), b.detach().double()
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    return (a - b).abs().max().item() / scale


def assert_same_state(opt_a, params_a, opt_b, params_b, rtol: float) -> None:
    for pa, pb in zip(params_a, params_b, strict=True):
        assert max_rel_err(pa, pb) <= rtol
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert set(sa) == set(sb)
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert max_rel_err(sa[key], sb[key]) <= rtol, key


def run_pair(case, config, dtype, implementation, steps=50):
    params_torch = make_params(dtype)
    params_ours = clone_params(params_torch)
    theirs = case.theirs(params_torch, foreach=False, **config)
    ours = case.ours(params_ours, **implementation_kwargs(implementation), **config)
    for step in range(steps):
        set_grads([params_torch, params_ours], step)
        theirs.step()
        ours.step()
    return theirs, params_torch, ours, params_ours


# --- the table covers every optimizer ---------------------------------------------------------


def test_table_covers_every_optimizer():
    classes = {
        name
        for name in oo.__all__
        if isinstance(getattr(oo, name), type)
        and issubclass(getattr(oo, name), oo.Optimizer)
        and getattr(oo, name) not in (oo.Optimizer, oo.RuleOptimizer)
    }
    # optimizers without a torch.optim twin are driven by tests/engine/'s generated tables
    assert classes == {case.name for case in TABLE} | set(NO_TORCH_TWIN)


def test_every_registered_name_builds_an_optimizer_in_the_table():
    table_classes = {case.ours for case in TABLE} | {getattr(oo, n) for n in NO_TORCH_TWIN}
    table_classes.add(oo.Lookahead)  # a wrapper of the others: tests/test_lookahead.py
    for name in optimist.optimizers():
        opt = optimist.optimizer(name, [torch.zeros(2, requires_grad=True)])
        assert type(opt) in table_classes, name


# --- equality with torch.optim -----------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["single", "fused"])
@pytest.mark.parametrize(("case", "config"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_float64(case, config, implementation):
    theirs, pt, ours, po = run_pair(case, config, torch.float64, implementation, steps=50)
    # the per-tensor path is torch's single-tensor arithmetic, bit for bit (issue 8)
    assert_same_state(theirs, pt, ours, po, rtol=0.0 if implementation == "single" else 1e-9)


@pytest.mark.parametrize("implementation", ["single", "fused"])
@pytest.mark.parametrize(("case", "config"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch_float32(case, config, implementation):
    theirs, pt, ours, po = run_pair(case, config, torch.float32, implementation, steps=50)
    assert_same_state(theirs, pt, ours, po, rtol=0.0 if implementation == "single" else 2e-5)


@pytest.mark.parametrize("implementation", ["single", "fused"])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_matches_torch_complex(case, implementation):
    theirs, pt, ours, po = run_pair(case, case.configs[-1], torch.complex128, implementation, 20)
    assert_same_state(theirs, pt, ours, po, rtol=1e-9)


@pytest.mark.parametrize(("case", "config"), CONFIGS, ids=CONFIG_IDS)
def test_torch_implementation_matches_torch(case, config):
    """``foreach=True`` delegates to torch's multi-tensor kernel (used on accelerators)."""
    params_torch = make_params(torch.float64)
    params_ours = clone_params(params_torch)
    theirs = case.theirs(params_torch, foreach=False, **config)
    ours = case.ours(params_ours, foreach=True, **config)
    for step in range(10):
        set_grads([params_torch, params_ours], step)
        theirs.step()
        ours.step()
    assert_same_state(theirs, params_torch, ours, params_ours, rtol=1e-9)


# --- the fused path equals the per-tensor path -------------------------------------------------


@pytest.mark.parametrize(("case", "config"), CONFIGS, ids=CONFIG_IDS)
def test_fused_equals_per_tensor_float64(case, config):
    needs_fused()
    params_a = make_params(torch.float64)
    params_b = clone_params(params_a)
    single = case.ours(params_a, foreach=False, **config)
    fast = case.ours(params_b, fused=True, **config)
    for step in range(30):
        set_grads([params_a, params_b], step)
        if step == 10:  # a step where one parameter has no gradient (frozen this step)
            params_a[0].grad = params_b[0].grad = None
        single.step()
        fast.step()
    assert_same_state(single, params_a, fast, params_b, rtol=1e-12)


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_fused_group_with_mixed_tensors(case):
    """One group holding a non-contiguous, a complex, a float32 and a float64 parameter: the
    kernel takes what it can, the per-tensor path the rest, and the result is the same."""
    needs_fused()
    config = case.configs[-1]

    def params() -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        return [
            torch.randn(4, 6, generator=g, dtype=torch.float64).t().detach().requires_grad_(),
            torch.randn(5, generator=g, dtype=torch.complex128).requires_grad_(),
            torch.randn(7, generator=g, dtype=torch.float32).requires_grad_(),
            torch.randn(3, 3, generator=g, dtype=torch.float64).requires_grad_(),
        ]

    params_a, params_b = params(), params()
    assert not params_a[0].is_contiguous()
    single = case.ours(params_a, foreach=False, **config)
    fast = case.ours(params_b, fused=True, **config)
    for step in range(15):
        g = torch.Generator().manual_seed(step)
        for pa, pb in zip(params_a, params_b, strict=True):
            grad = torch.randn(pa.shape, generator=g, dtype=pa.dtype)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        single.step()
        fast.step()
    assert_same_state(single, params_a, fast, params_b, rtol=1e-6)
    assert_same_state(single, params_a[:2] + params_a[3:], fast, params_b[:2] + params_b[3:], 1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_low_precision_params(case, dtype):
    """bf16/fp16 parameters: the fused path (fp32 math, one rounding) tracks a float32 run."""
    needs_fused()
    config = case.configs[0]
    params32 = make_params(torch.float32)
    params16 = [p.detach().to(dtype).requires_grad_() for p in params32]
    ref = case.ours(params32, foreach=False, **config)
    low = case.ours(params16, fused=True, **config)
    for step in range(10):
        set_grads([params32], step)
        for p32, p16 in zip(params32, params16, strict=True):
            p16.grad = p32.grad.to(dtype)
        ref.step()
        low.step()
    for p32, p16 in zip(params32, params16, strict=True):
        assert p16.dtype == dtype
        assert torch.isfinite(p16).all()
        torch.testing.assert_close(p16.float(), p32, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_default_implementation_is_fused_on_cpu(case):
    needs_fused()
    p = torch.zeros(3, requires_grad=True)
    opt = case.ours([p])
    assert opt._implementation(opt.param_groups[0], [p]) == "fused"


# --- the NumPy reference -----------------------------------------------------------------------


def reference_rule(case: Case, config: dict[str, Any]):
    name = case.name.lower()
    config = dict(config)
    if name == "adam" and config.pop("decoupled_weight_decay", False):
        name = "adamw"
    return reference.RULES[name], config


@pytest.fixture
def float64_default():
    """torch keeps scalar state (``step``, NAdam's ``mu_product``) in the default dtype; the
    NumPy reference keeps it in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(("case", "config"), CONFIGS, ids=CONFIG_IDS)
def test_matches_numpy_reference(case, config, float64_default):
    rule, ref_config = reference_rule(case, config)
    params = make_params(torch.float64)
    ours = case.ours(params, **config)
    arrays = [p.detach().numpy().copy() for p in params]
    states: list[dict[str, Any]] = [{} for _ in params]
    for step in range(30):
        set_grads([params], step)
        grads = [p.grad.numpy().copy() for p in params]
        ours.step()
        for i in range(len(arrays)):
            arrays[i], states[i] = rule(arrays[i], grads[i], states[i], **ref_config)
    for p, a, s in zip(params, arrays, states, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), a, rtol=1e-9, atol=1e-12)
        for key, value in ours.state[p].items():
            if isinstance(value, torch.Tensor) and key != "step":
                np.testing.assert_allclose(value.numpy(), s[key], rtol=1e-6, atol=1e-12)


# --- state_dict --------------------------------------------------------------------------------


def _trajectory_after_reload(case, config, via_bytes: bool):
    torch.manual_seed(0)
    params_a = make_params(torch.float32)
    params_b = clone_params(params_a)
    opt_a = case.ours(params_a, **config)
    opt_b = case.ours(params_b, **config)
    for step in range(5):
        set_grads([params_a, params_b], step)
        opt_a.step()
        opt_b.step()
    saved = opt_b.state_dict()
    if via_bytes:
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
    else:
        saved = copy.deepcopy(saved)
    params_c = clone_params(params_b)
    opt_c = case.ours(params_c, **config)
    opt_c.load_state_dict(saved)
    for step in range(5, 12):
        set_grads([params_a, params_c], step)
        opt_a.step()
        opt_c.step()
    return params_a, params_c


@pytest.mark.parametrize("via_bytes", [False, True], ids=["deepcopy", "torch.save"])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_state_dict_round_trip_is_bit_identical(case, via_bytes):
    config = case.configs[1] if len(case.configs) > 1 else case.configs[0]
    params_a, params_c = _trajectory_after_reload(case, config, via_bytes)
    for a, c in zip(params_a, params_c, strict=True):
        assert torch.equal(a, c)


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_state_dict_moves_between_torch_and_optimist(case, direction):
    config = case.configs[1] if len(case.configs) > 1 else case.configs[0]
    first, second = (
        (case.theirs, case.ours) if direction == "torch_to_ours" else (case.ours, case.theirs)
    )
    params_a = make_params(torch.float64)
    opt_a = first(params_a, foreach=False, **config)
    for step in range(5):
        set_grads([params_a], step)
        opt_a.step()
    saved = opt_a.state_dict()
    # the oracle is the same state_dict loaded back into its own kind (loading casts some state
    # to the parameter dtype, in torch.optim as here)
    params_b, params_c = clone_params(params_a), clone_params(params_a)
    opt_b = second(params_b, foreach=False, **config)
    opt_c = first(params_c, foreach=False, **config)
    opt_b.load_state_dict(copy.deepcopy(saved))
    opt_c.load_state_dict(copy.deepcopy(saved))
    for step in range(5, 10):
        set_grads([params_b, params_c], step)
        opt_b.step()
        opt_c.step()
    assert_same_state(opt_c, params_c, opt_b, params_b, rtol=1e-12)


# --- param groups, frozen params, hooks, schedulers --------------------------------------------


@pytest.mark.parametrize("implementation", ["single", "fused"])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_param_groups(case, implementation):
    config = dict(case.configs[0])
    config.pop("lr", None)
    moving = torch.randn(6, dtype=torch.float64, requires_grad=True)
    tiny_lr = torch.randn(6, dtype=torch.float64, requires_grad=True)
    frozen = torch.randn(6, dtype=torch.float64, requires_grad=True)
    start = [t.detach().clone() for t in (moving, tiny_lr, frozen)]
    opt = case.ours(
        [{"params": [moving, frozen]}, {"params": [tiny_lr], "lr": 1e-28}],
        lr=case.lr,
        **implementation_kwargs(implementation),
        **config,
    )
    for _ in range(3):
        moving.grad = torch.randn(6, dtype=torch.float64)
        tiny_lr.grad = torch.randn(6, dtype=torch.float64)
        frozen.grad = None
        opt.step()
    assert not torch.equal(moving, start[0])
    torch.testing.assert_close(tiny_lr.detach(), start[1], rtol=0, atol=1e-20)
    assert torch.equal(frozen, start[2])
    assert frozen not in opt.state or case.name == "Adagrad"  # Adagrad makes state eagerly
    # a step where every gradient is None changes nothing
    snapshot = copy.deepcopy(opt.state_dict())
    for p in (moving, tiny_lr, frozen):
        p.grad = None
    before = moving.detach().clone()
    opt.step()
    assert torch.equal(moving, before)
    assert str(opt.state_dict()) == str(snapshot)


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_bad_group_value_rejected(case):
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = case.ours([p])
    with pytest.raises(ValueError, match="Invalid lr"):
        opt.add_param_group({"params": [q], "lr": -1.0})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match="Invalid lr"):
        case.ours([{"params": [p]}, {"params": [q], "lr": float("nan")}])


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_scheduler_and_hooks(case):
    p = torch.ones(4, requires_grad=True)
    opt = case.ours([p], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    for _ in range(3):
        p.grad = torch.ones(4)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 / 8)
    assert calls == ["pre", "post"] * 3


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_closure_returns_loss(case):
    p = torch.ones(3, requires_grad=True)
    opt = case.ours([p], lr=case.lr)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(3.0)


# --- maximize, convergence ---------------------------------------------------------------------


def quadratic(x: torch.Tensor) -> torch.Tensor:
    scales = torch.tensor([1.0, 10.0], dtype=x.dtype)
    return 0.5 * (scales * (x - 1.0) ** 2).sum()


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def minimise(case, function, start, lr, steps, **config):
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = case.ours([x], lr=lr, **config)
    for _ in range(steps):
        opt.zero_grad()
        function(x).backward()
        opt.step()
    return x.detach(), function(x).item()


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_maximize_goes_uphill(case):
    x = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = case.ours([x], lr=case.lr, maximize=True)
    start = quadratic(x).item()
    for _ in range(20):
        opt.zero_grad()
        (-quadratic(x)).backward()  # maximising -f moves towards the minimum of f
        opt.step()
    assert quadratic(x).item() < start


CONVERGENCE = {
    # name: (config, lr, steps) on the quadratic and on Rosenbrock
    "SGD": ({"momentum": 0.9}, 0.01, 600, 1e-3, 3000),
    "Adagrad": ({}, 0.5, 600, 0.1, 5000),
    "RMSprop": ({}, 0.01, 600, 1e-3, 5000),
    "Adadelta": ({}, 1.0, 3000, 1.0, 3000),
    "Adam": ({}, 0.05, 600, 0.02, 3000),
    "AdamW": ({"weight_decay": 0.0}, 0.05, 600, 0.02, 3000),
    "Adamax": ({}, 0.05, 600, 0.02, 5000),
    "NAdam": ({}, 0.05, 600, 0.02, 3000),
    "RAdam": ({}, 0.05, 600, 0.01, 3000),
}


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_converges_on_quadratic(case):
    config, lr, steps, _, _ = CONVERGENCE[case.name]
    x, value = minimise(case, quadratic, [-2.0, 3.0], lr, steps, **config)
    assert value < 1e-3, (x, value)


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_makes_progress_on_rosenbrock(case):
    config, _, _, lr, steps = CONVERGENCE[case.name]
    start_value = rosenbrock(torch.tensor([-1.5, 2.0], dtype=torch.float64)).item()
    x, value = minimise(case, rosenbrock, [-1.5, 2.0], lr, steps, **config)
    assert math.isfinite(value)
    assert value < 0.1 * start_value, (x, value)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "kwargs", "message"), ERRORS, ids=ERROR_IDS)
def test_error_inputs(case, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        case.ours([torch.zeros(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_sparse_gradients_raise(case):
    p = torch.zeros(5, requires_grad=True)
    opt = case.ours([p])
    p.grad = torch.sparse_coo_tensor([[1, 3]], [1.0, 2.0], (5,), check_invariants=True)
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_unsupported_flags():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="capturable"):
        oo.Adam(p, capturable=True)
    with pytest.raises(ValueError, match="differentiable=True"):
        oo.SGD(p, differentiable=True)
    with pytest.raises(RuntimeError, match="cannot be `True` together"):  # as torch.optim
        oo.Adam(p, fused=True, foreach=True)
    with pytest.raises(ValueError, match="betas must be a pair"):
        oo.Adam(p, betas=0.9)
    with pytest.raises(ValueError, match="amsgrad"):
        oo.Adam(p, amsgrad="yes")


# --- non-finite gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["single", "fused"])
@pytest.mark.parametrize("case", TABLE, ids=CASE_IDS)
def test_skip_nonfinite(case, implementation):
    params = make_params(torch.float32)
    opt = case.ours(params, skip_nonfinite=True, **implementation_kwargs(implementation))
    set_grads([params], 0)
    opt.step()
    snapshot_params = [p.detach().clone() for p in params]
    snapshot_state = copy.deepcopy(opt.state_dict()["state"])
    set_grads([params], 1)
    params[1].grad[3] = float("nan")
    params[0].grad[0, 0] = float("inf")
    opt.step()
    assert opt.skipped_steps == 1
    for p, before in zip(params, snapshot_params, strict=True):
        assert torch.equal(p, before)
    assert str(opt.state_dict()["state"]) == str(snapshot_state)
    assert opt.state_dict()["optimist"]["skipped_steps"] == 1
    set_grads([params], 2)
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in params)


def test_nonfinite_gradients_flow_through_by_default():
    p = torch.ones(3, requires_grad=True)
    opt = oo.SGD([p], lr=0.1)
    p.grad = torch.tensor([1.0, float("nan"), 1.0])
    opt.step()
    assert torch.isnan(p[1]) and p[0].item() == pytest.approx(0.9)


# --- the registry ------------------------------------------------------------------------------


def test_registry_names_and_defaults():
    names = optimist.optimizers()
    expected = {"sgd", "gd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"}
    expected |= {"adamw", "adamax", "nadam", "radam"}
    assert expected <= set(names)
    assert all(isinstance(v, str) and v for v in names.values())
    p = [torch.zeros(2, requires_grad=True)]
    assert optimist.optimizer("sgd", p).defaults["lr"] == 0.01
    momentum = optimist.optimizer("momentum", p)
    assert momentum.defaults["momentum"] == 0.9 and not momentum.defaults["nesterov"]
    assert optimist.optimizer("nesterov", p).defaults["nesterov"]
    assert optimist.optimizer("Adam", p, lr=0.5).defaults["lr"] == 0.5
    assert isinstance(optimist.optimizer("rmsprop", p), oo.RMSprop)


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adma'\. Did you mean .*'adam'"):
        optimist.optimizer("adma", [torch.zeros(1, requires_grad=True)])


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        oo.register("adam", oo.Adam, "again")


# --- property tests ----------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case_index=st.integers(0, len(TABLE) - 1),
    shape=st.lists(st.integers(1, 9), min_size=0, max_size=3),
    lr=st.floats(1e-4, 0.5),
    weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
    maximize=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_matches_torch(case_index, shape, lr, weight_decay, maximize, seed):
    case = TABLE[case_index]
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(shape, generator=g, dtype=torch.float64)
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    config = {"lr": lr, "weight_decay": weight_decay, "maximize": maximize}
    theirs = case.theirs([a], foreach=False, **config)
    ours = case.ours([b], **config)
    for _ in range(5):
        grad = torch.randn(shape, generator=g, dtype=torch.float64)
        a.grad, b.grad = grad.clone(), grad.clone()
        theirs.step()
        ours.step()
    assert max_rel_err(a, b) < 1e-9
