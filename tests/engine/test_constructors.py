"""Constructors follow what users already know (issue 12), and docstrings cite their paper.

Every exported class with a ``torch.optim`` namesake (the classic nine, ``Adafactor``, ``Muon``)
takes torch's arguments, in torch's order, of the same kind and with the same defaults (extra
arguments only after them); ``Lion`` has the signature of the paper's reference code; the rest
take ``lr``, ``betas``, ``eps`` and ``weight_decay`` where the rule has them. A changed default
or a renamed argument fails here even where the registry's own defaults would hide it.
"""

from __future__ import annotations

import inspect
import re

import pytest
import torch

import optimist.optim as oo

from .table import exported_optimizer_classes

CLASSES = sorted(exported_optimizer_classes(), key=lambda c: c.__name__)
TWINS = [c for c in CLASSES if isinstance(getattr(torch.optim, c.__name__, None), type)]
OTHERS = [c for c in CLASSES if c not in TWINS]


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls).parameters)


def test_the_twins_include_the_ones_the_issue_names():
    assert {"Adafactor", "Muon", "SGD", "Adam", "AdamW"} <= {c.__name__ for c in TWINS}


@pytest.mark.parametrize("cls", TWINS, ids=lambda c: c.__name__)
def test_torch_twin_arguments_order_kinds_and_defaults(cls):
    theirs = _parameters(getattr(torch.optim, cls.__name__))
    ours = _parameters(cls)
    missing = [name for name in theirs if name not in ours]
    assert not missing, f"{cls.__name__} lacks torch's {missing}"
    assert [name for name in ours if name in theirs] == list(theirs), "torch's order"
    for name, parameter in theirs.items():
        assert ours[name].kind == parameter.kind, (cls.__name__, name)
        assert ours[name].default == parameter.default, (cls.__name__, name)
    # extra arguments come after torch's, so positional calls mean the same
    extra = [i for i, name in enumerate(ours) if name not in theirs]
    assert all(i >= len(theirs) for i in extra), (cls.__name__, list(ours))


def test_lion_signature_is_the_papers_reference_code():
    params = list(_parameters(oo.Lion).items())[:4]
    assert [(n, p.default) for n, p in params[1:]] == [
        ("lr", 1e-4),
        ("betas", (0.9, 0.99)),
        ("weight_decay", 0.0),
    ]
    assert params[0][0] == "params"


# which of lr, betas, eps, weight_decay each rule has (LARS and Schedule-Free SGD take momentum
# instead of betas; Lion has no epsilon; Ftrl neither (sums, no averages; its denominator is
# never 0 with n0 > 0); Lookahead wraps another optimizer and takes none)
HAS = {"lr", "betas", "eps", "weight_decay"}
WITHOUT = {
    "Lion": {"eps"},
    "Ftrl": {"betas", "eps"},
    "LARS": {"betas"},
    "ScheduleFreeSGD": {"betas", "eps"},
    "Lookahead": HAS,
}


@pytest.mark.parametrize("cls", OTHERS, ids=lambda c: c.__name__)
def test_the_rest_take_lr_betas_eps_weight_decay_where_they_apply(cls):
    expected = HAS - WITHOUT.get(cls.__name__, set())
    assert expected <= set(_parameters(cls)), cls.__name__


YEAR = re.compile(r"\b(19|20)\d\d\b")
WHERE = re.compile(r"Algorithm|Alg\.|\beqs?\.|equation|§")


@pytest.mark.parametrize("cls", OTHERS, ids=lambda c: c.__name__)
def test_docstring_names_the_paper_and_where_in_it(cls):
    doc = (inspect.getmodule(cls).__doc__ or "") + (cls.__doc__ or "")
    assert YEAR.search(doc), f"{cls.__name__}: no paper year in its docstring"
    if cls.__name__ == "Muon":  # Jordan et al. 2024 is a blog post without numbered equations
        assert "Newton-Schulz" in doc and ".. math::" in doc
    else:
        assert WHERE.search(doc), f"{cls.__name__}: no algorithm or equation named"
