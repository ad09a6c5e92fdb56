"""Verdicts after the fact: from a saved monitor log, or a ``Watch``; and the one-word health."""

from __future__ import annotations

import os

from optimist.monitor.logfile import MonitorLog, read_log
from optimist.monitor.verdicts import Diagnoser, Thresholds, Verdict
from optimist.monitor.verdicts import health as _health
from optimist.monitor.watch import Watch

Source = str | os.PathLike[str] | MonitorLog | Watch


def _load(source: Source) -> MonitorLog:
    if isinstance(source, MonitorLog):
        return source
    if isinstance(source, (str, os.PathLike)):
        return read_log(source)
    raise TypeError(
        f"expected a monitor log path, a MonitorLog or a Watch, got {type(source).__name__}"
    )


def diagnose(source: Source, thresholds: Thresholds | None = None) -> list[Verdict]:
    """The verdicts of a run: replays a log's records through the rules (``[healthy]`` if
    none fired); a ``Watch`` answers with its own verdicts."""
    if isinstance(source, Watch):
        return source.verdicts()
    log = _load(source)
    diagnoser = Diagnoser(thresholds, log.header.get("layer_sizes"))
    for record in log.records:
        diagnoser.add(record)
    return diagnoser.verdicts()


def health(source: Source | list[Verdict]) -> tuple[str, list[str]]:
    """``(word, verdict names)`` for a report's health column: ``("healthy", [])``,
    ``("warning", ["stalled", ...])`` or ``("diverged", ["diverging", ...])``."""
    verdicts = source if isinstance(source, list) else diagnose(source)
    return _health(verdicts)


def series_of(log: MonitorLog) -> dict[str, list[tuple[int, float]]]:
    """Every signal of a log as ``[(step, value), ...]``."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in log.records:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                out.setdefault(key, []).append((int(record["step"]), float(value)))
    return out


__all__ = ["diagnose", "health", "series_of"]
