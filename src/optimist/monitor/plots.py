"""Plots of every monitor signal (one panel per family), and the LR range-test curve."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from optimist.monitor.verdicts import Verdict

# panel title -> (signal prefix or name, log scale)
_PANELS: list[tuple[str, tuple[str, ...], bool]] = [
    ("loss", ("loss", "val_loss"), False),
    ("gradient norm", ("grad_norm",), True),
    ("update ratio ||dw||/||w||", ("update_ratio/",), True),
    ("effective learning rate", ("eff_lr/",), True),
    ("dead ReLU share", ("dead/",), False),
    ("optimizer state", ("momentum_norm", "v_min", "v_max"), True),
    ("non-finite gradient share", ("nonfinite",), False),
    ("sharpness", ("sharpness",), False),
]


def _matches(key: str, names: tuple[str, ...]) -> bool:
    return any(
        key.startswith(n) if n.endswith("/") else key == n or key.startswith(n + "/") for n in names
    )


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Saves ``fig`` atomically; the format follows the suffix (``.png`` or ``.svg``)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"the plot must be a .png or .svg file, got {str(path)!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {str(path)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{fmt}", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, dpi=110)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def plot_signals(
    series: dict[str, list[tuple[int, float]]],
    path: str | os.PathLike[str],
    verdicts: list[Verdict] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per signal family present in ``series``; verdict steps as dashed lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [
        (t, names, log) for t, names, log in _PANELS if any(_matches(k, names) for k in series)
    ]
    if not panels:
        raise ValueError("the log has no signals to plot")
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3 * rows), squeeze=False)
    try:
        for ax, (panel_title, names, log) in zip(axes.flat, panels, strict=False):
            for key in sorted(k for k in series if _matches(k, names)):
                steps = [s for s, _ in series[key]]
                values = [v for _, v in series[key]]
                if log:
                    values = [v if v > 0 else float("nan") for v in values]
                ax.plot(steps, values, label=key, lw=1.2, marker="." if len(steps) < 30 else None)
            if log:
                ax.set_yscale("log")
            if panel_title.startswith("update ratio"):
                ax.axhline(1e-3, color="grey", ls=":", lw=1)
            for v in verdicts or []:
                if v.name != "healthy":
                    ax.axvline(v.step, color="red", ls="--", lw=0.8, alpha=0.6)
            ax.set_title(panel_title, fontsize=10)
            ax.set_xlabel("step")
            ax.legend(fontsize=7, loc="best")
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)
