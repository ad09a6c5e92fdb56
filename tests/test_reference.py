"""The NumPy reference rules agree with torch.optim (single-tensor path) in float64."""

from __future__ import annotations

import ast
import contextlib
import copy
import inspect
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import optimist.optim
from optimist import reference

RTOL = 1e-10
N_STEPS = 30

# (rule name, torch class, hyperparameters): each row runs N_STEPS steps against torch.
CASES: list[tuple[str, type[torch.optim.Optimizer], dict]] = [
    ("sgd", torch.optim.SGD, {}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "weight_decay": 0.1}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "maximize": True}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.01}),
    ("adagrad", torch.optim.Adagrad, {}),
    ("adagrad", torch.optim.Adagrad, {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.1}),
    ("adagrad", torch.optim.Adagrad, {"initial_accumulator_value": 0.5, "maximize": True}),
    ("rmsprop", torch.optim.RMSprop, {}),
    ("rmsprop", torch.optim.RMSprop, {"alpha": 0.9, "weight_decay": 0.1, "maximize": True}),
    ("rmsprop", torch.optim.RMSprop, {"momentum": 0.9, "eps": 1e-6}),
    ("rmsprop", torch.optim.RMSprop, {"centered": True}),
    ("rmsprop", torch.optim.RMSprop, {"centered": True, "momentum": 0.5, "weight_decay": 0.01}),
    ("adadelta", torch.optim.Adadelta, {}),
    ("adadelta", torch.optim.Adadelta, {"lr": 0.5, "rho": 0.95, "weight_decay": 0.1}),
    ("adadelta", torch.optim.Adadelta, {"eps": 1e-4, "maximize": True}),
    ("adam", torch.optim.Adam, {}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    ("adam", torch.optim.Adam, {"amsgrad": True, "maximize": True}),
    ("adam", torch.optim.Adam, {"amsgrad": True, "weight_decay": 0.05, "eps": 1e-3}),
    ("adamw", torch.optim.AdamW, {}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    ("adamw", torch.optim.AdamW, {"weight_decay": 0.0, "maximize": True}),
    ("adamax", torch.optim.Adamax, {}),
    ("adamax", torch.optim.Adamax, {"lr": 0.01, "betas": (0.5, 0.9), "weight_decay": 0.1}),
    ("adamax", torch.optim.Adamax, {"eps": 1e-2, "maximize": True}),
    ("nadam", torch.optim.NAdam, {}),
    ("nadam", torch.optim.NAdam, {"weight_decay": 0.1, "momentum_decay": 0.01}),
    ("nadam", torch.optim.NAdam, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("nadam", torch.optim.NAdam, {"betas": (0.7, 0.95), "maximize": True}),
    ("radam", torch.optim.RAdam, {}),
    ("radam", torch.optim.RAdam, {"weight_decay": 0.1, "betas": (0.9, 0.9)}),
    ("radam", torch.optim.RAdam, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("radam", torch.optim.RAdam, {"betas": (0.5, 0.6), "maximize": True}),
]

TORCH_CLASS = {name: cls for name, cls, _ in CASES}
NO_TORCH_TWIN = {
    "lion": optimist.optim.Lion,
    "adopt": optimist.optim.ADOPT,
    "ademamix": optimist.optim.AdEMAMix,
    "adan": optimist.optim.Adan,
    "schedule_free_adamw": optimist.optim.ScheduleFreeAdamW,
    "schedule_free_sgd": optimist.optim.ScheduleFreeSGD,
    "prodigy": optimist.optim.Prodigy,
    "sophia_g": optimist.optim.SophiaG,
    "ftrl": optimist.optim.Ftrl,
}
# whole-tensor rules: defaults compared with the optimist class's signature (Muon's ``defaults``
# dict mixes in its AdamW fallback's settings)
MATRIX_CLASS = {
    "muon": optimist.optim.Muon,
    "adafactor": optimist.optim.Adafactor,
    "lamb": optimist.optim.LAMB,
    "lars": optimist.optim.LARS,
    "soap": optimist.optim.SOAP,
}


def _case_id(case: tuple[str, type, dict]) -> str:
    name, _, kwargs = case
    return name + "".join(f"-{key}={value}" for key, value in kwargs.items())


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    # torch keeps scalar state (step, NAdam's mu_product) in the default dtype;
    # float64 makes its scalar arithmetic exact enough to compare at 1e-10.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def run_reference(name: str, kwargs: dict, param: np.ndarray, grads: list[np.ndarray]):
    rule = reference.RULES[name]
    state: dict = {}
    for grad in grads:
        param, state = rule(param, grad, state, **kwargs)
    return param, state


def run_torch(name: str, kwargs: dict, param: np.ndarray, grads: list[np.ndarray]):
    with _default_dtype(torch.float64):
        p = torch.tensor(param, requires_grad=True)
        optimizer = TORCH_CLASS[name]([p], foreach=False, **kwargs)
        for grad in grads:
            p.grad = torch.tensor(grad)
            optimizer.step()
        torch_state = {}
        for key, value in optimizer.state[p].items():
            if key == "step":
                torch_state[key] = int(value.item())
            elif key == "mu_product":
                torch_state[key] = float(value.item())
            else:
                torch_state[key] = value.detach().numpy().copy()
    return p.detach().numpy().copy(), torch_state


def assert_close(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    assert actual.dtype == expected.dtype, what
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    error = float(np.max(np.abs(actual - expected), initial=0.0)) / scale
    assert error < RTOL, f"{what}: relative error {error:.3g}"


def assert_matches_torch(name: str, kwargs: dict, param: np.ndarray, grads: list[np.ndarray]):
    ref_param, ref_state = run_reference(name, kwargs, param, grads)
    torch_param, torch_state = run_torch(name, kwargs, param, grads)
    assert set(ref_state) == set(torch_state)
    assert_close(ref_param, torch_param, "param")
    for key, expected in torch_state.items():
        if key == "step":
            assert type(ref_state[key]) is int
            assert ref_state[key] == expected
        elif key == "mu_product":
            assert type(ref_state[key]) is float
            assert math.isclose(ref_state[key], expected, rel_tol=RTOL)
        else:
            assert isinstance(ref_state[key], np.ndarray), key
            assert_close(ref_state[key], expected, key)


def random_problem(seed: int, shape: tuple[int, ...], steps: int, complex_: bool = False):
    rng = np.random.default_rng(seed)

    def draw():
        x = rng.standard_normal(shape)
        return x + 1j * rng.standard_normal(shape) if complex_ else x

    return draw(), [draw() for _ in range(steps)]


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch(case):
    name, _, kwargs = case
    param, grads = random_problem(seed=len(_case_id(case)), shape=(3, 4), steps=N_STEPS)
    assert_matches_torch(name, kwargs, param, grads)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch_complex(case):
    name, _, kwargs = case
    param, grads = random_problem(seed=7, shape=(5,), steps=10, complex_=True)
    assert_matches_torch(name, kwargs, param, grads)
    ref_param, ref_state = run_reference(name, kwargs, param, grads)
    assert ref_param.dtype == np.complex128
    assert all(v.dtype == np.complex128 for v in ref_state.values() if isinstance(v, np.ndarray))


def test_zero_dim_param_returns_arrays():
    for name, rule in reference.RULES.items():
        kwargs = {"momentum": 0.9} if name == "sgd" else {}
        param, state = rule(np.array(1.5), np.array(0.5), {}, **kwargs)
        param, state = rule(param, np.array(-0.5), state, **kwargs)
        assert isinstance(param, np.ndarray) and param.shape == (), name
        assert all(
            isinstance(v, np.ndarray)
            for k, v in state.items()
            if k not in ("step", "mu_product", "k", "lr_max", "weight_sum")
            and k not in ("d", "d_max", "d_numerator")  # Prodigy's global scalars
        ), name
    assert_matches_torch("adam", {}, np.array(1.5), [np.array(0.5), np.array(-0.25)])


def test_radam_switches_to_rectified_step_at_rho_5():
    # With beta2 = 0.999, rho_t exceeds 5 from step 6 on: before that RAdam is plain momentum.
    param, grads = random_problem(seed=3, shape=(4,), steps=6)
    for steps in range(1, 7):
        assert_matches_torch("radam", {}, param, grads[:steps])
    p5, _ = run_reference("radam", {}, param, grads[:5])
    p5_expected = param.copy()
    m = np.zeros_like(param)
    for t, g in enumerate(grads[:5], start=1):
        m = 0.9 * m + 0.1 * g
        p5_expected = p5_expected - 1e-3 * m / (1 - 0.9**t)
    assert_close(p5, p5_expected, "unrectified param")


def test_nadam_float32_scalar_state_in_torch_drifts_slightly():
    # With torch's default float32, NAdam's mu_product is stored (and rounded) in float32, so
    # torch departs from the exact rule by float32 rounding while params stay float64.
    param, grads = random_problem(seed=11, shape=(6,), steps=N_STEPS)
    ref_param, ref_state = run_reference("nadam", {}, param, grads)
    with _default_dtype(torch.float32):
        p = torch.tensor(param, requires_grad=True)
        optimizer = torch.optim.NAdam([p], foreach=False)
        for grad in grads:
            p.grad = torch.tensor(grad)
            optimizer.step()
    assert optimizer.state[p]["mu_product"].dtype == torch.float32
    mu_error = abs(ref_state["mu_product"] / optimizer.state[p]["mu_product"].item() - 1)
    assert RTOL < mu_error < 1e-6  # really rounded to float32, but only by that
    np.testing.assert_allclose(ref_param, p.detach().numpy(), rtol=1e-6)


# --------------------------------------------------------------------------- purity


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pure(case):
    name, _, kwargs = case
    rule = reference.RULES[name]
    param, grads = random_problem(seed=5, shape=(2, 3), steps=3)
    _, state = run_reference(name, kwargs, param, grads[:2])
    for p, g, s in [(param, grads[0], {}), (param, grads[2], state)]:
        p_before, g_before, s_before = p.copy(), g.copy(), copy.deepcopy(s)
        new_param, new_state = rule(p, g, s, **kwargs)
        np.testing.assert_array_equal(p, p_before)
        np.testing.assert_array_equal(g, g_before)
        assert set(s) == set(s_before)
        for key, value in s.items():
            np.testing.assert_array_equal(value, s_before[key])
        inputs = [p, g, *(v for v in s.values() if isinstance(v, np.ndarray))]
        outputs = [new_param, *(v for v in new_state.values() if isinstance(v, np.ndarray))]
        for out in outputs:
            assert not any(np.shares_memory(out, x) for x in inputs)


def test_module_does_not_import_torch():
    """Every file of the reference package imports only NumPy, the standard library and itself."""
    files = sorted(Path(inspect.getfile(reference)).parent.glob("*.py"))
    assert len(files) >= 4
    for file in files:
        imported = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module.startswith("optimist.reference"):
                    continue
                imported.add(module.split(".")[0])
        assert "torch" not in imported, file.name
        allowed = {"__future__", "collections", "functools", "math", "numpy", "typing"}
        assert imported <= allowed, (file.name, imported - allowed)


def test_rules_table_and_signatures():
    assert set(reference.RULES) == {
        "sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam", "radam",
        "lion", "adopt", "ademamix", "adan", "schedule_free_adamw", "schedule_free_sgd",
        "muon", "adafactor", "lamb", "lars", "soap",
        "prodigy", "sophia_g", "ftrl",
    }  # fmt: skip
    for name, rule in reference.RULES.items():
        assert rule is getattr(reference, name)
        assert rule.__doc__
        parameters = list(inspect.signature(rule).parameters.values())
        assert [p.name for p in parameters[:3]] == ["param", "grad", "state"]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[3:])
        # Every hyperparameter exists in torch.optim (or, without a twin there, in optimist's
        # class) with the same default.
        if name in MATRIX_CLASS:
            signature = inspect.signature(MATRIX_CLASS[name]).parameters
            for parameter in parameters[3:]:
                assert signature[parameter.name].default == parameter.default, (name, parameter)
            continue
        torch_defaults = TORCH_CLASS.get(name, NO_TORCH_TWIN.get(name))([torch.zeros(1)]).defaults
        for parameter in parameters[3:]:
            assert torch_defaults[parameter.name] == parameter.default, (name, parameter.name)


# --------------------------------------------------------------------------- validation

INVALID = [
    ("sgd", {"lr": -1.0}, "lr"),
    ("sgd", {"lr": float("nan")}, "lr"),
    ("sgd", {"momentum": -0.1}, "momentum"),
    ("sgd", {"weight_decay": -1e-3}, "weight_decay"),
    ("sgd", {"dampening": float("nan")}, "dampening"),
    ("sgd", {"nesterov": True}, "nesterov"),
    ("sgd", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov"),
    ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
    ("adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    ("adagrad", {"eps": float("nan")}, "eps"),
    ("rmsprop", {"alpha": -0.5}, "alpha"),
    ("rmsprop", {"momentum": float("nan")}, "momentum"),
    ("adadelta", {"rho": 1.5}, "rho"),
    ("adadelta", {"rho": float("nan")}, "rho"),
    ("adam", {"betas": (1.0, 0.999)}, "betas[0]"),
    ("adam", {"betas": (0.9, -0.1)}, "betas[1]"),
    ("adam", {"eps": -1e-8}, "eps"),
    ("adamw", {"weight_decay": -0.01}, "weight_decay"),
    ("adamax", {"betas": (0.9, float("nan"))}, "betas[1]"),
    ("nadam", {"momentum_decay": -1.0}, "momentum_decay"),
    ("nadam", {"lr": float("inf") * 0}, "lr"),
    ("radam", {"betas": (0.9,)}, "betas"),
    ("radam", {"weight_decay": -1.0}, "weight_decay"),
    ("ftrl", {"lr": 0.0}, "lr"),
    ("ftrl", {"lr_power": 0.5}, "lr_power"),
    ("ftrl", {"l1": -1.0}, "l1"),
    ("ftrl", {"initial_accumulator_value": float("nan")}, "initial_accumulator_value"),
]


@pytest.mark.parametrize(("name", "kwargs", "argument"), INVALID)
def test_invalid_hyperparameters(name, kwargs, argument):
    with pytest.raises(ValueError, match="^" + re.escape(argument)) as info:
        reference.RULES[name](np.zeros(3), np.ones(3), {}, **kwargs)
    value = next(iter(kwargs.values())) if len(kwargs) == 1 else None
    if isinstance(value, float):
        assert str(value) in str(info.value)


@pytest.mark.parametrize("name", list(reference.RULES))
def test_shape_mismatch(name):
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        reference.RULES[name](np.zeros((2, 3)), np.zeros((3, 2)), {})


def test_real_param_complex_grad_rejected():
    with pytest.raises(ValueError, match="complex"):
        reference.adam(np.zeros(2), np.zeros(2, dtype=complex), {})


# --------------------------------------------------------------------------- properties


def _nesterov(kwargs: dict) -> dict:
    return {**kwargs, "momentum": max(kwargs["momentum"], 0.1), "dampening": 0.0, "nesterov": True}


def _hyperparameters(name: str) -> st.SearchStrategy[dict]:
    lr = st.floats(1e-4, 0.5)
    wd = st.sampled_from([0.0, 1e-3, 0.1])
    beta1 = st.floats(0.0, 0.95)
    beta2 = st.floats(0.5, 0.9999)
    betas = st.tuples(beta1, beta2)
    eps = st.sampled_from([1e-10, 1e-8, 1e-4])
    flag = st.booleans()
    common = {"lr": lr, "weight_decay": wd, "maximize": flag}
    adam_like = {**common, "betas": betas, "eps": eps}
    by_name = {
        "sgd": st.fixed_dictionaries(
            {**common, "momentum": st.floats(0.0, 0.99), "dampening": st.floats(0.0, 0.9)}
        ).flatmap(lambda kw: st.sampled_from([kw, _nesterov(kw)])),
        "adagrad": st.fixed_dictionaries(
            {**common, "lr_decay": st.floats(0.0, 0.5), "eps": eps,
             "initial_accumulator_value": st.floats(0.0, 1.0)}
        ),
        "rmsprop": st.fixed_dictionaries(
            {**common, "alpha": st.floats(0.5, 0.999), "eps": eps,
             "momentum": st.sampled_from([0.0, 0.5, 0.9]), "centered": flag}
        ),
        "adadelta": st.fixed_dictionaries({**common, "rho": st.floats(0.0, 1.0), "eps": eps}),
        "adam": st.fixed_dictionaries({**adam_like, "amsgrad": flag}),
        "adamw": st.fixed_dictionaries({**adam_like, "amsgrad": flag}),
        "adamax": st.fixed_dictionaries(adam_like),
        "nadam": st.fixed_dictionaries(
            {**adam_like, "momentum_decay": st.floats(0.0, 0.05), "decoupled_weight_decay": flag}
        ),
        "radam": st.fixed_dictionaries({**adam_like, "decoupled_weight_decay": flag}),
    }  # fmt: skip
    return by_name[name]


@st.composite
def problems(draw, complex_: bool = False):
    name = draw(st.sampled_from(sorted(TORCH_CLASS)))
    kwargs = draw(_hyperparameters(name))
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    seed = draw(st.integers(0, 2**32 - 1))
    steps = draw(st.integers(1, 8))
    return name, kwargs, *random_problem(seed, shape, steps, complex_)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_property_matches_torch(problem):
    name, kwargs, param, grads = problem
    assert_matches_torch(name, kwargs, param, grads)


@settings(max_examples=25, deadline=None)
@given(problems(complex_=True))
def test_property_matches_torch_complex(problem):
    name, kwargs, param, grads = problem
    assert_matches_torch(name, kwargs, param, grads)
