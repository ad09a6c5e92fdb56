"""Keras initializers: names (``"he_normal"``), functions and objects (``HeNormal(seed=0)``).

A re-export of :mod:`optimist.training.initializers`.
"""

from optimist.training.initializers import *  # noqa: F403
from optimist.training.initializers import __all__  # noqa: F401
