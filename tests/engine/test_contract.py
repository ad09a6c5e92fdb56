"""The contract every registered optimizer keeps, rows generated from the registry (table.py).

Bad inputs, every ``state_dtype`` (stored as asked, or refused naming the accepted values),
float32/float64 parameters, ``state_dict`` round trips (also through quantized state) and
torch.optim interop where a twin exists. The element-wise rows (fused == eager, reference, ...)
are ``test_rules.py``; the torch.optim equality tables of the classic nine are
``tests/test_optimizers.py``.
"""

from __future__ import annotations

import copy
import inspect
import io
import math

import pytest
import torch

import optimist
from optimist.optim import codecs, registry

from .table import (
    ELEMENTWISE,
    EVERY,
    ONE_PER_OPTIMIZER,
    STATE_DTYPES,
    assert_steps_as_twin,
    clone,
    entries,
    exported_optimizer_classes,
    ids,
    make_params,
    needs_engine,
    rows,
    set_grads,
)

# --- no optimizer escapes the table --------------------------------------------------------------


def test_every_registered_optimizer_has_rows():
    in_rows = {row.entry.factory for row in EVERY}
    for name in optimist.optimizers():
        assert registry.spec(name).factory in in_rows, f"{name!r} has no contract rows"
    registered = {registry.spec(n).factory for n in optimist.optimizers()}
    unregistered = exported_optimizer_classes() - registered
    assert not unregistered, f"exported but not registered (so not in the tables): {unregistered}"


def test_every_elementwise_rule_has_a_numpy_reference_and_examples_are_valid():
    """A rule = one functor + one eager function + one NumPy reference + its rows."""
    for entry in entries():
        if entry.elementwise:
            assert entry.reference is not None, f"{entry.name}: no optimist.reference.RULES entry"
        signature = inspect.signature(entry.factory)
        for example in entry.examples:  # a misspelt setting would silently test the default
            signature.bind(None, **{**entry.defaults, **example})
    assert len({row.entry.factory for row in ELEMENTWISE}) >= 15  # the rules as of this table


# --- bad inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ONE_PER_OPTIMIZER, ids=ids)
def test_bad_inputs_raise_one_clear_error_and_lose_nothing(row):
    p = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match=r"Invalid state_dtype: 'int4' \(state_dtype must be one"):
        row.build([p], state_dtype="int4")
    with pytest.raises(ValueError, match=r"Invalid lr: -1"):
        row.build([p], lr=-1.0)
    with pytest.raises(ValueError, match=r"Invalid lr: nan"):
        row.build([p], lr=math.nan)
    # a flag must be True or False (checked for every bool-default hyperparameter)
    signature = inspect.signature(row.entry.factory).parameters.values()
    flags = [a.name for a in signature if isinstance(a.default, bool) and a.name != "params"]
    opt = row.build([p])
    for flag in flags:
        if flag in opt.defaults:
            with pytest.raises(ValueError, match=rf"Invalid {flag}: 'yes'"):
                row.build([p], **{flag: "yes"})
    # a bad group added later is refused and the optimizer keeps what it had
    before = [dict(g) for g in opt.param_groups]
    q = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"Invalid lr"):
        opt.add_param_group({"params": [q], "lr": -1.0})
    assert [dict(g) for g in opt.param_groups] == before


# --- state_dtype, float32/float64, state_dict round trips ---------------------------------------


def _check_storage(opt, params, state_dtype):
    """Rule slots are stored as ``state_dtype`` asks. Other optimizers' element-wise state is in
    that format or the parameter's (copies such as slow weights); a wrapper's inner optimizer
    is checked too. A ``state_dtype`` that changes nothing at all was silently ignored."""
    inner = getattr(opt, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        _check_storage(inner, params, state_dtype)
    rule = getattr(opt, "rule", None)
    changed = False
    for p in params:
        state, expected = opt.state.get(p, {}), codecs.storage_dtype(state_dtype, p)
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or value.shape != p.shape or key == "step":
                continue
            if rule is not None and key not in {s.key for s in rule.slots}:
                continue
            if rule is None and value.dtype == p.dtype:
                continue
            assert value.dtype == expected, (key, tuple(p.shape), value.dtype, expected)
            changed = True
            if expected == torch.int8:
                scales = state[key + "_absmax"]
                assert scales.dtype == torch.float32
                assert scales.numel() == -(-p.numel() // codecs.QUANT_BLOCK)
    if rule is None and not isinstance(inner, torch.optim.Optimizer):
        moved = any(codecs.storage_dtype(state_dtype, p) != p.dtype for p in params)
        has_state = any(
            isinstance(v, torch.Tensor) and v.shape == p.shape and k != "step"
            for p in params
            for k, v in opt.state.get(p, {}).items()
        )
        assert changed or not (moved and has_state), f"state_dtype={state_dtype!r} was ignored"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("row", EVERY, ids=ids)
def test_state_dtype_and_state_dict_round_trip(row, state_dtype, dtype, request):
    """Stored as asked (or refused naming the accepted values); a torch.save/load round trip
    continues bit for bit, through quantized state too."""
    if row.entry.elementwise:
        needs_engine()
    if dtype == torch.float64:
        # torch.optim's convention for float64 runs: 0-dim scalar state (``step``, NAdam's
        # ``mu_product``) in the default dtype. Under a float32 default, load_state_dict casts
        # ``mu_product`` to float64 (as torch.optim does, which tests/test_optimizers.py checks),
        # and the run resumes off by rounding.
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        request.addfinalizer(lambda: torch.set_default_dtype(previous))
    a = make_params(dtype)
    factory = row.entry.factory  # a class declares the state_dtypes it takes
    declared = factory.state_dtypes if isinstance(factory, type) else codecs.STATE_DTYPES
    try:
        opt = row.build(a, state_dtype=state_dtype)
    except ValueError as error:
        assert state_dtype is not None, error  # the parameter's dtype is always accepted
        assert state_dtype not in declared, f"refused a declared state_dtype: {error}"
        assert f"Invalid state_dtype: {state_dtype!r}" in str(error) and "None" in str(error)
        return
    assert state_dtype in declared, "took a state_dtype its class does not declare"
    for step in range(4):
        set_grads([a], step)
        opt.step()
    _check_storage(opt, a, state_dtype)
    for p in a:
        assert p.dtype == dtype and torch.isfinite(p).all()
    b = clone(a)
    saved = io.BytesIO()
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    twin = row.build(b, state_dtype=state_dtype)
    twin.load_state_dict(torch.load(saved, weights_only=True))
    _check_storage(twin, b, state_dtype)
    for step in range(4, 8):
        set_grads([a, b], step)
        opt.step()
        twin.step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)


def test_only_the_documented_optimizers_keep_their_state_in_the_parameters_dtype():
    """Every optimizer takes every ``state_dtype`` (issue 8) but the one the README names:
    Adafactor (its factored moments)."""
    narrow = {
        cls.__name__
        for cls in exported_optimizer_classes()
        if tuple(cls.state_dtypes) != tuple(codecs.STATE_DTYPES)
    }
    assert narrow == {"Adafactor"}


# --- torch.optim interop where a twin exists ---------------------------------------------------


def _twin_rows():
    out = []
    for row in EVERY:
        twin = row.entry.torch_twin
        if twin is None:
            continue
        accepted = set(inspect.signature(twin).parameters)
        if set(row.entry.defaults) | set(row.kwargs) <= accepted:
            out.append(row)
    return out


TWINS = _twin_rows()


@pytest.mark.parametrize("direction", ["torch_to_ours", "ours_to_torch"])
@pytest.mark.parametrize("row", TWINS, ids=ids)
def test_state_dict_moves_between_torch_and_optimist(row, direction):
    """A checkpoint of the torch.optim twin continues in optimist, and the other way round:
    both then take the same steps (float64, matrices, which every twin takes)."""
    if row.entry.elementwise:
        needs_engine()
    twin = row.entry.torch_twin
    settings = {**row.entry.defaults, **row.kwargs}
    shapes = [(6, 5), (4, 3)]
    first = make_params(torch.float64, shapes=shapes)
    source = twin(first, **settings) if direction == "torch_to_ours" else row.build(first)
    for step in range(3):
        set_grads([first], step)
        source.step()
    second = clone(first)
    target = row.build(second) if direction == "torch_to_ours" else twin(second, **settings)
    target.load_state_dict(copy.deepcopy(source.state_dict()))  # torch shares tensors
    for step in range(3, 6):
        set_grads([first, second], step)
        source.step()
        target.step()
    for pa, pb in zip(first, second, strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("row", [r for r in TWINS if r.entry.elementwise], ids=ids)
def test_torch_foreach_path_equals_torch_foreach(row, monkeypatch):
    """The accelerator path (the rule's ``torch_foreach``, torch's own multi-tensor kernel),
    forced on CPU, is bitwise torch.optim's ``foreach=True``, state included."""
    rule = getattr(row.entry.factory, "rule", None)
    if rule is None or rule.torch_foreach is None:
        pytest.skip("no torch_foreach for this rule")
    settings = {**row.entry.defaults, **row.kwargs}
    a = make_params(torch.float32, shapes=[(6, 5), (4, 3)])
    b = clone(a)
    ours = row.build(a, foreach=True)
    monkeypatch.setattr(ours, "_implementation", lambda group, params: "torch")
    theirs = row.entry.torch_twin(b, foreach=True, **settings)
    assert_steps_as_twin(ours, theirs, a, b)


def test_interop_rows_cover_the_twins():
    """Every registered optimizer with a torch.optim twin has an interop row."""
    with_twin = {e.factory for e in entries() if e.torch_twin is not None}
    assert with_twin == {row.entry.factory for row in TWINS}
    assert len(with_twin) >= 11  # the classic nine, Adafactor, Muon


# --- bfloat16 parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("row", rows(lambda e: not e.elementwise, first_only=True), ids=ids)
def test_bfloat16_parameters_close_to_float32(row):
    """The optimizers outside the rule tables (test_rules.py has the rules) on bfloat16
    parameters: they stay bfloat16 and close to the float32 run."""
    a = make_params(torch.float32)
    b = [p.detach().bfloat16().requires_grad_() for p in a]
    run_a, run_b = row.build(a), row.build(b)
    for step in range(5):
        set_grads([a], step)
        for pa, pb in zip(a, b, strict=True):
            pb.grad = pa.grad.bfloat16()
        run_a.step()
        run_b.step()
    for pa, pb in zip(a, b, strict=True):
        assert pb.dtype == torch.bfloat16
        torch.testing.assert_close(pb.float(), pa.detach(), rtol=3e-2, atol=3e-2)
