"""Keras weight regularizers: ``optimist.regularizers.l2(1e-4)``.

A re-export of :mod:`optimist.training.regularizers`.
"""

from optimist.training.regularizers import *  # noqa: F403
from optimist.training.regularizers import __all__  # noqa: F401
