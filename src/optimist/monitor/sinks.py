"""Where records go besides the in-memory history: the JSON-lines log, CSV, TensorBoard."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Protocol

from optimist.monitor.logfile import ChunkedAppender, LogWriter


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class CSVSink:
    """Long-format CSV (``step,signal,value``), so signals that appear later need no new column."""

    def __init__(self, path: str | os.PathLike[str], chunk: int = 200) -> None:
        self._out = ChunkedAppender(path, chunk)
        self._out.write("step,signal,value")

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key != "step":
                buf = io.StringIO()
                csv.writer(buf, lineterminator="").writerow([step, key, value])
                self._out.write(buf.getvalue())

    def close(self) -> None:
        self._out.flush()


def tensorboard_available() -> bool:
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


class TensorBoardSink:
    """Scalars to a TensorBoard run folder (``torch.utils.tensorboard``; needs ``tensorboard``)."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "tensorboard=... needs the tensorboard package: pip install tensorboard"
            ) from None
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step":
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        self._writer.close()


__all__ = ["CSVSink", "LogWriter", "Sink", "TensorBoardSink", "tensorboard_available"]
