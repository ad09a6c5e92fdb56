"""The engine's fast gather (``RuleOptimizer._gather_fast``: list comprehensions and one C++
plan per group and step) against the general per-parameter gather, bit for bit, through every
event that changes what a step sees: the learning rate and other settings changed by hand or by
a scheduler (also a tensor lr), parameters losing and gaining gradients, a parameter's first
gradient mid-run, ``add_param_group``, ``load_state_dict``, state tensors replaced or deleted by
hand, a parameter's whole state dict replaced or deleted, the group's list reordered or shortened
in place, a parameter's storage replaced (``p.data = ...``), a state mapping of the user's own.

The fast gather remembers which state dict belongs to which parameter between steps
(``gather._Known``, valid while the optimizer's ``TrackedState`` is unchanged); every event above
must invalidate it or not matter. A test per event would only repeat this one scenario.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
import torch

import optimist.optim as oo
from optimist.optim.engine import RuleOptimizer
from optimist.optim.gather import TrackedState

from .table import needs_engine

CASES: dict[str, tuple[type[RuleOptimizer], dict[str, Any]]] = {
    "adam": (oo.Adam, {"lr": 1e-2}),
    "sgd_momentum": (oo.SGD, {"lr": 1e-2, "momentum": 0.9}),  # a fresh slot (from the grad)
    "nadam": (oo.NAdam, {"lr": 1e-2}),  # scalar state (mu_product)
    "ademamix": (oo.AdEMAMix, {"lr": 1e-2}),
    "adan": (oo.Adan, {"lr": 1e-2, "weight_decay": 0.01}),
    "prodigy": (oo.Prodigy, {"lr": 1.0}),  # a global pass before the rule
}


def _params(seed: int, n: int = 6) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5 + i % 3, generator=gen)) for i in range(n)]


def _cloned(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def _swap(xs: list, i: int, j: int) -> None:
    xs[i], xs[j] = xs[j], xs[i]


def _tracked_copy(state: TrackedState) -> TrackedState:
    copy = TrackedState({p: _cloned(s) for p, s in state.items()})
    copy.version = state.version
    return copy


def _grads(params: list[torch.Tensor], step: int, skip: set[int] = frozenset()) -> None:
    gen = torch.Generator().manual_seed(1000 + step)
    for i, p in enumerate(params):
        g = torch.randn(p.shape, generator=gen)
        p.grad = None if i in skip else g


class _Counted:
    """Counts how often each gather runs on one optimizer (and can switch the fast one off)."""

    def __init__(self, opt: RuleOptimizer, fast: bool) -> None:
        self.fast_hits = 0
        fast_gather = opt._gather_fast

        def gather_fast(group: dict[str, Any], slots: list) -> Any:
            if not fast:
                return None
            out = fast_gather(group, slots)
            self.fast_hits += out is not None
            return out

        opt._gather_fast = gather_fast  # type: ignore[method-assign]


def _scenario(make: Callable[[list], RuleOptimizer], fast: bool) -> tuple[list, RuleOptimizer, int]:
    params = _params(0)
    late = _params(1, n=2)  # joins by add_param_group
    opt = make(params)
    counted = _Counted(opt, fast)
    aside: list[torch.Tensor] = []
    events: list[Callable[[], None]] = [
        lambda: None,
        lambda: None,
        lambda: opt.param_groups[0].update(lr=opt.param_groups[0]["lr"] * 0.5),
        lambda: _grads(params, 3, skip={1, 4}),  # two params lose their gradient
        lambda: None,  # ... and get it back (the default below)
        lambda: opt.param_groups[0].update(maximize=True),
        lambda: opt.param_groups[0].update(maximize=False),
        # (the group's lr: Prodigy's groups share one)
        lambda: opt.add_param_group({"params": late, "lr": opt.param_groups[0]["lr"]}),
        lambda: opt.load_state_dict(opt.state_dict()),  # new state dicts and tensors
        lambda: opt.state[params[2]].update(
            {k: torch.zeros_like(v) for k, v in opt.state[params[2]].items() if v.dim() > 0}
        ),  # state tensors replaced by hand
        lambda: opt.state.pop(params[3]),  # state deleted: made anew
        lambda: None,
        # a parameter's state dict replaced by a copy (the old dict's tensors left behind)
        lambda: opt.state.__setitem__(params[1], _cloned(opt.state[params[1]])),
        lambda: opt.state.__delitem__(params[0]),  # made anew
        lambda: None,
        lambda: opt.state.update({params[4]: _cloned(opt.state[params[4]])}),
        # the group's list reordered in place (same list and tensors; swapped: equal shapes)
        lambda: _swap(opt.param_groups[0]["params"], 0, 3),
        lambda: None,
        lambda: aside.append(opt.param_groups[0]["params"].pop()),  # one leaves the group
        lambda: setattr(params[2], "data", params[2].data.clone()),  # new storage, same tensor
        lambda: opt.param_groups[0]["params"].append(aside.pop()),  # ... and comes back
        # a state mapping of the user's own (not tracked): read anew every step
        lambda: setattr(opt, "state", defaultdict(dict, opt.state)),
        lambda: opt.state.__setitem__(params[1], _cloned(opt.state[params[1]])),
        lambda: opt.load_state_dict(opt.state_dict()),  # tracked again
        lambda: None,
        # another tracked mapping (copied state dicts) that happens to have the same count
        lambda: setattr(opt, "state", _tracked_copy(opt.state)),
    ]
    for step, event in enumerate(events):
        _grads(params, step)
        _grads(late, 100 + step)
        if step == 0:
            params[5].grad = None  # its first gradient comes at step 1 (state made mid-run)
        event()
        opt.step()
    return params + late, opt, counted.fast_hits


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_gather_equals_the_general_gather_through_every_event(name: str) -> None:
    needs_engine()
    cls, kwargs = CASES[name]
    fast_params, fast_opt, hits = _scenario(lambda ps: cls(ps, **kwargs), fast=True)
    slow_params, slow_opt, none = _scenario(lambda ps: cls(ps, **kwargs), fast=False)
    assert none == 0 and hits >= 10  # the fast path ran on most steps (not where state is made)
    for a, b in zip(fast_params, slow_params, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(fast_params, slow_params, strict=True):
        sa, sb = fast_opt.state[a], slow_opt.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def test_fast_gather_with_a_scheduler_and_a_tensor_lr() -> None:
    """A tensor lr moved by a scheduler every step reaches every step's scalars."""
    needs_engine()
    runs = []
    for fast in (True, False):
        params = _params(0)
        opt = oo.AdamW(params, lr=torch.tensor(0.01), weight_decay=0.1)
        counted = _Counted(opt, fast)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)
        for step in range(6):
            _grads(params, step)
            opt.step()
            sched.step()
        runs.append((params, counted.fast_hits))
    (fast_params, hits), (slow_params, _) = runs
    assert hits == 5  # every step but the first (which makes the state)
    for a, b in zip(fast_params, slow_params, strict=True):
        assert torch.equal(a, b)


def test_fast_gather_leaves_unsupported_tensors_to_the_general_path() -> None:
    """A non-contiguous parameter makes the group take the general gather (its eager route),
    with the same result as a run that never tried the fast one."""
    needs_engine()
    runs = []
    for fast in (True, False):
        base = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
        params = [torch.nn.Parameter(base.t().contiguous().t())] + _params(0, n=3)
        assert not params[0].is_contiguous()
        opt = oo.Adam(params, lr=1e-2)
        counted = _Counted(opt, fast)
        for step in range(3):
            _grads(params, step)
            opt.step()
        runs.append((params, counted.fast_hits))
    (fast_params, hits), (slow_params, _) = runs
    assert hits == 0
    for a, b in zip(fast_params, slow_params, strict=True):
        assert torch.equal(a, b)


def test_fast_gather_remembers_the_state_lookups_in_a_training_loop() -> None:
    """zero_grad (new gradient tensors every step) keeps the remembered lookups; a state entry
    made or deleted drops them."""
    needs_engine()
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = oo.Adam(model.parameters(), lr=1e-2)
    params = opt.param_groups[0]["params"]
    seen = []
    for step in range(5):
        opt.zero_grad(set_to_none=True)
        model(torch.randn(16, 4, generator=torch.Generator().manual_seed(step))).sum().backward()
        opt.step()
        seen.append(opt._known_states.get(id(params)))
    assert seen[1] is not None and all(k is seen[1] for k in seen[2:])
    opt.state.pop(params[0])
    opt.step()
    assert opt._known_states[id(params)] is not seen[1]


def test_step_hooks_and_the_profiler_label_run_through_torchs_wrapper() -> None:
    """``step`` skips torch's wrapper only while no hook or profiler listens."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    params = _params(0, n=2)
    opt = oo.SGD(params, lr=0.1, momentum=0.9)
    calls: list[str] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
        opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
        opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
    ]
    _grads(params, 0)
    assert opt.step(lambda: 3.0) == 3.0
    assert calls == ["global pre", "pre", "post", "global post"]
    for handle in handles:
        handle.remove()
    calls.clear()
    assert opt.step(lambda: 4.0) == 4.0 and calls == []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#SGD.step" in {e.name for e in prof.events()}


def test_step_hooks_without_a_profiler_behave_as_torch_optim_runs_them():
    """With no profiler running, the hooks run without torch's ``record_function`` (about 10 µs
    a step saved): the same order, the same ``(optimizer, args, kwargs)``, a pre-hook's
    ``(args, kwargs)`` replacing the step's, and torch's error for any other return."""
    seen: dict[str, list] = {}
    results = {}
    for name, cls in (("torch", torch.optim.SGD), ("optimist", oo.SGD)):
        params = _params(0, n=2)
        opt = cls(params, lr=0.1, momentum=0.9)
        calls = seen.setdefault(name, [])

        def pre(o, args, kwargs, calls=calls, opt=opt):  # noqa: ANN001
            calls.append(("pre", o is opt, len(args), args[0] is opt, sorted(kwargs)))
            return (args[0], lambda: 7.0), {}  # a new closure replaces the step's

        def post(o, args, kwargs, calls=calls, opt=opt):  # noqa: ANN001
            calls.append(("post", o is opt, len(args), args[1](), sorted(kwargs)))

        handles = [opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)]
        _grads(params, 0)
        results[name] = (opt.step(closure=lambda: 3.0), [p.detach().clone() for p in params])
        for handle in handles:
            handle.remove()
        bad = opt.register_step_pre_hook(lambda o, a, k: "neither None nor a pair")
        with pytest.raises(RuntimeError, match="must return None or a tuple"):
            opt.step()
        bad.remove()
    assert seen["optimist"] == seen["torch"]
    assert results["optimist"][0] == results["torch"][0] == 7.0
    for ours, theirs in zip(results["optimist"][1], results["torch"][1], strict=True):
        torch.testing.assert_close(ours, theirs)
