"""The :class:`History` returned by ``fit``: per-epoch logs, and a PNG of the curves."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from optimist.training.callback_base import Callback


class History(Callback):
    """Records every epoch's logs.

    ``history.history`` maps each key (``loss``, each metric, ``val_loss``, ``val_<metric>``, and
    e.g. ``learning_rate`` when a scheduler logs it) to a list with one value per epoch;
    ``history.epoch`` lists the (0-based) epoch indices; ``history.params`` holds ``epochs``,
    ``steps`` and ``verbose``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.epoch = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, keys=[{keys}])"

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        keys: list[str] | None = None,
        title: str | None = None,
        dpi: int = 100,
    ) -> Any:
        """Plot the curves: one panel per quantity (``loss``, each metric), training and
        validation together, epochs (1-based) on the x axis.

        With ``path`` the figure is saved there (format from the suffix, PNG by default), written
        atomically (a temporary file renamed into place), and the path is returned; without it the
        matplotlib ``Figure`` is returned. Uses the Agg canvas, so no display is needed and
        pyplot's global state is left alone.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        if not self.history:
            raise ValueError("History is empty: nothing to plot (run fit for at least one epoch)")
        base = keys or [k for k in self.history if not k.startswith("val_")]
        base += [
            k[4:] for k in self.history if k.startswith("val_") and k[4:] not in base and not keys
        ]
        unknown = [k for k in base if k not in self.history and f"val_{k}" not in self.history]
        if unknown:
            raise ValueError(f"no such history keys: {unknown}; available: {list(self.history)}")
        n = len(base)
        fig = Figure(figsize=(5.0 * n, 3.6), dpi=dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n, squeeze=False)[0]
        xs = [e + 1 for e in self.epoch] or None
        for ax, key in zip(axes, base, strict=True):
            for name, style in ((key, "-o"), (f"val_{key}", "--s")):
                values = self.history.get(name)
                if values:
                    x = xs if xs is not None and len(xs) == len(values) else None
                    x = x or list(range(1, len(values) + 1))
                    ax.plot(x, values, style, markersize=3, label=name)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(key)
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        if path is None:
            return fig
        target = Path(path)
        fmt = target.suffix[1:].lower() or "png"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fig.savefig(fh, format=fmt)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return target
