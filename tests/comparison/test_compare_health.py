"""The training monitor in compare: each evaluation run's health, the column, the figures."""

from __future__ import annotations

import csv
import json

import pytest

from optimist.comparison.health import summarize_health
from optimist.comparison.methods import get_method
from optimist.comparison.report import text_table
from optimist.comparison.results import validate
from optimist.comparison.tasks import get_task
from optimist.comparison.training_loop import run_trial
from optimist.monitor import LOSS_VERDICTS


def _run(seed, *names):
    verdicts = [
        {"name": n, "step": 3, "evidence": "e", "advice": "a", "layer": None} for n in names
    ]
    return {"seed": seed, "monitor": {"verdicts": verdicts}}


def test_summary_counts_seeds_per_verdict_in_a_fixed_order():
    runs = [_run(0, "dead_relus", "diverging"), _run(1, "dead_relus", "dead_relus"), _run(2)]
    h = summarize_health(runs)
    assert h["text"] == "diverging in 1/3 seeds; dead ReLUs in 2/3 seeds"
    assert h["word"] == "diverged" and h["counts"] == {"diverging": 1, "dead_relus": 2}
    assert summarize_health([_run(0), _run(1)])["text"] == "healthy"
    assert summarize_health([_run(0, "stalled")])["text"] == "stalled"
    assert summarize_health([_run(0, "stalled")])["word"] == "warning"
    assert summarize_health([{"seed": 0, "monitor": None}])["text"] == "not monitored"


def test_the_monitor_does_not_change_a_data_trial():
    task, method = get_task("digits-mlp"), get_method("adam")
    watched = run_trial(task, method, 1e-3, 0, 40, n_evals=4, final=False, monitor=True)
    plain = run_trial(task, method, 1e-3, 0, 40, n_evals=4, final=False, monitor=False)
    assert plain["monitor"] is None and watched["monitor"]["health"] == "healthy"
    assert watched["curves"]["val_loss"] == plain["curves"]["val_loss"]
    assert watched["curves"]["train_loss"] == plain["curves"]["train_loss"]
    series = watched["monitor"]["series"]
    assert {"loss", "val_loss", "grad_norm"} <= set(series)
    assert any(k.startswith("update_ratio/") for k in series)


def test_a_broken_data_trial_is_called_out():
    # SGD at lr 100 on digits: the update ratio and the loss explode within a few steps
    result = run_trial(get_task("digits-mlp"), get_method("sgd"), 100.0, 0, 60, n_evals=12)
    names = {v["name"] for v in result["monitor"]["verdicts"]}
    assert result["monitor"]["health"] in ("warning", "diverged")
    assert names & {"diverging", "update_ratio_high", "exploding_gradients"}
    assert all(v["evidence"] and v["advice"] for v in result["monitor"]["verdicts"])


def test_two_d_functions_get_only_the_loss_verdicts():
    task = get_task("rosenbrock")
    bad = run_trial(task, get_method("adam"), 10.0, 0, 200, n_evals=10)
    good = run_trial(task, get_method("adam"), 0.1, 0, 200, n_evals=10)
    assert {v["name"] for v in bad["monitor"]["verdicts"]} == {"diverging"}
    assert good["monitor"]["health"] == "healthy"
    for r in (bad, good):
        assert {v["name"] for v in r["monitor"]["verdicts"]} <= set(LOSS_VERDICTS)
        assert not any(k.startswith("update_ratio/") for k in r["monitor"]["series"])


def test_tiny_study_has_health_everywhere(tiny_study):
    document = json.loads((tiny_study / "results.json").read_text())
    validate(document)
    for run in document["runs"]:
        assert run["monitor"]["health"] in ("healthy", "warning", "diverged")
        assert run["monitor"]["every"] >= 1
    for run in document["tuning"]:  # tuning trials are not watched (cost)
        assert run.get("monitor") is None
    for row in document["summary"]:
        assert row["health"] and row["health"] != "not monitored"
        expected = summarize_health(
            [
                r
                for r in document["runs"]
                if (r["task"], r["method"]) == (row["task"], row["method"])
            ]
        )
        assert row["health"] == expected["text"]
    with open(tiny_study / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["health"] for r in rows] == [r["health"] for r in document["summary"]]
    page = (tiny_study / "report.html").read_text()
    assert ">health</th>" in page and "Training health" in page
    assert "only the verdicts that need just the loss" in page  # the 2-D function note
    for task in document["tasks"]:
        for method in document["methods"]:
            figure = tiny_study / "plots" / f"{task}-health-{method}.svg"
            assert figure.read_bytes().startswith(b"<?xml")
    assert not list((tiny_study / "plots").glob(".*.tmp"))  # written atomically
    assert "health" in text_table(document)


def test_to_pandas_carries_the_health(tiny_study):
    pytest.importorskip("pandas")
    from optimist.comparison.api import CompareResult

    document = json.loads((tiny_study / "results.json").read_text())
    frame = CompareResult(document, tiny_study, None).to_pandas()
    assert list(frame["health"]) == [r["health"] for r in document["summary"]]
    assert set(frame["health_word"]) <= {"healthy", "warning", "diverged"}
