"""Two-dimensional test functions whose optimization paths can be drawn.

Each function is written with plain arithmetic, so the same formula evaluates Python floats, NumPy
grids (for contour plots) and torch tensors. Gradients are written out by hand: a 2-D step then
costs a few microseconds instead of an autograd pass.

========================  ==========================================  ============  ==========
name                      formula                                     minimum       f(min)
========================  ==========================================  ============  ==========
``rosenbrock``            (1 - x)^2 + 100 (y - x^2)^2                  (1, 1)        0
``beale``                 sum_i (c_i - x + x y^i)^2, c = 1.5, 2.25,    (3, 0.5)      0
                          2.625
``saddle``                x^2 + (y^2 - 1)^2 / 4                        (0, +-1)      0
``ill-conditioned``       (u^2 + 50 v^2) / 2, (u, v) = (x, y) rotated  (0, 0)        0
                          by 30 degrees
========================  ==========================================  ============  ==========

``saddle`` has a saddle point at the origin and starts next to it, on the ridge: plain gradient
descent lingers there (the escaping direction grows by a factor 1 + lr per step), while momentum
and the adaptive methods leave quickly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FUNCTIONS", "TestFunction", "get_function"]

_COS30 = math.cos(math.pi / 6)
_SIN30 = math.sin(math.pi / 6)
_KAPPA = 50.0


@dataclass(frozen=True)
class TestFunction:
    """A 2-D function with a known minimum, a start point and a plotting window."""

    name: str
    description: str
    value: Callable[[Any, Any], Any]
    gradient: Callable[[float, float], tuple[float, float]]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    f_min: float
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    noise: float
    """Standard deviation of the gradient noise for a batch of one example (see ``methods``)."""
    default_steps: int
    default_lrs: dict[str, float] = field(default_factory=dict)
    """Default learning rate per method on this function (used without ``--tune``)."""
    saddles: tuple[tuple[float, float], ...] = ()
    """Saddle points, marked on the plots."""

    def gap(self, x: float, y: float) -> float:
        """f(x, y) - f(min): the distance to the minimum value, 0 at the minimum."""
        return self.value(x, y) - self.f_min


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rosenbrock_grad(x, y):
    return (-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2))


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _beale_grad(x, y):
    a = 1.5 - x + x * y
    b = 2.25 - x + x * y**2
    c = 2.625 - x + x * y**3
    gx = 2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1)
    gy = 2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y**2
    return (gx, gy)


def _saddle(x, y):
    return x**2 + (y**2 - 1) ** 2 / 4


def _saddle_grad(x, y):
    return (2 * x, y * (y**2 - 1))


def _rotate(x, y):
    return (_COS30 * x + _SIN30 * y, -_SIN30 * x + _COS30 * y)


def _ill(x, y):
    u, v = _rotate(x, y)
    return 0.5 * (u**2 + _KAPPA * v**2)


def _ill_grad(x, y):
    u, v = _rotate(x, y)
    # d/dx = u * du/dx + kappa * v * dv/dx, and likewise for y.
    return (u * _COS30 - _KAPPA * v * _SIN30, u * _SIN30 + _KAPPA * v * _COS30)


FUNCTIONS: dict[str, TestFunction] = {
    f.name: f
    for f in (
        TestFunction(
            name="rosenbrock",
            description="Rosenbrock's banana valley: easy to find, slow to follow to (1, 1).",
            value=_rosenbrock,
            gradient=_rosenbrock_grad,
            start=(-1.2, 1.0),
            minima=((1.0, 1.0),),
            f_min=0.0,
            xlim=(-2.0, 2.0),
            ylim=(-1.0, 3.0),
            noise=2.0,
            default_steps=500,
            default_lrs={
                "gd": 1e-3,
                "sgd": 3e-4,
                "minibatch": 1e-3,
                "momentum": 3e-4,
                "nesterov": 3e-4,
                "adagrad": 0.3,
                "rmsprop": 0.01,
                "adadelta": 10.0,
                "adam": 0.1,
            },
        ),
        TestFunction(
            name="beale",
            description="Beale's function: flat plateaus and steep ridges around (3, 0.5).",
            value=_beale,
            gradient=_beale_grad,
            start=(1.0, 1.4),
            minima=((3.0, 0.5),),
            f_min=0.0,
            xlim=(-0.5, 4.0),
            ylim=(-1.0, 2.0),
            noise=1.0,
            default_steps=500,
            default_lrs={
                "gd": 0.01,
                "sgd": 3e-3,
                "minibatch": 0.01,
                "momentum": 3e-3,
                "nesterov": 3e-3,
                "adagrad": 0.3,
                "rmsprop": 0.01,
                "adadelta": 10.0,
                "adam": 0.03,
            },
        ),
        TestFunction(
            name="saddle",
            saddles=((0.0, 0.0),),
            description="A saddle point at (0, 0) between minima at (0, 1) and (0, -1).",
            value=_saddle,
            gradient=_saddle_grad,
            start=(1.5, 1e-4),
            minima=((0.0, 1.0), (0.0, -1.0)),
            f_min=0.0,
            xlim=(-1.8, 1.8),
            ylim=(-1.5, 1.5),
            noise=0.3,
            default_steps=300,
            default_lrs={
                "gd": 0.1,
                "sgd": 0.1,
                "minibatch": 0.1,
                "momentum": 0.03,
                "nesterov": 0.03,
                "adagrad": 0.3,
                "rmsprop": 0.03,
                "adadelta": 10.0,
                "adam": 0.03,
            },
        ),
        TestFunction(
            name="ill-conditioned",
            description="A quadratic bowl 50x steeper across than along, tilted by 30 degrees.",
            value=_ill,
            gradient=_ill_grad,
            start=(-2.0, 1.5),
            minima=((0.0, 0.0),),
            f_min=0.0,
            xlim=(-2.5, 2.5),
            ylim=(-2.0, 2.0),
            noise=1.0,
            default_steps=300,
            default_lrs={
                "gd": 0.03,
                "sgd": 0.01,
                "minibatch": 0.03,
                "momentum": 0.01,
                "nesterov": 0.01,
                "adagrad": 0.3,
                "rmsprop": 0.01,
                "adadelta": 10.0,
                "adam": 0.1,
            },
        ),
    )
}


def get_function(name: str) -> TestFunction:
    """The test function called ``name``; ``KeyError`` lists the known ones."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown test function {name!r}; known: {', '.join(FUNCTIONS)}") from None
