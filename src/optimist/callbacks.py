"""Keras-style callbacks: ``from optimist.callbacks import EarlyStopping``.

A re-export of :mod:`optimist.training.callbacks`.
"""

from optimist.training.callbacks import *  # noqa: F403
from optimist.training.callbacks import __all__  # noqa: F401
