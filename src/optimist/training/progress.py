"""Progress display for fit/evaluate/predict: a tqdm bar (verbose=1) or a line per epoch (2).

The bar's counter and postfix are refreshed at most every ``REFRESH_S`` seconds, and the logs
(which need a host sync) are only computed then, so the per-batch cost is one clock read.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

REFRESH_S = 0.1


def format_logs(logs: dict[str, Any]) -> str:
    parts = []
    for key, value in logs.items():
        if isinstance(value, float):
            parts.append(f"{key}: {value:.4f}")
        else:
            parts.append(f"{key}: {value}")
    return " - ".join(parts)


def resolve_verbose(verbose: Any) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


class Progress:
    """One epoch (or one evaluate/predict pass) of progress output."""

    def __init__(
        self,
        verbose: int,
        total: int | None,
        desc: str,
        *,
        header: str | None = None,
        unit: str = "step",
    ) -> None:
        self.verbose = verbose
        self.desc = desc
        self.start = time.perf_counter()
        self.bar: Any = None
        self.next_refresh = self.start + REFRESH_S
        self.done = 0
        self.total = total
        self.header = header
        if verbose == 1:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
                mininterval=REFRESH_S,
            )
        elif verbose == 2 and header:
            print(header, flush=True)

    def step(self, done: int, logs: Callable[[], dict[str, Any]] | None = None) -> None:
        """Called after each batch with the number of batches done so far."""
        self.done = done
        if self.bar is None:
            return
        now = time.perf_counter()
        if now >= self.next_refresh:
            self.next_refresh = now + REFRESH_S
            self.bar.update(done - self.bar.n)
            if logs is not None:
                self.bar.set_postfix_str(format_logs(logs()), refresh=True)

    def close(self, logs: dict[str, Any] | None = None) -> None:
        """End the pass. The summary -- count, time, every log entry -- is printed as one full
        line (the terminal wraps it, never cuts it), as Keras does; with ``verbose=1`` the bar
        is cleared first, since a bar is cut to the terminal's width."""
        elapsed = time.perf_counter() - self.start
        if self.bar is not None:
            self.bar.leave = False
            self.bar.close()
            self.bar = None
        if self.verbose in (1, 2):
            count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
            parts = [count, f"{elapsed:.1f}s"]
            if self.done:
                parts.append(f"{1000.0 * elapsed / self.done:.0f}ms/step")
            if logs:
                parts.append(format_logs(logs))
            prefix = f"{self.desc}: " if self.verbose == 1 or not self.header else ""
            print(prefix + " - ".join(parts), flush=True)
