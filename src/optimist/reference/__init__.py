"""Plain-NumPy reference implementations of optimizer update rules.

This module is the independent oracle that ``optimist``'s PyTorch optimizers are
tested against, and a place to read how each optimizer works. Each rule is one
short pure function, written the way the paper writes it, with the math in its
docstring. All rules are called the same way::

    new_param, new_state = rule(param, grad, state, **hyperparameters)

* ``param`` and ``grad`` are NumPy arrays of the same shape (real or complex).
* ``state`` is ``{}`` before the first step; afterwards pass back the state the
  previous call returned. Its keys are those ``torch.optim`` uses (``step``,
  ``exp_avg``, ``exp_avg_sq``, ...), with ``step`` a Python ``int``.
* Nothing is modified in place: the inputs are left untouched and fresh arrays
  are returned.
* Hyperparameters are keyword-only and have ``torch.optim``'s names and
  defaults. The arithmetic follows ``torch.optim``'s single-tensor code path, so
  in float64 the two agree to rounding error (see :func:`nadam` for the one
  place where torch keeps scalar state in its default dtype).
* A complex parameter is treated as a pair of real numbers (its real and
  imaginary parts), exactly as ``torch.optim`` does with ``view_as_real``.

Only NumPy and the standard library are used; this module never imports torch.

Example: minimise ``f(x) = x @ x / 2`` (gradient ``x``) with Adam::

    import numpy as np
    from optimist import reference

    x = np.array([1.0, -2.0, 3.0])
    state = {}
    for _ in range(100):
        grad = x  # gradient of f at x
        x, state = reference.adam(x, grad, state, lr=0.1)
    print(state["step"], x)  # 100 [0.003 0.008 0.019]: heading to 0

``RULES`` maps each rule's lowercase name to its function.
"""

from __future__ import annotations

from optimist.reference._common import Rule, State
from optimist.reference.adaptive import lookahead, prodigy, sophia_g, sophia_g_update_hessian
from optimist.reference.classic import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    nadam,
    radam,
    rmsprop,
    sgd,
)
from optimist.reference.codecs import QUANT_BLOCK, int8_decode, int8_encode
from optimist.reference.matrix import adafactor, lamb, lars, muon, newton_schulz, soap
from optimist.reference.modern import (
    adan,
    ademamix,
    adopt,
    lion,
    schedule_free_adamw,
    schedule_free_sgd,
)
from optimist.reference.online import ftrl

__all__ = [
    "QUANT_BLOCK",
    "RULES",
    "Rule",
    "State",
    "adadelta",
    "adafactor",
    "ademamix",
    "adan",
    "adopt",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "ftrl",
    "int8_decode",
    "int8_encode",
    "lamb",
    "lars",
    "lion",
    "lookahead",
    "muon",
    "nadam",
    "newton_schulz",
    "prodigy",
    "radam",
    "rmsprop",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "sgd",
    "soap",
    "sophia_g",
    "sophia_g_update_hessian",
]


RULES: dict[str, Rule] = {
    "sgd": sgd,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adadelta": adadelta,
    "adam": adam,
    "adamw": adamw,
    "adamax": adamax,
    "nadam": nadam,
    "radam": radam,
    "lion": lion,
    "ftrl": ftrl,
    "adopt": adopt,
    "ademamix": ademamix,
    "adan": adan,
    "schedule_free_adamw": schedule_free_adamw,
    "schedule_free_sgd": schedule_free_sgd,
    "muon": muon,
    "adafactor": adafactor,
    "lamb": lamb,
    "lars": lars,
    "soap": soap,
    "prodigy": prodigy,
    "sophia_g": sophia_g,
}
