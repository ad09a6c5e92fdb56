"""Keras-style metrics: ``from optimist.metrics import TopKAccuracy``.

A re-export of :mod:`optimist.training.metrics`.
"""

from optimist.training.metrics import *  # noqa: F403
from optimist.training.metrics import __all__  # noqa: F401
