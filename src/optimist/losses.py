"""Keras-style losses: classes (``CategoricalCrossentropy(from_logits=True)``) and per-sample
functions (``categorical_crossentropy``), usable in ``compile`` like their names.

A re-export of :mod:`optimist.training.losses`.
"""

from optimist.training.losses import *  # noqa: F403
from optimist.training.losses import __all__  # noqa: F401
