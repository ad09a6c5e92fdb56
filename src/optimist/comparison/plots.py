"""Figures of a results document: SVG (sharp on any screen) for the report, PNG where a bitmap
is asked for, and an animated GIF of the paths, drawn with matplotlib's Agg/SVG backends.

Every method has one colour *and* one line style (:func:`method_style`), fixed by its name, so
it looks the same in every figure of a study and between runs; the colours are the Okabe-Ito
palette, which stays distinguishable with the common colour-vision deficiencies, and the line
styles tell methods apart even in grey. Legends sit below the axes, off the data. Curves show the
mean over seeds as a line and the min-max range across seeds as a band. Figures are built on
their own canvas (not through pyplot), so drawing a report never changes the caller's backend.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tempfile
from typing import Any

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from optimist.comparison.functions import FUNCTIONS
from optimist.comparison.methods import METHODS
from optimist.comparison.training_loop import GAP_FLOOR

__all__ = [
    "accuracy_plot",
    "curves_plot",
    "health_plot",
    "method_style",
    "method_styles",
    "paths_grid_plot",
    "paths_plot",
    "sensitivity_plot",
    "trajectory_gif",
]

PNG_DPI = 180
"""PNG figures are drawn at twice the usual resolution, for HiDPI screens."""

OKABE_ITO = (
    "#000000",
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#CC79A7",
    "#0072B2",
    "#D55E00",
)
"""The Okabe-Ito palette without its yellow, which is too light on white."""
LINE_STYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (3, 1, 1, 1, 1, 1)))
"""Solid, dashed, dotted, dash-dot, dash-dot-dot: with the 7 colours, 35 distinct looks (the
built-in methods need 29)."""
BUILT_IN_STYLES = {
    "gd": (0, "-"),
    "sgd": (1, "-"),
    "minibatch": (2, "-"),
    "momentum": (3, "-"),
    "adagrad": (4, "-"),
    "rmsprop": (5, "-"),
    "adadelta": (1, "--"),
    "adam": (6, "-"),
    "nesterov": (3, "--"),
    "adamw": (6, "--"),
    "nadam": (6, ":"),
    "radam": (6, "-."),
    "adamax": (5, "--"),
}


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


def method_style(name: str) -> dict[str, Any]:
    """``{"color", "linestyle"}`` of a method, fixed by its name (the same in every figure and
    every run): the built-in methods from a table, any other name from a hash of it; a method
    with settings (``adam[weight_decay=1e-4]``) keeps its base colour with another line style."""
    base = str(name).split("[", 1)[0]
    others_built_in = sorted(m for m in METHODS if m not in BUILT_IN_STYLES)
    if base in BUILT_IN_STYLES:
        colour, style = BUILT_IN_STYLES[base]
    elif base in others_built_in:  # the registry's optimizers: the unused pairs, in name order
        taken = set(BUILT_IN_STYLES.values())
        free = [(c, s) for s in LINE_STYLES for c in range(len(OKABE_ITO)) if (c, s) not in taken]
        colour, style = free[others_built_in.index(base) % len(free)]
    else:
        h = _hash(base)
        colour, style = h % len(OKABE_ITO), LINE_STYLES[(h // 7) % len(LINE_STYLES)]
    if name != base:
        others = [s for s in LINE_STYLES if s != style]
        style = others[_hash(name) % len(others)]
    return {"color": OKABE_ITO[colour], "linestyle": style}


def method_styles(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m: method_style(m) for m in document["methods"]}


def _figure(size: tuple[float, float], dpi: float = 100, layout: str | None = None) -> Figure:
    fig = Figure(figsize=size, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "svg":
        import matplotlib

        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "optimist"}):
            fig.savefig(buffer, format="svg", metadata={"Date": None})
    else:
        fig.savefig(buffer, format="png", dpi=PNG_DPI)
    return buffer.getvalue()


def _legend(fig: Figure, axes, ncols: int | None = None) -> None:
    """One legend for the figure, below the axes (constrained layout makes room for it)."""
    handles, labels = [], []
    for ax in np.atleast_1d(axes).ravel():
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=ncols or min(len(labels), 5),
            fontsize=8,
            frameon=False,
        )


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
    import warnings

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanmean(x, 0), np.nanmean(y, 0), np.nanmin(y, 0), np.nanmax(y, 0))


_X_LABELS = {"step": "optimizer steps", "time_s": "training time (s)", "epoch": "epochs"}


def curves_plot(document: dict[str, Any], task: str, x_key: str, fmt: str = "svg") -> bytes | None:
    """Loss against ``x_key`` (``step``, ``time_s`` or ``epoch``): training and validation loss
    panels on a data task, the gap to the minimum on a 2-D function."""
    kind = document["tasks"][task]["kind"]
    styles = method_styles(document)
    panels = (
        [("val_loss", "gap f - f(min)")]
        if kind == "function"
        else [("train_loss", "training loss (interval mean)"), ("val_loss", "validation loss")]
    )
    fig = _figure((4.6 * len(panels), 3.6), layout="constrained")
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
            ax.plot(x, mean, label=method, lw=1.6, **styles[method])
            if np.any(high > low):
                ax.fill_between(x, low, high, color=styles[method]["color"], alpha=0.15, lw=0)
            drawn = True
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel(_X_LABELS[x_key])
        ax.set_ylabel(title)
        if x_key == "step" and kind == "data":
            ax.set_xscale("symlog", linthresh=10)  # steps span 1 (GD) to 10^5 (batch-1 SGD)
            ax.set_xlim(left=0)
    if not drawn:
        return None
    _legend(fig, axes)
    return _render(fig, fmt)


def accuracy_plot(document: dict[str, Any], task: str, fmt: str = "svg") -> bytes | None:
    """Validation accuracy against epochs (data tasks with accuracy); dotted: the target."""
    styles = method_styles(document)
    fig = _figure((5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for method in document["methods"]:
        band = _band(_runs(document, task, method), "epoch", "val_acc")
        if band is None:
            continue
        x, mean, low, high = band
        ax.plot(x, 100 * mean, label=method, lw=1.6, **styles[method])
        if np.any(high > low):
            ax.fill_between(x, 100 * low, 100 * high, color=styles[method]["color"], alpha=0.15)
        drawn = True
    if not drawn:
        return None
    target = document["tasks"][task].get("target", {})
    if target.get("metric") == "val_acc":
        ax.axhline(100 * target["threshold"], color="grey", ls=":", lw=1)
    ax.set_xlabel("epochs")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return _render(fig, fmt)


def sensitivity_plot(document: dict[str, Any], task: str, fmt: str = "svg") -> bytes | None:
    """Each method's tuning trials at equal fidelity: the value at the last point all of the
    method's trials reached, against the learning rate (filled: ran to the end; hollow: pruned
    there or later; x at the top: diverged)."""
    from optimist.comparison.recommend import lr_sensitivity

    kind = document["tasks"][task]["kind"]
    styles = method_styles(document)
    found = {m: lr_sensitivity(document, task, m) for m in document["methods"]}
    found = {m: v for m, v in found.items() if v is not None}
    if not found:
        return None
    fig = _figure((5.6, 3.9), layout="constrained")
    ax = fig.subplots()
    values = [p["value"] for v in found.values() for p in v["points"] if p["value"] is not None]
    top = max(values) if values else 1.0
    fractions = set()
    for method, sens in found.items():
        style = styles[method]
        pts = sorted(sens["points"], key=lambda p: p["lr"])
        label = method
        if sens["fidelity_fraction"] is not None:
            fractions.add(sens["fidelity_fraction"])
            label += f" (at {sens['fidelity_fraction']:.0%})"
        ax.plot([p["lr"] for p in pts], [p["value"] for p in pts], lw=1.3, label=label, **style)
        done = [p for p in pts if p["state"] == "complete"]
        cut = [p for p in pts if p["state"] != "complete"]
        ax.plot([p["lr"] for p in done], [p["value"] for p in done], "o", color=style["color"])
        ax.plot(
            [p["lr"] for p in cut],
            [p["value"] for p in cut],
            "o",
            mfc="white",
            color=style["color"],
        )
        div = [
            t["lr"]
            for t in document["tuning"]
            if t["task"] == task and t["method"] == method and t["state"] == "diverged"
        ]
        ax.plot(div, [top] * len(div), "x", color=style["color"], ms=7)
    ax.set_xscale("log")
    if kind == "data" and values and min(values) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    what = "mean log10 gap" if kind == "function" else "validation loss"
    if len(fractions) == 1:
        ax.set_ylabel(f"{what} at {min(fractions):.0%} of the budget")
    else:
        ax.set_ylabel(f"{what} at equal fidelity\n(% of the budget in the legend)")
    ax.grid(True, alpha=0.3)
    _legend(fig, ax, ncols=3)
    return _render(fig, fmt)


def _monitored(document: dict[str, Any], task: str, method: str) -> list[dict[str, Any]]:
    return sorted(
        (
            r
            for r in document["runs"]
            if r["task"] == task and r["method"] == method and isinstance(r.get("monitor"), dict)
        ),
        key=lambda r: str(r["seed"]),
    )


def _xy(points: list[list[Any]], positive: bool) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([p[0] for p in points], float)
    y = np.array([np.nan if p[1] is None else p[1] for p in points], float)
    if positive:
        y[~(y > 0)] = np.nan  # a log axis: zeros and non-finite values are gaps
    return x, y


def health_plot(document: dict[str, Any], task: str, method: str, fmt: str = "svg") -> bytes | None:
    """The training monitor's view of one method on one task, as small multiples: the loss
    (training readings, validation dashed), the global gradient norm and, on data tasks, the
    update-to-weight ratio ``||dw||/||w||`` of each layer (dotted: the usual 1e-3). One line per
    seed (layers in Okabe-Ito colours); dotted red verticals mark the steps verdicts fired."""
    runs = _monitored(document, task, method)
    if not runs:
        return None
    function = document["tasks"][task]["kind"] == "function"
    colour = method_style(method)["color"]
    panels = [("loss", "gap f - f(min)" if function else "loss"), ("grad_norm", "gradient norm")]
    layers = sorted(
        {k for r in runs for k in r["monitor"]["series"] if k.startswith("update_ratio/")}
    )
    if layers and not function:
        panels.append(("update_ratio/", "update ratio ||dw||/||w||"))
    fig = _figure((3.3 * len(panels), 2.9), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    seed_styles = LINE_STYLES
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, run in enumerate(runs):
            series = run["monitor"]["series"]
            ls = seed_styles[i % len(seed_styles)]
            label_seed = f"seed {run['seed']}"
            if key == "update_ratio/":
                for j, layer in enumerate(layers):
                    if layer in series:
                        x, y = _xy(series[layer], True)
                        name = layer.split("/", 1)[1]
                        ax.plot(
                            x,
                            y,
                            lw=1.1,
                            ls=ls,
                            color=OKABE_ITO[(j + 1) % len(OKABE_ITO)],
                            label=f"{name}" if i == 0 else None,
                        )
                ax.axhline(1e-3, color="grey", ls=":", lw=1)
                continue
            if key in series:
                x, y = _xy(series[key], True)
                ax.plot(x, y, lw=1.2, ls=ls, color=colour, label=label_seed)
            if key == "loss" and "val_loss" in series and not function:
                x, y = _xy(series["val_loss"], True)
                ax.plot(x, y, lw=1.0, ls=ls, color=colour, alpha=0.5)
            for v in run["monitor"]["verdicts"]:
                ax.axvline(v["step"], color="#D55E00", ls=":", lw=0.9, alpha=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer steps")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if key == "update_ratio/":
            ax.legend(fontsize=7, frameon=False, loc="best")
    row = next((r for r in document["summary"] if r["task"] == task and r["method"] == method), {})
    fig.suptitle(f"{method}: {row.get('health') or ''}", fontsize=9)
    _legend(fig, axes[0], ncols=4)
    return _render(fig, fmt)


def _paths(document: dict[str, Any], task: str) -> dict[str, np.ndarray]:
    """Each method's first recorded path on the 2-D function ``task`` (none on a data task)."""
    paths: dict[str, np.ndarray] = {}
    if task not in FUNCTIONS:
        return paths
    for method in document["methods"]:
        runs = [
            r
            for r in document["runs"]
            if r["task"] == task and r["method"] == method and r.get("trajectory")
        ]
        if runs:
            paths[method] = np.array(runs[0]["trajectory"], dtype=float)
    return paths


def _draw_path(ax, path: np.ndarray, style: dict[str, Any], lw: float, **kwargs: Any) -> None:
    """A method's path as a line in its style, with a dot where it ended."""
    ax.plot(path[:, 0], path[:, 1], lw=lw, **style, **kwargs)
    ax.plot(path[-1, 0], path[-1, 1], "o", color=style["color"], ms=4)


def _surface(ax, task: str, resolution: int = 300, marks: bool = True) -> None:
    """log10(f - f(min)) as a shaded image plus contour lines, with the start (white circle),
    the minima (gold stars) and any saddle point (a black cross) marked. The shading is an image,
    not filled polygons, so that redrawing it (GIF frames, small multiples) is cheap."""
    f = FUNCTIONS[task]
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
    if marks:
        for i, (mx, my) in enumerate(f.minima):
            label = "minimum" if i == 0 else None  # one legend entry for all of them
            ax.plot(mx, my, "*", color="gold", mec="k", ms=12, zorder=5, label=label)
        for sx, sy in f.saddles:
            ax.plot(sx, sy, "X", color="black", mec="white", ms=9, zorder=5, label="saddle point")
        ax.plot(*f.start, "o", color="white", mec="k", ms=7, zorder=5, label="start")
    ax.set_xlim(*f.xlim)
    ax.set_ylim(*f.ylim)


def _contour_axes(task: str, figsize=(6.0, 4.8), resolution: int = 300):
    fig = _figure(figsize)
    ax = fig.subplots()
    _surface(ax, task, resolution)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return fig, ax


def paths_plot(document: dict[str, Any], task: str, fmt: str = "svg") -> bytes | None:
    """Every method's path (first seed) on one contour plot."""
    paths = _paths(document, task)
    if not paths:
        return None
    styles = method_styles(document)
    fig = _figure((5.6, 5.0), layout="constrained")
    ax = fig.subplots()
    _surface(ax, task)
    for method, path in paths.items():
        _draw_path(ax, path, styles[method], 1.5, label=method, alpha=0.9)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    _legend(fig, ax, ncols=4)
    return _render(fig, fmt)


def paths_grid_plot(document: dict[str, Any], task: str, fmt: str = "svg") -> bytes | None:
    """Small multiples: one panel per method, all on the same surface and the same axes."""
    paths = _paths(document, task)
    if not paths:
        return None
    styles = method_styles(document)
    n = len(paths)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure((2.6 * cols, 2.4 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False))
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    for ax, (method, path) in zip(axes.ravel(), paths.items(), strict=False):
        _surface(ax, task, resolution=120)
        _draw_path(ax, path, styles[method], 1.4)
        ax.set_title(method, fontsize=9, color=styles[method]["color"])
        ax.tick_params(labelsize=7)
    _legend(fig, axes[0, 0], ncols=3)
    return _render(fig, fmt)


def trajectory_gif(
    document: dict[str, Any], task: str, frames: int = 30, fps: int = 10, dpi: int = 80
) -> bytes | None:
    """An animated GIF of the paths growing step by step (matplotlib's PillowWriter).

    The contour plot, axes and legend are drawn once and reused as a raster background; each
    frame draws only the paths on top, in pixel coordinates, so a frame costs milliseconds.
    """
    paths = _paths(document, task)
    if not paths:
        return None
    from matplotlib.patches import Rectangle

    styles = method_styles(document)
    size = (6.2, 4.0)
    static, ax = _contour_axes(task, figsize=size, resolution=150)
    static.set_dpi(dpi)
    for method in paths:
        ax.plot([], [], lw=1.5, label=method, **styles[method])
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
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
        (lines[method],) = canvas.plot([], [], lw=1.2, **styles[method])
        (heads[method],) = canvas.plot([], [], "o", color=styles[method]["color"], ms=4)
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
