"""Figures of a results document, as PNG (and GIF) bytes, drawn with matplotlib's Agg backend.

Curves show the mean over seeds as a line and the min-max range across seeds as a band.
Figures are built on the Agg canvas directly (not through pyplot), so drawing a report never
changes the caller's matplotlib backend or leaves figures open.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from typing import Any

import matplotlib
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from optimist.comparison.functions import FUNCTIONS
from optimist.comparison.training_loop import GAP_FLOOR

__all__ = [
    "accuracy_png",
    "contour_png",
    "curves_png",
    "method_colors",
    "sensitivity_png",
    "trajectory_gif",
]

DPI = 90


def method_colors(document: dict[str, Any]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(document["methods"])}


def _figure(size: tuple[float, float], dpi: float = 100) -> Figure:
    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _runs(document: dict[str, Any], task: str, method: str) -> list[dict[str, Any]]:
    runs = [
        r
        for r in document["runs"]
        if r["task"] == task and r["method"] == method and r["curves"] is not None
    ]
    complete = [r for r in runs if r["state"] == "complete"]
    return complete or runs


def _band(runs: list[dict[str, Any]], x_key: str, y_key: str):
    """(x, mean, low, high) over runs aligned by evaluation index, or None."""
    series = []
    for r in runs:
        xs, ys = r["curves"].get(x_key), r["curves"].get(y_key)
        if xs is None or ys is None:
            continue
        series.append((xs, ys))
    if not series:
        return None
    n = min(len(xs) for xs, _ in series)
    x = np.array([[np.nan if v is None else v for v in xs[:n]] for xs, _ in series], float)
    y = np.array([[np.nan if v is None else v for v in ys[:n]] for _, ys in series], float)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return (np.nanmean(x, 0), np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0))


def _loss_axis(ax, kind: str) -> None:
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)
    if kind == "function":
        ax.set_ylabel("f(x, y) - f(min)")


_X_LABELS = {"step": "optimizer steps", "time_s": "training time (s)", "epoch": "epochs"}


def curves_png(document: dict[str, Any], task: str, x_key: str) -> bytes | None:
    """Loss against ``x_key`` (``step``, ``time_s`` or ``epoch``): training and validation loss
    panels on a data task, the gap to the minimum on a 2-D function."""
    kind = document["tasks"][task]["kind"]
    colors = method_colors(document)
    panels = (
        [("val_loss", "gap to the minimum")]
        if kind == "function"
        else [
            ("train_loss", "training loss (mean over each interval)"),
            ("val_loss", "validation loss"),
        ]
    )
    fig = _figure((5.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    drawn = False
    for ax, (y_key, title) in zip(axes[0], panels, strict=True):
        for method in document["methods"]:
            band = _band(_runs(document, task, method), x_key, y_key)
            if band is None:
                continue
            x, mean, low, high = band
            if kind == "function":
                mean, low, high = (np.maximum(a, GAP_FLOOR) for a in (mean, low, high))
            if x_key == "step" and kind == "data":
                x = np.maximum(x, 0)
            ax.plot(x, mean, color=colors[method], label=method, lw=1.6)
            if np.any(high > low):
                ax.fill_between(x, low, high, color=colors[method], alpha=0.18, lw=0)
            drawn = True
        _loss_axis(ax, kind)
        ax.set_xlabel(_X_LABELS[x_key])
        ax.set_title(title, fontsize=10)
        if x_key == "step" and kind == "data":
            ax.set_xscale("symlog", linthresh=10)  # steps span 1 (GD) to 10^5 (batch-1 SGD)
            ax.set_xlim(left=0)
    if not drawn:
        return None
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"{task}: loss vs {_X_LABELS[x_key]} (line: mean over seeds; band: min-max)", fontsize=10
    )
    fig.tight_layout()
    return _png(fig)


def accuracy_png(document: dict[str, Any], task: str) -> bytes | None:
    """Validation accuracy against epochs (data tasks with accuracy)."""
    colors = method_colors(document)
    fig = _figure((5.6, 3.6))
    ax = fig.subplots()
    drawn = False
    for method in document["methods"]:
        band = _band(_runs(document, task, method), "epoch", "val_acc")
        if band is None:
            continue
        x, mean, low, high = band
        ax.plot(x, 100 * mean, color=colors[method], label=method, lw=1.6)
        if np.any(high > low):
            ax.fill_between(x, 100 * low, 100 * high, color=colors[method], alpha=0.18, lw=0)
        drawn = True
    if not drawn:
        return None
    target = document["tasks"][task].get("target", {})
    if target.get("metric") == "val_acc":
        ax.axhline(100 * target["threshold"], color="grey", ls=":", lw=1)
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{task}: validation accuracy", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def sensitivity_png(document: dict[str, Any], task: str) -> bytes | None:
    """Tuning objective against learning rate for each method (hollow: pruned, x: diverged)."""
    trials = [t for t in document["tuning"] if t["task"] == task]
    if not trials:
        return None
    kind = document["tasks"][task]["kind"]
    colors = method_colors(document)
    fig = _figure((6.4, 3.8))
    ax = fig.subplots()
    values = [t["objective"] for t in trials if t["objective"] is not None]
    top = max(values) if values else 1.0
    for method in document["methods"]:
        mine = sorted((t for t in trials if t["method"] == method), key=lambda t: t["lr"])
        if not mine:
            continue
        done = [t for t in mine if t["state"] == "complete" and t["objective"] is not None]
        ax.plot(
            [t["lr"] for t in done],
            [t["objective"] for t in done],
            "o-",
            color=colors[method],
            label=method,
            lw=1.4,
            ms=4,
        )
        pruned = [t for t in mine if t["state"] == "pruned" and t["objective"] is not None]
        ax.plot(
            [t["lr"] for t in pruned],
            [t["objective"] for t in pruned],
            "o",
            mfc="none",
            color=colors[method],
            ms=6,
        )
        div = [t for t in mine if t["state"] == "diverged"]
        ax.plot([t["lr"] for t in div], [top] * len(div), "x", color=colors[method], ms=7)
    ax.set_xscale("log")
    if kind == "data" and values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(
        "mean log10 gap over the run" if kind == "function" else "validation loss at the end"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", ncol=2)
    ax.set_title(
        f"{task}: learning-rate sensitivity (o complete, hollow pruned, "
        f"x diverged, drawn at the top)",
        fontsize=9,
    )
    fig.tight_layout()
    return _png(fig)


def _paths(document: dict[str, Any], task: str) -> dict[str, np.ndarray]:
    paths = {}
    for method in document["methods"]:
        runs = [
            r
            for r in document["runs"]
            if r["task"] == task and r["method"] == method and r.get("trajectory")
        ]
        if runs:
            paths[method] = np.array(runs[0]["trajectory"], dtype=float)
    return paths


def _contour_axes(task: str, figsize=(6.0, 4.8), resolution: int = 300):
    """Axes with log10(f - f(min)) drawn as a shaded image plus contour lines. The shading is
    an image, not filled polygons, so that redrawing it for each GIF frame is cheap."""
    f = FUNCTIONS[task]
    fig = _figure(figsize)
    ax = fig.subplots()
    xs = np.linspace(*f.xlim, resolution)
    ys = np.linspace(*f.ylim, resolution)
    gx, gy = np.meshgrid(xs, ys)
    z = np.log10(np.maximum(f.value(gx, gy) - f.f_min, 0) + 1e-3)
    ax.imshow(
        z,
        extent=(*f.xlim, *f.ylim),
        origin="lower",
        cmap="Greys_r",
        alpha=0.55,
        aspect="auto",
        interpolation="bilinear",
    )
    ax.contour(gx, gy, z, levels=15, colors="k", linewidths=0.3, alpha=0.5)
    for mx, my in f.minima:
        ax.plot(mx, my, "*", color="gold", mec="k", ms=14, zorder=5)
    ax.plot(*f.start, "o", color="white", mec="k", ms=7, zorder=5)
    ax.set_xlim(*f.xlim)
    ax.set_ylim(*f.ylim)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return fig, ax


def contour_png(document: dict[str, Any], task: str) -> bytes | None:
    """Each method's path (first seed) over the function's contour plot."""
    if task not in FUNCTIONS:
        return None
    paths = _paths(document, task)
    if not paths:
        return None
    colors = method_colors(document)
    fig, ax = _contour_axes(task)
    for method, path in paths.items():
        ax.plot(path[:, 0], path[:, 1], "-", color=colors[method], lw=1.5, label=method, alpha=0.9)
        ax.plot(path[-1, 0], path[-1, 1], "o", color=colors[method], ms=4)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.85)
    ax.set_title(f"{task}: walking down the hill (o start, * minimum)", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def trajectory_gif(
    document: dict[str, Any], task: str, frames: int = 30, fps: int = 10, dpi: int = 80
) -> bytes | None:
    """An animated GIF of the paths growing step by step (matplotlib's PillowWriter).

    The contour plot, axes and legend are drawn once and reused as a raster background; each
    frame draws only the paths on top, in pixel coordinates, so a frame costs milliseconds.
    """
    if task not in FUNCTIONS:
        return None
    paths = _paths(document, task)
    if not paths:
        return None
    from matplotlib.patches import Rectangle

    colors = method_colors(document)
    size = (5.0, 4.0)
    static, ax = _contour_axes(task, figsize=size, resolution=150)
    static.set_dpi(dpi)
    for method in paths:
        ax.plot([], [], "-", color=colors[method], lw=1.5, label=method)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.85)
    ax.set_title(" ", fontsize=9)
    static.tight_layout()
    static.canvas.draw()
    background = np.asarray(static.canvas.buffer_rgba()).copy()
    height, width = background.shape[:2]
    box = ax.bbox
    title_at = ax.title.get_window_extent()
    pixels = {m: ax.transData.transform(p) for m, p in paths.items()}

    fig = _figure(size, dpi=dpi)
    canvas = fig.add_axes((0, 0, 1, 1))
    canvas.set_axis_off()
    canvas.imshow(background, extent=(0, width, 0, height), origin="upper", interpolation="nearest")
    canvas.set_xlim(0, width)
    canvas.set_ylim(0, height)
    clip = Rectangle((box.x0, box.y0), box.width, box.height, transform=canvas.transData)
    lines, heads = {}, {}
    for method in paths:
        (lines[method],) = canvas.plot([], [], "-", color=colors[method], lw=1.2)
        (heads[method],) = canvas.plot([], [], "o", color=colors[method], ms=4)
        lines[method].set_clip_path(clip)
        heads[method].set_clip_path(clip)
    title = canvas.text(
        (title_at.x0 + title_at.x1) / 2,
        (title_at.y0 + title_at.y1) / 2,
        "",
        ha="center",
        va="center",
        fontsize=9,
    )
    longest = max(len(p) for p in paths.values())
    steps_total = max(
        (r["final"]["steps"] for r in document["runs"] if r["task"] == task and r["final"]),
        default=longest,
    )
    n_frames = max(2, min(frames, longest))

    def draw(i: int):
        upto = max(1, math.ceil((i + 1) * longest / n_frames))
        for method, path in pixels.items():
            part = path[: min(upto, len(path))]
            lines[method].set_data(part[:, 0], part[:, 1])
            heads[method].set_data(part[-1:, 0], part[-1:, 1])
        shown = round(steps_total * min(upto, longest) / longest)
        title.set_text(f"{task}: step {shown} of {steps_total}")
        return [*lines.values(), *heads.values(), title]

    animation = FuncAnimation(fig, draw, frames=n_frames, blit=False)
    fd, tmp = tempfile.mkstemp(suffix=".gif")
    os.close(fd)
    try:
        animation.save(tmp, writer=PillowWriter(fps=fps), dpi=dpi)
        with open(tmp, "rb") as handle:
            data = handle.read()
    finally:
        os.unlink(tmp)
    return data
