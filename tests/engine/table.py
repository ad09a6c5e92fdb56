"""The rows of the engine's contract tests, generated from the optimizer registry.

No optimizer is listed here by hand. Every class (or factory) registered in
:mod:`optimist.optim.registry` gets rows, and what they are is derived from the class:

* its settings: the registry defaults of its name, overlaid with each entry of the class's
  ``examples`` (constructor settings that reach every state slot and branch; see
  :class:`optimist.optim.Optimizer`), or the defaults alone when it has none;
* element-wise rows (fused == eager, the NumPy reference, low-precision parameters, DTensor
  parameters) for the classes whose constructor takes ``fused``, the engine's implementation
  choice: the rules; trust-ratio rows for the :class:`TrustRatioOptimizer` subclasses (LAMB,
  LARS: element-wise state, the update scaled per tensor);
* its NumPy reference: the entry of ``optimist.reference.RULES`` under one of its registered
  names or its class name (underscores ignored);
* its torch.optim twin: ``torch.optim.<its class name>``, where one exists.

A new optimizer gets its rows by being registered; ``test_contract.py`` fails when a
registered one ends up without rows, or an element-wise one without a reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import optimist
import optimist.optim as oo
from helpers import needs_engine as needs_engine  # the table's users import it from here
from optimist import reference
from optimist.optim import registry
from optimist.optim.trust_ratio import TrustRatioOptimizer

SHAPES = [(64, 80), (300,), (7,), ()]  # one tensor >= 4096 elements (int8), others float32
STATE_DTYPES = [None, "float32", "bfloat16", "int8"]


def _plain(name: str) -> str:
    return name.lower().replace("_", "")


@dataclass(frozen=True)
class Entry:
    """One registered optimizer (several names of one class with the same defaults: one entry)."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def cls(self) -> type | None:
        return self.factory if isinstance(self.factory, type) else None

    @property
    def parameters(self) -> set[str]:
        return set(inspect.signature(self.factory).parameters)

    @property
    def elementwise(self) -> bool:
        return "fused" in self.parameters

    @property
    def trust_ratio(self) -> bool:
        return self.cls is not None and issubclass(self.cls, TrustRatioOptimizer)

    @property
    def examples(self) -> tuple[dict[str, Any], ...]:
        return tuple(getattr(self.factory, "examples", ())) or ({},)

    @property
    def names(self) -> list[str]:
        names = [n for n in optimist.optimizers() if registry.spec(n).factory is self.factory]
        return [*names, getattr(self.factory, "__name__", self.name)]

    @property
    def reference(self) -> Callable[..., Any] | None:
        wanted = {_plain(n) for n in self.names}
        for key, rule in reference.RULES.items():
            if _plain(key) in wanted:
                return rule
        return None

    @property
    def torch_twin(self) -> type | None:
        twin = getattr(torch.optim, getattr(self.factory, "__name__", ""), None)
        return twin if isinstance(twin, type) else None


def entries() -> list[Entry]:
    """One entry per registered factory, named by its class name where that is registered."""
    by_factory: dict[Any, Entry] = {}
    for name in optimist.optimizers():
        spec = registry.spec(name)
        own = _plain(getattr(spec.factory, "__name__", "")) == _plain(name)
        if spec.factory not in by_factory or own:
            by_factory[spec.factory] = Entry(name, spec.factory, dict(spec.defaults))
    return sorted(by_factory.values(), key=lambda e: e.name)


@dataclass(frozen=True)
class Row:
    """One optimizer with one setting: ``build(params, **extra)``."""

    entry: Entry
    kwargs: dict[str, Any]
    id: str

    def build(self, params: list[torch.Tensor], **extra: Any) -> torch.optim.Optimizer:
        return self.entry.factory(params, **{**self.entry.defaults, **self.kwargs, **extra})


def rows(select: Callable[[Entry], bool] = lambda e: True, *, first_only: bool = False):
    """pytest parameters: every example of every selected entry (or its first example)."""
    out = []
    for entry in entries():
        if not select(entry):
            continue
        examples = entry.examples[:1] if first_only else entry.examples
        for i, kwargs in enumerate(examples):
            ident = entry.name if len(examples) == 1 else f"{entry.name}-{i}"
            out.append(Row(entry, dict(kwargs), ident))
    return out


def ids(row: Row) -> str:
    return row.id


ELEMENTWISE = rows(lambda e: e.elementwise)
TRUST_RATIO = rows(lambda e: e.trust_ratio)
EVERY = rows()
ONE_PER_OPTIMIZER = rows(first_only=True)


# --- shared helpers ------------------------------------------------------------------------------


def make_params(dtype=torch.float32, seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(sets, step, seed=1):
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    for i, p in enumerate(sets[0]):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        for params in sets:
            params[i].grad = g.clone()


def run(cls, kwargs, params, steps=20, seed=1, **extra):
    opt = cls(params, **kwargs, **extra)
    for step in range(steps):
        set_grads([params], step, seed)
        opt.step()
    return opt


def run_row(row: Row, params, steps=20, seed=1, **extra):
    opt = row.build(params, **extra)
    for step in range(steps):
        set_grads([params], step, seed)
        opt.step()
    return opt


def clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


def assert_steps_as_twin(ours, theirs, a, b, *, steps=4, same_dtypes=False):
    """``ours`` over ``a`` and torch's ``theirs`` over ``b`` (a clone) take ``steps`` steps on
    the same gradients: the parameters and every state entry stay ``torch.equal`` (and, with
    ``same_dtypes``, of the same dtype)."""
    for step in range(steps):
        set_grads([a, b], step)
        ours.step()
        theirs.step()
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
        mine, twin = ours.state[pa], theirs.state[pb]
        assert set(mine) == set(twin)
        for key, value in twin.items():
            assert torch.equal(mine[key], value), key
            assert not same_dtypes or mine[key].dtype == value.dtype, key


def exported_optimizer_classes() -> set[type]:
    """Every optimizer class ``optimist.optim`` exports (not the bases)."""
    bases = {oo.Optimizer, oo.RuleOptimizer}
    return {
        obj
        for obj in (getattr(oo, name) for name in oo.__all__)
        if isinstance(obj, type) and issubclass(obj, oo.Optimizer) and obj not in bases
    }
