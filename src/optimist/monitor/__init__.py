"""The training monitor: is the optimizer doing its job? Signals, verdicts in plain words, advice.

* :func:`watch` for plain PyTorch loops, :class:`Monitor` for ``fit`` (on by default, light);
* :func:`diagnose` / :func:`health` for a saved log (``optimist diagnose LOGFILE``);
* :func:`lr_finder`, the learning-rate range test.

Depends only on torch, numpy, matplotlib and :mod:`optimist.optim` (never on training).
"""

from optimist.monitor.diagnose import diagnose, health, series_of
from optimist.monitor.logfile import MonitorLog, read_log
from optimist.monitor.lr_finder import LRFinderResult, lr_finder
from optimist.monitor.signals import sharpness
from optimist.monitor.verdicts import (
    ADVICE,
    LABELS,
    LOSS_VERDICTS,
    VERDICTS,
    Thresholds,
    Verdict,
)
from optimist.monitor.watch import Monitor, MonitorWarning, Watch, watch

__all__ = [
    "ADVICE",
    "LABELS",
    "LOSS_VERDICTS",
    "VERDICTS",
    "LRFinderResult",
    "Monitor",
    "MonitorLog",
    "MonitorWarning",
    "Thresholds",
    "Verdict",
    "Watch",
    "diagnose",
    "health",
    "lr_finder",
    "read_log",
    "series_of",
    "sharpness",
    "watch",
]
