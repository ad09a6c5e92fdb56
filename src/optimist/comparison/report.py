"""``report.html``: one self-contained page rendered from a jinja2 template (inline CSS, figures
as SVG/GIF data URIs, no scripts, nothing fetched), the same figures as files under ``plots/``,
and the terminal summary (``rich`` tables that wrap to the window).

The page opens with the verdict (per task: the winner or tied group, its margin and uncertainty,
the learning rate and batch size to use, what to try second; and an overall line). Tables have
captions and header cells for screen readers and scroll sideways on narrow screens; figures
scale to the page, so it reads at 420 px as well as at 1400 px.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from optimist.comparison import health, plots, tables
from optimist.comparison.methods import MINIBATCH
from optimist.comparison.results import atomic_write_bytes, atomic_write_text
from optimist.comparison.safety import inside, safe_name

__all__ = ["render_html", "text_table", "write_report"]

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _g(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _target_text(info: dict[str, Any]) -> str:
    t = info["target"]
    if t["metric"] == "val_acc":
        return f"validation accuracy ≥ {t['threshold']:.0%} at the end"
    what = "gap" if info["kind"] == "function" else "validation loss"
    return f"{what} ≤ {t['threshold']:g} at the end"


def _protocol_items(document: dict[str, Any]) -> list[Markup]:
    """The protocol as list items (HTML: values escaped, markup ours)."""
    p = document["protocol"]
    items = []
    if p["tuned"]:
        if p["lr_range"]:
            space = f"the same range {p['lr_range'][0]:g} to {p['lr_range'][1]:g} for every method"
        else:
            space = f"± {p['lr_span_decades']:g} decades around each method's documented default"
        how = (
            "Optuna GridSampler over a log-spaced grid, trials queued centre-out in a fixed order"
            if p["sampler"] == "grid"
            else "Optuna TPESampler (seeded)"
        )
        pruner = {
            "sha": "successive halving (reduction factor 3)",
            "hyperband": "Hyperband (reduction factor 3)",
            "none": "no pruner",
        }[p["pruner"]]
        items += [
            f"<b>Tuning</b>: every method gets the same budget of {p['grid_size']} learning-rate "
            f"trials, {space}; {how}; {pruner} on the validation loss reported at the "
            f"evaluation points. Tuning runs use their own seed (<code>{_e(p['tune_seed'])}"
            "</code>), not one of the evaluation seeds.",
            f"<b>Choice</b>: {_e(p['selection'])}.",
        ]
    else:
        items.append(
            "<b>No tuning</b>: each method ran at its documented default learning "
            "rate (see the methods table; 2-D functions have their own defaults). "
            "Use <code>--tune</code> for a fair comparison at each method's best."
        )
    if p.get("lr_find"):
        found = document.get("lr_finder") or {}
        listed = ", ".join(
            f"{_e(label)} {_g(f['suggestion'])}" if f["suggestion"] else f"{_e(label)} none"
            for label, f in found.items()
        )
        items.append(
            "<b>LR finder</b> (<code>--lr-find</code>): before any trial, Smith's learning-rate "
            "range test (<code>optimist.lr_finder</code>, 100 steps from 1e-7 to 10, seeded, "
            "with the method's batch size) ran per method on each data task; its suggestion, "
            "rounded to a tenth of a decade, replaced the documented default"
            + (" as the centre of the tuning grid" if p["tuned"] else " as the learning rate")
            + " (marked † in the tables). 2-D functions keep their defaults: no data to sweep. "
            + (f"Suggestions: {listed}." if listed else "")
        )
    items += [
        f"<b>Evaluation</b>: the chosen learning rate re-run with {p['seeds']} seed(s); "
        "tables show mean ± standard deviation over seeds, the verdict the 95% confidence "
        "interval of paired differences, plots the mean and the min–max band.",
        "<b>Budget</b>: the same number of examples for every method on data tasks "
        "(epochs; full-batch GD therefore makes one step per epoch), the same number of steps on "
        f"2-D functions; {p['n_evals']} evaluation points per run"
        + (f"; budget {p['budget']:g}" if p["budget"] else "")
        + (f"; {p['budget_steps']} steps" if p["budget_steps"] else "")
        + (f"; first {p['train_size']} training examples" if p["train_size"] else "")
        + (f"; subsample {p['subsample']}" if p["subsample"] else "")
        + ".",
        "<b>Common random numbers</b>: for a given seed every method and learning rate starts "
        "from the same weights and sees the same examples in the same order.",
        "<b>2-D functions</b>: <code>gd</code> and the momentum/adaptive methods use the exact "
        "gradient; <code>sgd</code> adds Gaussian noise of the function's σ to each gradient "
        f"component, <code>minibatch</code> σ/√{MINIBATCH} (the noise of averaging "
        f"{MINIBATCH} examples), so the stochastic regimes differ visibly.",
        "<b>Divergence</b>: a run whose loss becomes NaN/infinite or exceeds 10⁶ × its initial "
        "value stops and is counted as diverged, not as a crash.",
        f"<b>Storage</b>: <code>{_e(p['storage'])}</code> ({p['workers']} worker process(es)); "
        "browse it with <code>optuna-dashboard &lt;storage URL&gt;</code>.",
    ]
    items.append(
        "<b>Ranking</b>: one score per evaluation run (data: final validation loss; 2-D "
        "functions: the fraction of the budget used to reach the target gap and stay there, or "
        "1 + the decades the run ended above it), compared across paired seeds; ties when the "
        "difference is within its 95% confidence interval or below the resolution. Methods "
        "with no complete run are not ranked."
    )
    return [Markup(i) for i in items]


_MIME = {"svg": "image/svg+xml", "gif": "image/gif", "png": "image/png"}


Drawn = list[tuple[str, str, bytes | None, str]]
"""``(stem, extension, bytes, caption)`` of figures."""


def _figures(document: dict[str, Any], task: str) -> Drawn:
    """A task's figures."""
    kind = document["tasks"][task]["kind"]
    out = [
        (
            "loss-steps",
            "svg",
            plots.curves_plot(document, task, "step"),
            "Loss against optimizer steps (line: mean over seeds; band: min–max).",
        )
    ]
    if kind == "data":
        out.append(
            (
                "loss-epochs",
                "svg",
                plots.curves_plot(document, task, "epoch"),
                "Loss against epochs: the same examples for every method.",
            )
        )
    out.append(
        (
            "loss-time",
            "svg",
            plots.curves_plot(document, task, "time_s"),
            "Loss against training wall time (evaluation excluded).",
        )
    )
    if kind == "data":
        out.append(
            (
                "accuracy",
                "svg",
                plots.accuracy_plot(document, task),
                "Validation accuracy; dotted: the target.",
            )
        )
    else:
        out.append(
            (
                "paths",
                "svg",
                plots.paths_plot(document, task),
                "All paths (first seed) over the contours of log10(f - f(min)); circle: start, "
                "star: minimum, cross: saddle point.",
            )
        )
        out.append(
            (
                "paths-grid",
                "svg",
                plots.paths_grid_plot(document, task),
                "One panel per method, on the same surface and axes.",
            )
        )
        out.append(
            (
                "paths",
                "gif",
                plots.trajectory_gif(document, task),
                "The paths step by step (animated GIF).",
            )
        )
    out.append(
        (
            "lr-sensitivity",
            "svg",
            plots.sensitivity_plot(document, task),
            "Tuning trials at equal fidelity: each method's value at the last point all its "
            "trials reached (the % in the legend), against the learning rate; hollow: pruned, "
            "x: diverged.",
        )
    )
    return out


def _health_figures(document: dict[str, Any], task: str) -> Drawn:
    """One diagnostic figure per method (the training monitor's signals and verdicts)."""
    out = []
    for method in document["methods"]:
        row = next(
            (r for r in document["summary"] if r["task"] == task and r["method"] == method), {}
        )
        out.append(
            (
                f"health-{safe_name(method)}",
                "svg",
                plots.health_plot(document, task, method),
                f"{method}: {row.get('health') or 'not monitored'}.",
            )
        )
    return out


def _health_notes(document: dict[str, Any], task: str) -> list[dict[str, Any]]:
    """Per method with a verdict: the first seed's evidence and advice for each verdict."""
    notes = []
    for method in document["methods"]:
        runs = [r for r in document["runs"] if r["task"] == task and r["method"] == method]
        lines = health.first_evidence(runs)
        if lines:
            notes.append({"method": method, "lines": lines})
    return notes


def _health_intro(kind: str) -> str:
    text = (
        "The training monitor (<code>optimist.monitor</code>) watched every evaluation run at a "
        "fixed interval (1/50 of its steps). "
    )
    if kind == "function":
        text += (
            "On a 2-D function there is no model, layer or validation set, so only the verdicts "
            "that need just the loss (here the gap) and the gradient norm apply: diverging, "
            "stalled, oscillating. Panels: gap and gradient norm, one line per seed; dotted red "
            "lines: the steps a verdict fired."
        )
    else:
        text += (
            "Panels: loss (solid: training readings at the evaluation points; pale: validation), "
            "gradient norm, and each layer's update-to-weight ratio ||dw||/||w|| (dotted: the "
            "usual 1e-3); line styles: seeds; dotted red lines: the steps a verdict fired."
        )
    return text


def _encode(drawn: Drawn, task: str, plot_dir: Path | None) -> list[dict[str, str]]:
    """Figures as data URIs, also written (atomically) to ``plot_dir`` when given."""
    out = []
    for stem, ext, data, caption in drawn:
        if not data:
            continue
        name = f"{safe_name(task)}-{stem}.{ext}"
        if plot_dir is not None:
            atomic_write_bytes(inside(plot_dir, plot_dir / name), data)
        uri = f"data:{_MIME[ext]};base64,{base64.b64encode(data).decode('ascii')}"
        out.append({"uri": uri, "alt": f"{task}: {caption}", "caption": caption})
    return out


def _section(
    document: dict[str, Any], task: str, plot_dir: Path | None, figures: bool = True
) -> dict[str, Any]:
    info = document["tasks"][task]
    figures_out = _encode(_figures(document, task) if figures else [], task, plot_dir)
    health_out = _encode(_health_figures(document, task) if figures else [], task, plot_dir)
    cols = tables.columns(info["kind"])
    caption = (
        "Columns: the method's optimizer settings and batch size, the learning rate used "
        "(* not tuned; † centred on or taken from the LR finder), mean ± standard deviation "
        "over seeds, how many seeds reached the target and stayed there (k/n), steps per run, "
        "throughput, the training monitor's verdict over the seeds (health), and the methods it "
        "is tied with."
    )
    return {
        "task": task,
        "id": safe_name(task),
        "description": info["description"],
        "target": _target_text(info),
        "fairness": tables.fairness(document, task),
        "recommendation": document["recommendations"].get(task, ""),
        "columns": cols,
        "rows": tables.rows(document, task),
        "caption": caption,
        "figures": figures_out,
        "health_figures": health_out,
        "health_intro": Markup(_health_intro(info["kind"])),
        "health_notes": _health_notes(document, task),
    }


def render_html(
    document: dict[str, Any], plot_dir: Path | None = None, *, fragment: bool = False
) -> str:
    """The report page as a string (figures also written to ``plot_dir`` when given); with
    ``fragment``, only the verdict and the tables, for a notebook cell (no figures)."""
    methods = [
        {
            "name": name,
            "optimizer": m.get("optimizer", ""),
            "settings": ", ".join(f"{k}={v}" for k, v in (m.get("kwargs") or {}).items())
            or "defaults",
            "batch": m.get("batch_size", ""),
            "default_lr": _g(m.get("default_lr")),
            "description": m.get("description", ""),
        }
        for name, m in document["methods"].items()
    ]
    verdicts = document.get("verdicts") or {"overall": "", "tasks": {}}
    return _TEMPLATES.get_template("report.html.j2").render(
        generator=document["generator"],
        created=document["created"],
        status=document["status"],
        wall=_g(document.get("wall_time_s"), ".1f"),
        command=document.get("command"),
        verdicts=verdicts,
        tasks=list(document["tasks"]),
        ids={t: safe_name(t) for t in document["tasks"]},
        protocol=_protocol_items(document),
        methods=methods,
        sections=[_section(document, t, plot_dir, figures=not fragment) for t in document["tasks"]],
        fragment=fragment,
    )


def write_report(document: dict[str, Any], out: Path) -> Path:
    """Write ``OUT/report.html`` and ``OUT/plots/*``; returns the report's path."""
    out = Path(out)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    page = render_html(document, plot_dir)
    path = out / "report.html"
    atomic_write_text(path, page)
    return path


def text_table(document: dict[str, Any], width: int | None = 120) -> str:
    """The verdict and every task's table as text (what the terminal shows), wrapped to
    ``width`` columns (None: the terminal's width)."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    print_summary(document, console)
    return buffer.getvalue()


def print_summary(document: dict[str, Any], console: Any = None) -> None:
    """Print the tables and the verdict with ``rich`` (to the terminal by default)."""
    import shutil

    from rich.console import Console

    console = console or Console(width=max(shutil.get_terminal_size((100, 24)).columns, 80))
    for table in tables.terminal_tables(document):
        console.print(table)
    verdicts = document.get("verdicts")
    if verdicts:
        console.print("[bold]Verdict[/bold]: " + _escape_rich(verdicts["overall"]))
        for task, v in verdicts["tasks"].items():
            console.print(f"[bold]{_escape_rich(task)}[/bold]: {_escape_rich(v['text'])}")


def _escape_rich(text: str) -> str:
    from rich.markup import escape

    return escape(text)
