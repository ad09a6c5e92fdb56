"""``optimist.optim.functional``: the functional form derived from each class, for every
element-wise rule and trust-ratio class (LAMB, LARS).

Rows come from the registry (table.py): for every such optimizer and each of its examples,
steps of the functional equal steps of the class bit for bit (parameters and state), in float32
and float64, on the engine, the per-tensor and the flat-bucket path, and with bfloat16/int8
state; where torch.optim has the twin, the generated function takes torch's arguments and
equals torch's functional as the classes equal torch's classes.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch

from optimist.optim import AdamW, functional, registry
from optimist.optim.adam import Adam

from .table import ELEMENTWISE, SHAPES, TRUST_RATIO, Row, clone, ids, make_params, needs_engine

FUNCTIONAL = ELEMENTWISE + TRUST_RATIO
TWINS = [n for n in functional.functions() if functional._torch_twin(n) is not None]
DTYPES = {"f32": torch.float32, "f64": torch.float64}


def _path(row: Row, path: str) -> dict:
    """The settings of a path: "fused" the C++ engine (``fused=True`` for the rules; the
    trust-ratio classes' CPU default), "single" torch ops per tensor, "foreach" flat buckets /
    torch's foreach ops."""
    if path == "fused":
        return {"fused": True} if row.entry.elementwise else {}
    return {"foreach": path == "foreach"}


def _grads(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]


def _run_both(row: Row, path: dict, steps: int = 3, dtype=torch.float64, **extra):
    """``steps`` steps of the class over ``a`` and of the functional over ``b`` (a clone)."""
    a = make_params(dtype)
    b = clone(a)
    settings = {**row.kwargs, **path, **extra}
    opt = row.build(a, **settings)
    states, counts = functional.init_states(row.entry.name, b, **settings)
    group_state: dict = {}
    for step in range(steps):
        grads = _grads(a, step)
        for p, g in zip(a, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        functional.step(
            row.entry.name, b, grads, states, counts or None, group_state=group_state, **settings
        )
    return opt, a, b, states, counts, group_state


def _assert_same(opt, a, b, states, counts, group_state):
    for i, (pa, pb) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(pa, pb), i
        mine = opt.state[pa]
        assert {k for k in mine if k != "step"} == {k for k in states if states[k][i] is not None}
        for key, value in mine.items():
            theirs = counts[i] if key == "step" else states[key][i]
            assert theirs.dtype == value.dtype, key
            assert torch.equal(theirs, value), key
    group = opt.param_groups[0]
    for key in functional.state_layout(type(opt)).group_statistics:
        if key in group_state:
            assert group_state[key] == group[key], key


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES)
@pytest.mark.parametrize("path", ["fused", "single", "foreach"])
@pytest.mark.parametrize("row", FUNCTIONAL, ids=ids)
def test_functional_equals_the_class_bitwise(row, path, dtype):
    if path == "fused":
        needs_engine()
    _assert_same(*_run_both(row, _path(row, path), dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES)
@pytest.mark.parametrize("path", ["fused", "single"])
@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("row", FUNCTIONAL, ids=ids)
def test_functional_with_stored_state_equals_the_class(row, state_dtype, path, dtype):
    """Quantized state (int8 codes with their block scales, also of slots made from the first
    gradient) and bfloat16 state with stochastic rounding seeded by the step count."""
    needs_engine()
    _assert_same(*_run_both(row, _path(row, path), dtype=dtype, state_dtype=state_dtype))


@pytest.mark.parametrize("state_dtype", [None, "bfloat16", "int8"])
@pytest.mark.parametrize("row", FUNCTIONAL, ids=ids)
def test_init_states_equal_the_class_state(row, state_dtype):
    """``init_states`` makes what the class's own ``_init_state`` makes (keys, dtypes, values;
    int8 block scales where the tensor is quantized); a slot made from the first gradient is
    None."""
    params = make_params(torch.float32)
    settings = {**row.kwargs, "state_dtype": state_dtype}
    opt = row.build(clone(params), **settings)
    states, steps = functional.init_states(row.entry.name, params, **settings)
    group = opt.param_groups[0]
    fresh = functional.state_layout(type(opt)).fresh_keys(group)
    for i, p in enumerate(group["params"]):
        mine: dict = {}
        opt._init_state(p, mine, group)
        assert {k for k in mine if k != "step"} | set(fresh) == {
            k for k in states if i < len(states[k]) and (states[k][i] is not None or k in fresh)
        }
        for key, value in mine.items():
            theirs = steps[i] if key == "step" else states[key][i]
            assert theirs.dtype == value.dtype and torch.equal(theirs, value), key
        assert all(states[k][i] is None for k in fresh)
    if state_dtype == "int8" and set(states) - set(fresh):  # SHAPES has a quantized tensor
        assert any(k.endswith("_absmax") for k in states)


def test_every_elementwise_and_trust_ratio_class_has_a_functional():
    names = {row.entry.name for row in FUNCTIONAL}
    assert {"lamb", "lars"} <= names
    factories = {registry.spec(n).factory for n in functional.functions()}
    assert factories == {row.entry.factory for row in FUNCTIONAL}
    for name in functional.functions():
        assert callable(getattr(functional, name))
        assert name in dir(functional)
    for name in ("soap", "adafactor", "muon", "lookahead"):
        assert name not in functional.functions()


def test_trust_ratio_rows_cover_their_settings():
    """The rows above reach weight decay on and off, both LARS trust-ratio forms and the
    learning rate outside LARS's momentum (the classes' ``examples``)."""
    settings = {}
    for row in TRUST_RATIO:
        settings.setdefault(row.entry.name, []).append({**row.entry.defaults, **row.kwargs})
    for name in ("lamb", "lars"):
        assert {bool(s.get("weight_decay")) for s in settings[name]} == {False, True}, name
    assert {s.get("trust_ratio_form", "optax") for s in settings["lars"]} == {"optax", "paper"}
    assert any(s.get("lr_inside_momentum") is False for s in settings["lars"])


# --- signatures come from the rule ---------------------------------------------------------------


def _class_lists(cls: type) -> list[str | None]:
    """The state lists' keys as the class keeps its state: a rule's slots, the class's other
    per-parameter tensors (Prodigy's ``p0``) and the rule's scalar state, a trust-ratio class's
    ``slot_keys``; None for the steps."""
    if hasattr(cls, "rule"):
        rule = cls.rule
        keys = [s.key for s in rule.slots] + list(cls.extra_state)
        keys += [k for k, _ in rule.scalar_state]
        return keys + ([None] if rule.has_step else [])
    return [*cls.slot_keys, *([None] if cls.has_step else [])]


@pytest.mark.parametrize("name", functional.functions())
def test_named_signature_is_derived_from_the_class(name):
    cls = registry.spec(name).factory
    sig = inspect.signature(getattr(functional, name))
    positional = [n for n, p in sig.parameters.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    keys = _class_lists(cls)
    assert len(positional) == 2 + len(keys)
    assert [k for _, k in functional._list_names(name)] == ["params", "grads", *keys]
    assert list(sig.parameters)[: len(positional)] == positional  # the lists come first
    keyword = {n: p for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}
    for hp, par in inspect.signature(cls).parameters.items():
        if hp in ("params", "chain"):
            continue
        if hp == "betas" and "beta1" in keyword:
            default = registry.spec(name).defaults.get(hp, par.default)
            assert (keyword["beta1"].default, keyword["beta2"].default) == tuple(default)
            continue
        assert hp in keyword, f"functional.{name} does not take {hp!r}"
        assert keyword[hp].default == registry.spec(name).defaults.get(hp, par.default), hp


@pytest.mark.parametrize("name", TWINS)
def test_named_signature_takes_torch_functional_arguments(name):
    """torch's list names in its order, and every keyword argument torch's functional takes
    that torch's class of the same name takes too (AdamW fixes ``decoupled_weight_decay``)."""
    twin = functional._torch_twin(name)
    theirs = inspect.signature(twin).parameters
    ours = inspect.signature(getattr(functional, name)).parameters
    required = [n for n, p in theirs.items() if p.default is p.empty and p.kind != p.KEYWORD_ONLY]
    assert [n for n, p in ours.items() if p.kind == p.POSITIONAL_OR_KEYWORD] == required
    torch_class = getattr(torch.optim, registry.spec(name).factory.__name__)
    accepted = set(inspect.signature(torch_class).parameters)
    for arg in theirs:
        if arg in required or arg in ("grad_scale", "found_inf", "has_complex"):
            continue
        if arg in ("beta1", "beta2") or arg in accepted:
            assert arg in ours, f"functional.{name} lacks torch's {arg!r}"


def test_a_new_hyperparameter_reaches_the_functional():
    """A class that gains an argument: its functional takes it without a line written for it."""

    class Tilted(Adam):
        def __init__(self, params, lr=1e-3, tilt: float = 0.5, *, fused=None, foreach=None):
            super().__init__(params, lr=lr, fused=fused, foreach=foreach)
            for group in self.param_groups:
                group["tilt"] = tilt

    registry.register("tilted_adam", Tilted, "test only")
    try:
        sig = inspect.signature(functional.tilted_adam)
        assert sig.parameters["tilt"].default == 0.5
        p = [torch.ones(3)]
        states, steps = functional.init_states("tilted_adam", p, tilt=0.2)
        functional.tilted_adam(p, [torch.ones(3)], *states.values(), [], steps, tilt=0.2)
        assert steps[0].item() == 1.0
        with pytest.raises(TypeError, match="unexpected hyperparameter"):
            functional.step("tilted_adam", p, [torch.ones(3)], states, steps, tilted=1)
    finally:
        registry._REGISTRY.pop("tilted_adam")
        functional.__dict__.pop("tilted_adam", None)


def test_trust_ratio_lists_are_named_after_the_state_keys():
    """No torch twin: the lists are the keys' plurals, the steps torch's ``state_steps``."""
    lamb = inspect.signature(functional.lamb).parameters
    lars = inspect.signature(functional.lars).parameters
    assert list(lamb)[:5] == ["params", "grads", "exp_avgs", "exp_avg_sqs", "state_steps"]
    assert list(lars)[:3] == ["params", "grads", "momentum_buffers"]
    assert lamb["eps"].default == 1e-6 and lamb["betas"].default == (0.9, 0.999)
    assert lars["lr"].default == 1.0 and lars["trust_ratio_form"].default == "optax"
    assert lars["lr_inside_momentum"].default is True


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES)
@pytest.mark.parametrize("row", FUNCTIONAL, ids=ids)
def test_named_functional_equals_the_class_bitwise(row, dtype):
    """``functional.<name>(params, grads, *lists, **hyper)`` over init_states' lists: 3 steps
    equal to the class's on the default path."""
    name = row.entry.name
    a = make_params(dtype)
    b = clone(a)
    opt = row.build(a, **row.kwargs)
    states, counts = functional.init_states(name, b, **row.kwargs)
    lists = {key: states.setdefault(key, []) for _, key in functional._list_names(name)[2:]}
    unlisted = sorted(k for k in states if k not in lists and not k.endswith("_absmax"))
    assert not unlisted, f"functional.{name} has no list for its state {unlisted}"
    if None in lists:
        lists[None] = counts
    group_state: dict = {}
    for step in range(3):
        grads = _grads(a, step)
        for p, g in zip(a, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        getattr(functional, name)(
            b, grads, *lists.values(), group_state=group_state, **_split(name, row.kwargs)
        )
    states = {k: v for k, v in states.items() if v}  # the lists the settings leave out
    _assert_same(opt, a, b, states, counts, group_state)


# --- equal to torch's functional where torch has the twin -----------------------------------


def _torch_kwargs(name: str, settings: dict) -> dict:
    """torch's functional keyword arguments from the class's group (as torch's class does)."""
    probe = registry.optimizer(name, [torch.zeros(1, requires_grad=True)], **settings)
    group = probe.param_groups[0]
    out = {}
    for arg, par in inspect.signature(functional._torch_twin(name)).parameters.items():
        if arg in ("beta1", "beta2"):
            out[arg] = group["betas"][arg == "beta2"]
        elif par.kind == par.KEYWORD_ONLY or arg == "decoupled_weight_decay":
            out[arg] = group[arg]
    return out


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_named_functional_equals_torch_functional_bitwise(name, dtype):
    """The per-tensor path (``foreach=False`` on both), five steps with the class's first
    example settings: parameters, every state list and the steps are ``torch.equal``."""
    cls = registry.spec(name).factory
    settings = dict(cls.examples[0]) if getattr(cls, "examples", ()) else {}
    if name in ("momentum", "nesterov"):
        settings = {}
    a = make_params(dtype)
    b = clone(a)
    ours, our_steps = functional.init_states(name, a, **settings)
    theirs = copy.deepcopy(ours)
    their_steps = copy.deepcopy(our_steps)
    lists = functional._list_names(name)
    twin = functional._torch_twin(name)
    kwargs = _torch_kwargs(name, settings)
    for step in range(5):
        grads = _grads(a, step)

        def columns(states, steps):
            return [steps if key is None else states.get(key, []) for _, key in lists[2:]]

        getattr(functional, name)(
            a, grads, *columns(ours, our_steps), foreach=False, **_split(name, settings)
        )
        with torch.no_grad():
            twin(
                b,
                [g.clone() for g in grads],
                *columns(theirs, their_steps),
                foreach=False,
                **kwargs,
            )
    assert all(torch.equal(pa, pb) for pa, pb in zip(a, b, strict=True))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert all(torch.equal(x, y) for x, y in zip(ours[key], theirs[key], strict=True)), key
    assert [s.item() for s in our_steps] == [s.item() for s in their_steps]


def _split(name: str, settings: dict) -> dict:
    out = dict(settings)
    if functional._splits_betas(name) and "betas" in out:
        out["beta1"], out["beta2"] = out.pop("betas")
    return out


# --- bad input: one clear error, nothing changed --------------------------------------------


def _lists(name: str, n: int = 2):
    params = [torch.randn(3, 2) for _ in range(n)]
    grads = [torch.randn(3, 2) for _ in range(n)]
    states, steps = functional.init_states(name, params)
    return params, grads, states, steps


def _bad_lists(case: str, p: list, g: list, s: dict, t: list):
    """``(params, grads, states, steps)`` changed as ``case`` says, with the error they raise;
    None where the case does not apply (no steps for a class that keeps none)."""
    first, last = next(iter(s)), list(s)[-1]
    cases = {
        "short grads": ((p, g[:1], s, t), "2 params but 1 grads"),
        "short steps": ((p, g, s, t[:1]), "2 params but 1 steps")
        if t
        else ((p, g, s, [torch.zeros(())] * 2), "keeps no step count"),
        "no steps": ((p, g, s, None), "2 params but no steps") if t else None,
        "missing slot": ((p, g, {k: v for k, v in s.items() if k != last}, t), f"lacks '{last}'"),
        "short slot": ((p, g, {**s, first: s[first][:1]}, t), "1 states"),
        "None slot": (
            (p, g, {**s, first: [None, *s[first][1:]]}, t),
            rf"states\['{first}'\]\[0\] is None",
        ),
        "unexpected state": ((p, g, {**s, "max_exp_avg_sq": list(g)}, t), "unexpected state"),
        "grad shape": ((p, [x.t() for x in g], s, t), r"grads\[0\] has shape"),
        "None grad": ((p, [None, *g[1:]], s, t), r"grads\[0\] is NoneType"),
    }
    return cases[case]


BAD_CASES = [
    "short grads", "short steps", "no steps", "missing slot", "short slot", "None slot",
    "unexpected state", "grad shape", "None grad",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES)
@pytest.mark.parametrize("name", ["adam", "lamb", "lars"])
def test_bad_lists_raise_one_clear_error_and_change_nothing(name, case):
    params, grads, states, steps = _lists(name)
    bad = _bad_lists(case, params, grads, states, steps)
    if bad is None:
        pytest.skip(f"{name} keeps no step count")
    lists, match = bad
    before = copy.deepcopy((params, states))
    with pytest.raises(ValueError, match=match):
        functional.step(name, *lists)
    assert all(torch.equal(p, q) for p, q in zip(params, before[0], strict=True))
    for key, column in states.items():
        assert all(torch.equal(x, y) for x, y in zip(column, before[1][key], strict=True)), key
    assert all(s.item() == 0 for s in steps)


def test_unknown_or_matrix_or_wrapper_names_raise_saying_why():
    params, grads, states, steps = _lists("adam")
    with pytest.raises(ValueError, match="Unknown optimizer 'adma'. Did you mean .*'adam'"):
        functional.step("adma", params, grads, states, steps)
    for name in ("adafactor", "soap", "muon"):
        with pytest.raises(ValueError, match=f"'{name}' has no functional form: .*per matrix"):
            functional.step(name, params, grads, states, steps)
    with pytest.raises(ValueError, match="'lookahead' has no functional form: it wraps another"):
        functional.init_states("lookahead", params)
    with pytest.raises(ValueError, match="'SOAP' has no functional form: .*per matrix"):
        functional.state_layout(registry.spec("soap").factory)
    with pytest.raises(AttributeError, match="no attribute 'adma'"):
        functional.adma  # noqa: B018
    with pytest.raises(ValueError, match="Invalid lr: -1.0"):
        functional.step("adam", params, grads, states, steps, lr=-1.0)


def test_group_statistics_need_a_group_state_and_int8_needs_step():
    p = [torch.randn(4)]
    states, steps = functional.init_states("schedule_free_adamw", p)
    with pytest.raises(ValueError, match="pass group_state=\\{\\}"):
        functional.step("schedule_free_adamw", p, [torch.randn(4)], states, None)
    with pytest.raises(ValueError, match="takes no int8 state"):
        functional.adam(p, [torch.randn(4)], [], [], [], [torch.zeros(())], state_dtype="int8")


def test_fresh_slots_are_filled_in_the_callers_list():
    """SGD's momentum buffer, created from the first gradient, as torch's ``sgd`` does."""
    p = [torch.randn(s) for s in SHAPES]
    buffers = [None] * len(p)
    grads = _grads(p, 0)
    functional.momentum(p, grads, buffers)
    assert all(torch.equal(b, g) for b, g in zip(buffers, grads, strict=True))


def test_adamw_defaults_come_from_the_registry_and_class():
    assert inspect.signature(functional.adamw).parameters["weight_decay"].default == 0.01
    assert inspect.signature(functional.sgd).parameters["lr"].default == 0.01  # Keras's
    assert AdamW.rule is Adam.rule


def test_the_readme_example_runs():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Functional form", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102
    assert scope["steps"][0].item() == 4.0
    assert sorted(scope["states"]) == ["exp_avg", "exp_avg_sq"]
    assert scope["lamb_steps"][0].item() == 1.0
    assert all(m.abs().sum() > 0 for m in scope["lamb"]["exp_avg"])
