"""Keras activations: ``optimist.activations.relu``...

A re-export of :mod:`optimist.training.activations`.
"""

from optimist.training.activations import *  # noqa: F403
from optimist.training.activations import __all__  # noqa: F401
