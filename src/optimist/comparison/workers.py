"""Parallel trials: ``--workers N`` starts N processes (``spawn``) that all run
:func:`optimist.comparison.runner.work` on the same study and report back through a queue.

Each worker opens the storage itself and pulls trials; the coordinator only relays progress.
Results do not depend on N: every trial is seeded from (task, seed) alone and runs with one torch
thread, and tuning studies run their trials in a fixed order (see ``study``).
A worker whose coordinator has died stops taking new trials.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue as queue_module
import signal
from collections.abc import Callable
from typing import Any

from optimist.comparison.interrupts import interrupt_once
from optimist.comparison.runner import Config, Context, RunError, work

__all__ = ["run_workers"]


def _worker_main(config: Config, events: Any, parent_pid: int) -> None:
    with interrupt_once():
        try:
            ctx = Context(config)
            work(ctx, on_event=events.put, parent_pid=parent_pid)
        except KeyboardInterrupt:
            pass
        except RunError as exc:  # the machine failed: the coordinator stops the run
            events.put(
                {"type": "worker_error", "pid": os.getpid(), "error": str(exc), "fatal": True}
            )
        except Exception as exc:  # reported to the coordinator, which finishes the work itself
            events.put(
                {
                    "type": "worker_error",
                    "pid": os.getpid(),
                    "error": f"{type(exc).__name__}: {exc}",
                    "fatal": False,
                }
            )
        finally:
            events.put({"type": "worker_exit", "pid": os.getpid()})


def run_workers(config: Config, n: int, on_event: Callable[[dict[str, Any]], None]) -> None:
    """Run ``n`` worker processes to completion; Ctrl-C stops them (their running trials are
    marked failed, so a re-run redoes them) and is re-raised."""
    mp = multiprocessing.get_context("spawn")
    events = mp.Queue()
    procs = [
        mp.Process(target=_worker_main, args=(config, events, os.getpid()), name=f"optimist-{i}")
        for i in range(n)
    ]
    for p in procs:
        p.start()

    def drain(timeout: float) -> None:
        try:
            event = events.get(timeout=timeout)
        except queue_module.Empty:
            return
        on_event(event)
        while True:
            try:
                on_event(events.get_nowait())
            except queue_module.Empty:
                return

    try:
        while any(p.is_alive() for p in procs):
            drain(0.2)
        drain(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join(timeout=20)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        with contextlib.suppress(Exception):
            drain(0.1)
        raise
    finally:
        for p in procs:
            p.join(timeout=5)
        events.close()
