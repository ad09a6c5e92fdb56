"""The answer can be trusted: constructed studies whose right answer is known (issue 9)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

import optimist
from optimist.comparison import METHODS, validate
from optimist.comparison import methods as methods_module
from optimist.comparison.functions import TestFunction as Function2D
from optimist.comparison.ranking import compare_pair, rank_task, run_score, t_quantile
from optimist.comparison.recommend import lr_sensitivity
from optimist.comparison.tasks import FunctionTask
from optimist.comparison.training_loop import run_trial

FUNCTION_TARGET = {"metric": "loss", "threshold": 1e-3, "mode": "below"}


def _run(method, seed, *, gap=None, steps_to_target=None, val_loss=None, state="complete"):
    final = {
        "val_loss": val_loss if val_loss is not None else gap,
        "steps": 100,
        "steps_to_target": steps_to_target,
    }
    return {"method": method, "seed": seed, "state": state, "final": final}


def _row(method, n_runs):
    return {"method": method, "n_runs": n_runs}


def test_score_orders_sooner_later_short_and_far():
    sooner = run_score(_run("a", 0, gap=1e-4, steps_to_target=10), "function", FUNCTION_TARGET)
    later = run_score(_run("a", 0, gap=1e-4, steps_to_target=90), "function", FUNCTION_TARGET)
    short = run_score(_run("a", 0, gap=2e-3), "function", FUNCTION_TARGET)
    far = run_score(_run("a", 0, gap=1.0), "function", FUNCTION_TARGET)
    assert sooner < later < short < far
    # got there once but ended above the target: scored as ending short, not as reached
    left = run_score(_run("a", 0, gap=5e-3, steps_to_target=5), "function", FUNCTION_TARGET)
    assert left > later
    assert run_score(_run("a", 0, gap=1.0, state="diverged"), "function", FUNCTION_TARGET) is None


def _leaving_task() -> FunctionTask:
    """f = x^2 from x = 1; its 'gradient' is the true one for 3 calls, then a constant push
    away: gradient descent reaches the minimum at once and then walks off."""
    calls = {"n": 0}

    def gradient(x, y):
        calls["n"] += 1
        return (2 * x if calls["n"] <= 3 else -1.0, 0.0)

    f = Function2D(
        name="leave",
        description="reach and leave",
        value=lambda x, y: x**2 + 0 * y,
        gradient=gradient,
        start=(1.0, 0.0),
        minima=((0.0, 0.0),),
        f_min=0.0,
        xlim=(-2, 2),
        ylim=(-1, 1),
        noise=0.0,
        default_steps=20,
    )
    return FunctionTask(name="leave", description="", default_budget=20, function=f)


def test_a_run_that_reaches_the_target_and_leaves_is_not_counted_as_reached():
    result = run_trial(_leaving_task(), METHODS["gd"], 0.5, 0, 20, n_evals=5)
    gaps = result["curves"]["val_loss"]
    assert min(gaps) <= 1e-3 < gaps[-1]  # it was there, and it left
    assert result["final"]["steps_to_target"] is None
    rows = [_row("leaver", 1), _row("stayer", 1)]
    runs = [
        {**result, "method": "leaver", "seed": 0},
        _run("stayer", 0, gap=1e-4, steps_to_target=80),
    ]
    ranked = rank_task(rows, runs, "function", FUNCTION_TARGET)
    assert [r["method"] for r in ranked] == ["stayer", "leaver"]
    assert ranked[0]["rank"] == 1 and ranked[1]["rank"] == 2


def test_identical_methods_are_tied_and_a_clear_winner_wins():
    seeds = range(3)
    runs = [_run("a", s, val_loss=0.5 + 0.01 * s) for s in seeds]
    runs += [_run("b", s, val_loss=0.5 + 0.01 * s) for s in seeds]  # identical to a
    runs += [_run("c", s, val_loss=0.2 + 0.01 * s) for s in seeds]  # better on every seed
    rows = [_row(m, 3) for m in "abc"]
    ranked = {r["method"]: r for r in rank_task(rows, runs, "data", {})}
    assert ranked["c"]["rank"] == 1 and not ranked["c"]["tied_with"]
    assert ranked["a"]["rank"] == ranked["b"]["rank"] == 2
    assert ranked["a"]["tied_with"] == ["b"] and ranked["b"]["tied_with"] == ["a"]
    assert ranked["a"]["vs_best"]["diff"] == pytest.approx(0.3)


def test_noisy_difference_within_the_seed_spread_is_a_tie():
    better = {0: 1.0, 1: 2.0, 2: 0.5}
    worse = {0: 1.5, 1: 1.6, 2: 1.0}  # mean 0.2 higher, but one seed the other way
    result = compare_pair(better, worse, resolution=0.0)
    assert not result["beats"] and result["half_width"] > result["diff"] > 0
    assert compare_pair({0: 1.0, 1: 1.0}, {0: 2.0, 1: 2.1}, 0.0)["beats"]
    assert t_quantile(2) == pytest.approx(4.303) and t_quantile(1000) == 1.96
    assert math.isinf(t_quantile(0))


def test_failed_runs_rank_below_and_an_all_failed_method_is_unranked():
    runs = [_run("a", 0, val_loss=0.1), _run("a", 1, val_loss=0.1, state="diverged")]
    runs += [_run("b", 0, val_loss=0.3), _run("b", 1, val_loss=0.3)]
    runs += [_run("c", 0, state="error", val_loss=0.0)]
    rows = [_row("a", 2), _row("b", 2), _row("c", 1)]
    ranked = rank_task(rows, runs, "data", {})
    assert [(r["method"], r["rank"]) for r in ranked] == [("b", 1), ("a", 2), ("c", None)]


@pytest.fixture
def twin_adam(monkeypatch):
    twin = dataclasses.replace(METHODS["adam"], name="adam-twin", in_default_study=False)
    monkeypatch.setitem(methods_module.METHODS, "adam-twin", twin)
    return twin


def test_study_with_two_identical_methods_declares_them_tied(tmp_path, twin_adam):
    result = optimist.compare(
        tasks=["digits-mlp"],
        optimizers=["adam", "adam-twin", "gd"],
        budget=5,
        seeds=2,
        n_evals=4,
        out=tmp_path,
    )
    validate(result.results)
    rows = {r["method"]: r for r in result.summary}
    assert rows["adam"]["val_loss"]["mean"] == rows["adam-twin"]["val_loss"]["mean"]
    assert rows["adam"]["rank"] == rows["adam-twin"]["rank"] == 1
    assert "adam-twin" in rows["adam"]["tied_with"]
    assert rows["gd"]["rank"] == 3 and set(rows["gd"]["beaten_by"]) == {"adam", "adam-twin"}
    verdict = result.results["verdicts"]["tasks"]["digits-mlp"]
    assert set(verdict["winners"]) == {"adam", "adam-twin"}
    assert verdict["batch_size"] == 32 and "batch 32" in verdict["text"]
    assert "Tied with adam-twin" in verdict["text"]
    frame = result.to_pandas()
    assert list(frame["method"]) == ["adam", "adam-twin", "gd"]
    assert {"batch_size", "examples_per_s", "tied_with", "score_ci"} <= set(frame.columns)
    html = result._repr_html_()
    assert "<caption>" in html and "Verdict" in html and "<img" not in html
    assert "adam-twin" in result.table(width=100)


def test_pruned_trials_appear_in_the_sensitivity_at_their_fidelity(tmp_path):
    result = optimist.compare(
        tasks=["digits-mlp"],
        optimizers=["minibatch"],
        budget=1,
        tune=True,
        grid_size=5,
        lr_span=2.0,
        n_evals=9,
        out=tmp_path,
    )
    document = result.results
    tuning = document["tuning"]
    pruned = [t for t in tuning if t["state"] == "pruned"]
    assert pruned, [t["state"] for t in tuning]
    sens = lr_sensitivity(document, "digits-mlp", "minibatch")
    fidelity = str(sens["fidelity"])
    assert sens["fidelity"] < 9  # not the end: some trials stopped early
    by_lr = {p["lr"]: p for p in sens["points"]}
    for t in pruned:
        assert by_lr[t["lr"]]["state"] == "pruned"
        assert by_lr[t["lr"]]["value"] == t["reports"][fidelity]
    for t in tuning:
        if t["state"] == "complete":  # compared at the same point, not at their end
            assert by_lr[t["lr"]]["value"] == t["reports"][fidelity]
    assert 0 < sens["fidelity_fraction"] < 1


USER_MODULE = """
import numpy as np
import torch


def make_model():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def load_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = np.argmax(x[:, :3], axis=1)
    return (x[:240], y[:240]), (x[240:], y[240:])
"""


def test_cli_compares_your_own_model_and_data(tmp_path, monkeypatch, capsys):
    from optimist.cli import main

    (tmp_path / "my_study.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "out"
    args = ["compare", "--model", "my_study:make_model", "--data", "my_study:load_data"]
    args += [
        "--name",
        "mine",
        "--optimizers",
        "sgd[batch=64,momentum=0.9],adam[weight_decay=0.001]",
    ]
    args += ["--batch-size", "16", "--budget", "2", "--seeds", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "mine" in printed and "Verdict" in printed
    document = json.loads((out / "results.json").read_text())
    validate(document)
    methods = document["methods"]
    assert methods["sgd[batch=64,momentum=0.9]"]["batch_size"] == 64  # its own batch wins
    assert methods["sgd[batch=64,momentum=0.9]"]["kwargs"] == {"momentum": 0.9}
    assert methods["adam[weight_decay=0.001]"]["batch_size"] == 16  # --batch-size
    assert document["tasks"]["mine"]["steps"] == {
        "sgd[batch=64,momentum=0.9]": 8,  # 2 epochs of 240 examples, 64 at a time
        "adam[weight_decay=0.001]": 30,
    }
    assert (out / "report.html").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nowhere_module:f", "--data", "nowhere_module:g"], "cannot import"),
        (["--model", "my_study:make_model"], "give both --model"),
        (["--model", "my_study", "--data", "my_study:load_data"], "MODULE:FUNCTION"),
        (["--task", "saddle", "--optimizers", "adam[betas=2:0.9]"], "adam[betas=2:0.9]"),
        (["--task", "saddle", "--optimizers", "adam[lr]"], "expected key=value"),
        (["--task", "saddle", "--batch-size", "0"], "batch-size must be a positive"),
    ],
)
def test_cli_user_task_and_settings_errors_are_one_line(
    args, message, tmp_path, monkeypatch, capsys
):
    from optimist.cli import main

    (tmp_path / "my_study.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    assert main(["compare", *args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_every_method_has_its_own_fixed_colour_and_line_style():
    from optimist.comparison.plots import method_style

    styles = [tuple(method_style(m).values()) for m in METHODS]
    assert len(set(styles)) == len(styles)  # no two built-in methods look alike
    assert method_style("adam") == method_style("adam")  # fixed, not by position
    variant = method_style("adam[weight_decay=0.001]")
    assert variant["color"] == method_style("adam")["color"]
    assert variant["linestyle"] != method_style("adam")["linestyle"]
    assert method_style("my-method") == method_style("my-method")


def test_budget_unit_steps_holds_updates_equal_and_says_so(tmp_path, capsys):
    from optimist.cli import main

    out = tmp_path / "steps"
    args = ["compare", "--task", "digits-mlp", "--optimizers", "gd,adam", "--budget-unit"]
    args += ["steps", "--budget", "20", "--evals", "4", "--out", str(out), "--quiet"]
    assert main(args) == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert document["tasks"]["digits-mlp"]["steps"] == {"gd": 20, "adam": 20}
    from optimist.comparison.tables import fairness

    assert fairness(document, "digits-mlp").startswith("Held equal: optimizer steps (20")
    examples = {r["method"]: r["examples_per_s"]["mean"] for r in document["summary"]}
    assert all(v and v > 0 for v in examples.values())
    args[args.index("20")] = "2.5"
    assert main(args) == 2
    assert "whole number of steps" in capsys.readouterr().err


def test_tuning_more_than_the_learning_rate(tmp_path, capsys):
    from optimist.cli import main

    out = tmp_path / "multi"
    args = ["compare", "--task", "digits-mlp", "--optimizers", "momentum,adam"]
    args += ["--tune", "lr,momentum,weight_decay", "--grid-size", "4", "--budget", "1"]
    args += ["--seeds", "2", "--evals", "6", "--out", str(out), "--quiet", "--no-report"]
    assert main(args) == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert document["protocol"]["tune_params"] == ["lr", "momentum", "weight_decay"]
    assert {t["method"] for t in document["tuning"]} == {"momentum", "adam"}
    rows = {r["method"]: r for r in document["summary"]}
    # SGD has momentum and weight decay, Adam weight decay only: each tunes what it has
    assert set(rows["momentum"]["tuned_settings"]) == {"momentum", "weight_decay"}
    assert set(rows["adam"]["tuned_settings"]) == {"weight_decay"}
    # the evaluation runs used the chosen settings, and the verdict names them
    verdict = document["verdicts"]["tasks"]["digits-mlp"]["text"]
    assert "weight_decay" in verdict
    bad = ["compare", "--task", "digits-mlp", "--tune", "lr,nonsense", "--out", str(out)]
    assert main(bad) == 2
    assert "--tune takes lr plus any of momentum, weight_decay" in capsys.readouterr().err


def test_a_study_file_sets_the_options_and_the_command_line_wins(tmp_path, capsys):
    from optimist.cli import main

    study = tmp_path / "study.toml"
    out = tmp_path / "from-file"
    study.write_text(
        'tasks = ["saddle"]\n'
        'optimizers = ["gd", "momentum[momentum=0.5]"]\n'
        "budget_steps = 40\n"
        "seeds = 3\n"
        "evals = 4\n"
        "tune = false\n"
        f'out = "{out}"\n'
    )
    assert main(["compare", "--study", str(study), "--seeds", "2", "--quiet"]) == 0
    capsys.readouterr()
    document = json.loads((out / "results.json").read_text())
    assert set(document["methods"]) == {"gd", "momentum[momentum=0.5]"}
    assert document["protocol"]["seeds"] == 2  # the command line wins over the file
    assert document["tasks"]["saddle"]["steps"]["gd"] == 40
    # the recorded command has every option, so the study can be re-run from it
    assert "--optimizers" in document["command"] and "--budget-steps 40" in document["command"]
    study.write_text("optimisers = ['adam']\n")
    assert main(["compare", "--study", str(study)]) == 2
    assert "unknown key 'optimisers'" in capsys.readouterr().err
