"""``optimist.transforms``: Optax-style gradient transformations (see
:mod:`optimist.optim.transforms`, where they are defined)."""

from optimist.optim.transforms import *  # noqa: F403
from optimist.optim.transforms import __all__  # noqa: F401
