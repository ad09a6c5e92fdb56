"""The monitor log: JSON lines, written in chunks so that a killed run leaves a readable prefix.

The first line is a header (``{"type": "header", "format": "optimist-monitor", "version": 1,
...}``), every further line one record (``{"type": "record", "step": ..., <signal>: value}``).
The file is created atomically (temporary file, then rename) and each later chunk of complete
lines is appended with a single ``write``; a run killed in the middle of a write leaves at most a
partial last line, which :func:`read_log` skips (and reports in ``truncated``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "optimist-monitor"
VERSION = 1


class ChunkedAppender:
    """Text lines to ``path`` in chunks: the first creates the file atomically, later ones are
    appended by one ``os.write`` each (``chunk`` lines per write; :meth:`flush` writes the rest)."""

    def __init__(self, path: str | os.PathLike[str], chunk: int = 50) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"the log path {str(self.path)!r} is a directory")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"the folder of {str(self.path)!r} does not exist")
        self.chunk = chunk
        self._lines: list[str] = []
        self._created = False

    def write(self, line: str) -> None:
        self._lines.append(line.rstrip("\n") + "\n")
        if len(self._lines) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if not self._lines and self._created:
            return
        data = "".join(self._lines).encode()
        self._lines = []
        if not self._created:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._created = True
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def _json_value(value: Any) -> Any:
    # JSON has no NaN/inf: write them as strings that read back as floats
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class LogWriter:
    """Writes a monitor log; ``header`` is merged into the first line."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], chunk: int = 50):
        self._out = ChunkedAppender(path, chunk)
        self._out.write(
            json.dumps({"type": "header", "format": FORMAT, "version": VERSION, **header})
        )
        self._out.flush()

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(
            json.dumps({"type": "record", **{k: _json_value(v) for k, v in record.items()}})
        )

    def close(self) -> None:
        self._out.flush()


@dataclass
class MonitorLog:
    """A log read back: its header, its records, and whether a partial last line was skipped."""

    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def _float_back(value: Any) -> Any:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return value


def read_log(path: str | os.PathLike[str]) -> MonitorLog:
    """Reads a monitor log; a partial last line (a killed run) is skipped, not an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no monitor log at {str(path)!r}")
    raw = path.read_bytes().decode("utf-8", errors="replace")
    lines = raw.split("\n")
    last_partial = not raw.endswith("\n")
    log: MonitorLog | None = None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if is_last and last_partial:
                if log is not None:
                    log.truncated = True
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON") from None
        if log is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise ValueError(f"{path}: not an optimist monitor log (no header line)")
            if obj.get("version", 0) > VERSION:
                raise ValueError(
                    f"{path}: log version {obj.get('version')} is newer than this optimist reads "
                    f"({VERSION})"
                )
            log = MonitorLog(header=obj)
        elif isinstance(obj, dict) and obj.get("type") == "record" and "step" in obj:
            log.records.append({k: _float_back(v) for k, v in obj.items() if k != "type"})
    if log is None:
        raise ValueError(f"{path}: empty file, not an optimist monitor log")
    return log
