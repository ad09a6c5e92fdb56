"""Ctrl-C during a comparison: held back while the study is written, and raised only once.

:func:`deferred_sigint` wraps every storage write of the work loop (claiming, reporting,
recording a trial), so an interrupt lands in the training loop or between trials;
:func:`interrupt_once` lets the first Ctrl-C stop the comparison and ignores the rest while the
partial report is written.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["deferred_sigint", "interrupt_once"]


@contextlib.contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back while the block runs, then raise KeyboardInterrupt.

    Storage writes (claiming, reporting, recording a trial) then never stop half way, so an
    interrupt lands in the training loop or between trials, where it is handled cleanly.
    Only the main thread can do this; elsewhere, and when SIGINT is ignored, it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if callable(previous):
            previous(signal.SIGINT, None)  # e.g. interrupt_once's handler: raises, or not
        else:
            raise KeyboardInterrupt


class _FirstInterrupt:
    """A SIGINT handler that raises KeyboardInterrupt once and ignores every later SIGINT, so
    that a burst of Ctrl-C cannot cut short the writing of the partial report."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_once() -> Iterator[_FirstInterrupt]:
    """Within the block, the first Ctrl-C raises KeyboardInterrupt and later ones are ignored
    (main thread only; elsewhere it changes nothing)."""
    handler = _FirstInterrupt()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous in (signal.SIG_IGN, None):
        yield handler
        return
    signal.signal(signal.SIGINT, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGINT, previous)
