"""Keras-style layers: ``from optimist.layers import Dense, Conv2D, LSTM, ...``.

A re-export of :mod:`optimist.training.layers`; see there for the details.
"""

from optimist.training.layers import *  # noqa: F403
from optimist.training.layers import __all__  # noqa: F401
