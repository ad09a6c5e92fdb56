"""``report.html``: one self-contained page (inline CSS, images as base64 data URIs, no scripts,
no fonts or links outside the file), plus the same figures as files under ``plots/``, and the
plain-text ranking table printed to the terminal."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from optimist.comparison import plots
from optimist.comparison.methods import MINIBATCH
from optimist.comparison.results import atomic_write_bytes, atomic_write_text
from optimist.comparison.safety import inside, safe_name

__all__ = ["text_table", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0 auto;max-width:1180px;padding:1.2em 1.6em;color:#1d232a;line-height:1.45;
 background:#fff}
h1{font-size:1.7em;margin:.2em 0}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:2px solid #e3e7eb;padding-bottom:.2em}
h3{font-size:1.05em;margin:1.2em 0 .4em}
.meta{color:#58636e;font-size:.9em}
.banner{background:#fff4d6;border:1px solid #e8c766;padding:.6em .9em;border-radius:6px}
.rec{background:#eef6ee;border-left:4px solid #4a9a4a;padding:.6em .9em;border-radius:4px}
table{border-collapse:collapse;font-size:.88em;margin:.5em 0 1em}
th,td{border-bottom:1px solid #e3e7eb;padding:.28em .6em;text-align:right;white-space:nowrap}
th{background:#f4f6f8;text-align:center}
td.l,th.l{text-align:left}
tr.win td{font-weight:600;background:#f3faf3}
.figs{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0}
figure img{max-width:100%;height:auto;border:1px solid #e3e7eb;border-radius:4px}
figcaption{font-size:.82em;color:#58636e;max-width:620px}
nav a{margin-right:.9em}
code{background:#f4f6f8;padding:0 .25em;border-radius:3px}
ul.compact li{margin:.15em 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _g(value: Any, spec: str = ".3g") -> str:
    return "–" if value is None else format(value, spec)


def _pm(stats: dict[str, Any], spec: str = ".4f", scale: float = 1.0) -> str:
    if stats["mean"] is None:
        return "–"
    text = format(stats["mean"] * scale, spec)
    if stats["n"] > 1:
        text += " ± " + format(stats["std"] * scale, spec)
    return text


def _img(data: bytes | None, mime: str, alt: str, caption: str) -> str:
    if not data:
        return ""
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return (
        f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'
    )


def _target_text(info: dict[str, Any]) -> str:
    t = info["target"]
    if t["metric"] == "val_acc":
        return f"validation accuracy ≥ {t['threshold']:.0%}"
    return f"{'gap' if info['kind'] == 'function' else 'validation loss'} ≤ {t['threshold']:g}"


def _budget_text(info: dict[str, Any]) -> str:
    steps = info["steps"]
    if info["kind"] == "function":
        values = sorted(set(steps.values()))
        return f"{', '.join(map(str, values))} steps"
    parts = ", ".join(f"{m} {s}" for m, s in steps.items())
    return f"optimizer steps per method: {parts}"


def _task_table(document: dict[str, Any], task: str) -> str:
    info = document["tasks"][task]
    rows = [r for r in document["summary"] if r["task"] == task]
    data = info["kind"] == "data"
    head = ["rank", "method", "lr"]
    head += ["final train loss", "final val loss"] if data else ["final gap"]
    if data:
        head += ["val acc %", "test acc %", "epochs to target"]
    else:
        head += ["steps to target"]
    head += ["time to target (s)", "steps/s", "diverged"]
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if h == "method" else ""}">{_e(h)}</th>' for h in head]
    out.append("</tr>")
    for r in rows:
        cls = ' class="win"' if r["rank"] == 1 else ""
        cells = [
            _g(r["rank"], "d"),
            f'<td class="l">{_e(r["method"])}</td>',
            f"{_g(r['lr'])}{'' if r['lr_source'] in ('tuned', 'default') else ' *'}",
        ]
        if data:
            cells.append(_pm(r["train_loss"], ".3g"))
        cells.append(_pm(r["val_loss"], ".4g"))
        if data:
            cells += [
                _pm(r["val_acc"], ".1f", 100),
                _pm(r["test_acc"], ".1f", 100),
                _g(r["epochs_to_target"]["mean"], ".2f"),
            ]
        else:
            reached = f" ({r['n_reached_target']}/{r['n_runs']})" if r["n_runs"] else ""
            cells += [_g(r["steps_to_target"]["mean"], ".0f") + reached]
        cells += [
            _g(r["time_to_target_s"]["mean"], ".3g"),
            _g(r["steps_per_s"]["mean"], ".0f"),
            f"{r['n_diverged']}/{r['n_runs']}",
        ]
        out.append(
            f"<tr{cls}>"
            + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    out.append("</table>")
    return "".join(out)


def _protocol_html(document: dict[str, Any]) -> str:
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
    items += [
        f"<b>Evaluation</b>: the chosen learning rate re-run with {p['seeds']} seed(s); "
        "tables show mean ± standard deviation, plots the mean and the min–max band.",
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
    return '<ul class="compact">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _methods_html(document: dict[str, Any]) -> str:
    rows = [
        '<table><tr><th class="l">method</th><th class="l">optimizer</th>'
        '<th class="l">settings</th><th>batch</th><th>default lr</th>'
        '<th class="l">what it is</th></tr>'
    ]
    for name, m in document["methods"].items():
        kwargs = ", ".join(f"{k}={v}" for k, v in m["kwargs"].items()) or "–"
        rows.append(
            f'<tr><td class="l">{_e(name)}</td><td class="l">{_e(m["optimizer"])}</td>'
            f'<td class="l">{_e(kwargs)}</td><td>{_e(m["batch_size"])}</td>'
            f'<td>{_g(m["default_lr"])}</td><td class="l">{_e(m["description"])}</td></tr>'
        )
    rows.append("</table>")
    return "".join(rows)


def _task_section(document: dict[str, Any], task: str, plot_dir: Path | None) -> str:
    info = document["tasks"][task]
    figures: list[tuple[str, bytes | None, str, str]] = []
    kind = info["kind"]
    figures.append(
        (
            "loss-steps",
            plots.curves_png(document, task, "step"),
            "image/png",
            "Loss against optimizer steps.",
        )
    )
    if kind == "data":
        figures.append(
            (
                "loss-epochs",
                plots.curves_png(document, task, "epoch"),
                "image/png",
                "Loss against epochs (the same examples for every method).",
            )
        )
    figures.append(
        (
            "loss-time",
            plots.curves_png(document, task, "time_s"),
            "image/png",
            "Loss against training wall time (evaluation excluded).",
        )
    )
    if kind == "data":
        figures.append(
            (
                "accuracy",
                plots.accuracy_png(document, task),
                "image/png",
                "Validation accuracy; dotted: the target.",
            )
        )
    else:
        figures.append(
            (
                "paths",
                plots.contour_png(document, task),
                "image/png",
                "Paths of the first seed over the contours of log10(f - f(min)).",
            )
        )
        figures.append(
            (
                "paths",
                plots.trajectory_gif(document, task),
                "image/gif",
                "The same paths, step by step (animated GIF).",
            )
        )
    figures.append(
        (
            "lr-sensitivity",
            plots.sensitivity_png(document, task),
            "image/png",
            "Tuning objective against learning rate for each method.",
        )
    )
    parts = [
        f'<section id="task-{safe_name(task)}"><h2>{_e(task)}</h2>',
        f"<p>{_e(info['description'])} Budget: {_e(_budget_text(info))}. "
        f"Target: {_e(_target_text(info))}.</p>",
        f'<p class="rec">{_e(document["recommendations"].get(task, ""))}</p>',
        _task_table(document, task),
        '<div class="figs">',
    ]
    for stem, data, mime, caption in figures:
        if data and plot_dir is not None:
            ext = "gif" if mime == "image/gif" else "png"
            atomic_write_bytes(inside(plot_dir, plot_dir / f"{safe_name(task)}-{stem}.{ext}"), data)
        parts.append(_img(data, mime, f"{task} {stem}", caption))
    parts.append("</div></section>")
    return "".join(parts)


def _overview(document: dict[str, Any]) -> str:
    rows = [
        '<table><tr><th class="l">task</th><th class="l">1st</th>'
        '<th class="l">2nd</th><th class="l">3rd</th><th class="l">last</th></tr>'
    ]
    for task in document["tasks"]:
        ranked = [r["method"] for r in document["summary"] if r["task"] == task and r["rank"]]
        cells = [*(ranked[:3] + ["–"] * (3 - len(ranked[:3]))), ranked[-1] if ranked else "–"]
        rows.append(
            f'<tr><td class="l"><a href="#task-{safe_name(task)}">{_e(task)}</a></td>'
            + "".join(f'<td class="l">{_e(c)}</td>' for c in cells)
            + "</tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def render_html(document: dict[str, Any], plot_dir: Path | None = None) -> str:
    """The report page as a string."""
    status = document["status"]
    wall = document.get("wall_time_s")
    banner = ""
    if status != "complete":
        banner = (
            '<p class="banner"><b>Partial results.</b> The run was interrupted or is still '
            "going elsewhere; run the same command again to resume: finished trials are "
            "kept.</p>"
        )
    nav = " ".join(f'<a href="#task-{safe_name(t)}">{_e(t)}</a>' for t in document["tasks"])
    sections = "".join(_task_section(document, t, plot_dir) for t in document["tasks"])
    command = document.get("command")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optimist compare report</title><style>{_CSS}</style></head><body>"
        "<h1>Which optimizer for my task? A side-by-side comparison</h1>"
        f'<p class="meta">{_e(document["generator"])} · {_e(document["created"])} · status '
        f"{_e(status)} · trials took {_g(wall, '.1f')} s"
        + (f" · <code>{_e(command)}</code>" if command else "")
        + "</p>"
        + banner
        + f"<nav>{nav}</nav>"
        + "<h2>Ranking at a glance</h2>"
        + _overview(document)
        + "<h2>How the comparison was run</h2>"
        + _protocol_html(document)
        + "<h2>Methods</h2>"
        + _methods_html(document)
        + sections
        + "<h2>Files</h2><p><code>results.json</code> (every curve and number; schema in "
        "optimist's README), <code>results.csv</code> (the summary rows), "
        "<code>study.db</code> (the Optuna studies), <code>trials/</code> (one JSON file per "
        "finished trial), "
        "<code>plots/</code> (these figures).</p></body></html>\n"
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


def text_table(document: dict[str, Any]) -> str:
    """The ranking of every task as plain text (what the terminal shows)."""
    lines = []
    for task, info in document["tasks"].items():
        rows = [r for r in document["summary"] if r["task"] == task]
        data = info["kind"] == "data"
        lines.append(f"{task} ({_budget_short(info)}; target: {_target_text(info)})")
        if data:
            head = (
                f"  {'rank':>4} {'method':<10} {'lr':>9} {'train loss':>11} "
                f"{'val loss':>15} {'val acc %':>13} {'test acc':>8}"
            )
        else:
            head = (
                f"  {'rank':>4} {'method':<10} {'lr':>9} {'final gap':>15} {'steps to target':>15}"
            )
        head += f" {'steps/s':>8} {'diverged':>8}"
        lines.append(head)
        for r in rows:
            line = f"  {_g(r['rank'], 'd'):>4} {r['method']:<10} {_g(r['lr']):>9} "
            if data:
                line += (
                    f"{_g(r['train_loss']['mean'], '.3g'):>11} "
                    f"{_pm(r['val_loss'], '.3g'):>15} {_pm(r['val_acc'], '.1f', 100):>13}"
                    f" {_g(_pct(r['test_acc']['mean']), '.1f'):>8}"
                )
            else:
                reached = (
                    f"{_g(r['steps_to_target']['mean'], '.0f')} "
                    f"({r['n_reached_target']}/{r['n_runs']})"
                )
                line += f"{_pm(r['val_loss'], '.3g'):>15} {reached:>15}"
            line += f" {_g(r['steps_per_s']['mean'], '.0f'):>8} {r['n_diverged']:>4}/{r['n_runs']}"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _budget_short(info: dict[str, Any]) -> str:
    if info["kind"] == "function" or info.get("budget_steps"):
        return f"{max(info['steps'].values())} steps"
    return f"{info['budget']:g} epochs"
