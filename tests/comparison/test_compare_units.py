"""Fast checks of the comparison's pieces: functions, methods, one trial, grids, schema, CLI."""

from __future__ import annotations

import copy
import json
import math
import statistics

import pytest
import torch

import optimist
from optimist.cli import main
from optimist.comparison import FUNCTIONS, METHODS, RESULTS_SCHEMA, validate
from optimist.comparison.methods import DEFAULT_METHODS, MINIBATCH
from optimist.comparison.runner import Config, lr_grid
from optimist.comparison.study import key_of, redact
from optimist.comparison.tasks import TASKS, custom_task
from optimist.comparison.training_loop import derive_seed, eval_steps, run_trial


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_function_gradient_matches_finite_differences(name):
    f = FUNCTIONS[name]
    h = 1e-6
    for x, y in [f.start, (0.3, -0.7), (1.1, 0.4)]:
        gx, gy = f.gradient(x, y)
        fx = (f.value(x + h, y) - f.value(x - h, y)) / (2 * h)
        fy = (f.value(x, y + h) - f.value(x, y - h)) / (2 * h)
        assert gx == pytest.approx(fx, rel=1e-5, abs=1e-5)
        assert gy == pytest.approx(fy, rel=1e-5, abs=1e-5)
    for mx, my in f.minima:
        assert f.gap(mx, my) == pytest.approx(0.0, abs=1e-12)
        assert max(abs(g) for g in f.gradient(mx, my)) < 1e-9
    assert f.gap(*f.start) > 0.1


def test_method_table_has_the_course_methods_and_builds_them():
    assert DEFAULT_METHODS == (
        "gd",
        "sgd",
        "minibatch",
        "momentum",
        "adagrad",
        "rmsprop",
        "adadelta",
        "adam",
    )
    registry = optimist.optimizers()
    for name, method in METHODS.items():
        assert method.optimizer in registry, name
        opt = method.build([torch.zeros(3, requires_grad=True)], lr=0.01)
        assert isinstance(opt, torch.optim.Optimizer)
        assert opt.param_groups[0]["lr"] == 0.01
        assert method.description
    assert METHODS["gd"].batch_size(1000) == 1000
    assert METHODS["sgd"].batch_size(1000) == 1
    assert METHODS["minibatch"].batch_size(1000) == MINIBATCH
    # gradient noise on 2-D functions: only the stochastic regimes, batch 1 noisier
    assert METHODS["gd"].noise_scale(1.0) == 0.0
    assert METHODS["adam"].noise_scale(1.0) == 0.0
    assert METHODS["sgd"].noise_scale(1.0) > METHODS["minibatch"].noise_scale(1.0) > 0


def test_trial_is_deterministic_and_seeds_differ():
    task, method = TASKS["rosenbrock"], METHODS["sgd"]
    a = run_trial(task, method, 1e-3, 0, 200)
    b = run_trial(task, method, 1e-3, 0, 200)
    c = run_trial(task, method, 1e-3, 1, 200)
    assert a["curves"]["val_loss"] == b["curves"]["val_loss"]
    assert a["trajectory"] == b["trajectory"]
    assert a["curves"]["val_loss"] != c["curves"]["val_loss"]
    assert derive_seed("a", 1) == derive_seed("a", 1) != derive_seed("a", 2)


def test_batch_one_is_noisier_than_minibatch_on_a_function():
    task = TASKS["ill-conditioned"]
    spread = {}
    for name in ("sgd", "minibatch", "gd"):
        finals = [
            run_trial(task, METHODS[name], 0.01, s, 300)["final"]["val_loss"] for s in range(4)
        ]
        spread[name] = statistics.pstdev(finals)
    assert spread["gd"] == 0.0
    assert spread["sgd"] > spread["minibatch"] > 0.0


def test_divergence_is_recorded_not_raised():
    result = run_trial(TASKS["rosenbrock"], METHODS["gd"], 10.0, 0, 100)
    assert result["state"] == "diverged"
    assert result["objective"] == math.inf
    assert result["final"]["steps"] < 100
    data = run_trial(TASKS["digits-mlp"], METHODS["minibatch"], 1e6, 0, 30, n_evals=10)
    assert data["state"] == "diverged"
    assert data["objective"] == math.inf


def test_data_trial_learns_and_records_curves():
    task = TASKS["digits-mlp"]
    result = run_trial(task, METHODS["adam"], 0.01, 0, 200, n_evals=10)
    curves = result["curves"]
    assert result["state"] == "complete"
    assert curves["step"][0] == 0 and curves["step"][-1] == 200
    assert len({len(v) for v in curves.values() if v is not None}) == 1
    assert curves["val_loss"][-1] < curves["val_loss"][0] * 0.5
    assert result["final"]["val_acc"] > 0.7
    assert result["final"]["test_acc"] is not None


def test_pruning_callback_stops_a_trial():
    calls = []

    def report(index, value):
        calls.append(index)
        return index == 3

    result = run_trial(TASKS["saddle"], METHODS["gd"], 0.01, 0, 100, n_evals=10, report=report)
    assert result["state"] == "pruned"
    assert calls == [1, 2, 3]
    assert result["final"]["steps"] == 30


def test_grid_is_log_spaced_and_centre_first():
    config = Config(tasks=["rosenbrock"], methods=["adam"], out=".", grid_size=7, lr_span=1.5)
    grid = lr_grid(1e-3, config)
    assert grid[0] == pytest.approx(1e-3)
    assert sorted(grid)[0] == pytest.approx(10**-4.5) and max(grid) == pytest.approx(10**-1.5)
    ratios = [b / a for a, b in zip(sorted(grid), sorted(grid)[1:], strict=False)]
    assert all(r == pytest.approx(10**0.5, rel=1e-4) for r in ratios)
    config.lr_range = (1e-4, 1e-1)
    assert sorted(lr_grid(5.0, config)) == pytest.approx(
        [1e-4, 10**-3.5, 1e-3, 10**-2.5, 1e-2, 10**-1.5, 1e-1], rel=1e-4
    )
    assert eval_steps(10, 40) == list(range(1, 11))
    assert eval_steps(1000, 4) == [250, 500, 750, 1000]
    assert key_of(0.1, 2) == "lr=0.1|seed=2"
    assert redact("postgresql://me:secret@host/db") == "postgresql://me:***@host/db"


def test_custom_task_from_arrays():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    task = custom_task(lambda: torch.nn.Linear(5, 2), (x[:150], y[:150], x[150:], y[150:]))
    result = run_trial(task, METHODS["adam"], 0.05, 0, 60, n_evals=5)
    assert result["final"]["val_acc"] > 0.8
    assert task.signature(None)["version"].startswith("data-")


def _doc(tiny_doc):
    return copy.deepcopy(tiny_doc)


def test_schema_rejects_broken_documents(tiny_study):
    document = json.loads((tiny_study / "results.json").read_text())
    validate(document)
    broken = _doc(document)
    del broken["summary"]
    with pytest.raises(ValueError, match="missing 'summary'"):
        validate(broken)
    broken = _doc(document)
    broken["runs"][0]["state"] = "exploded"
    with pytest.raises(ValueError, match="state"):
        validate(broken)
    broken = _doc(document)
    broken["runs"][0]["curves"]["val_loss"].append(1.0)
    with pytest.raises(ValueError, match="length"):
        validate(broken)
    broken = _doc(document)
    broken["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        validate(broken)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(document, RESULTS_SCHEMA)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "--task", "nope"], "unknown task 'nope'; known tasks: rosenbrock"),
        (
            ["compare", "--task", "rosenbrock", "--optimizers", "adamz"],
            "unknown method 'adamz'; known methods: gd",
        ),
        (["compare", "--task", "rosenbrock", "--budget", "0"], "budget must be a positive"),
        (["compare", "--task", "rosenbrock", "--budget-steps", "-3"], "budget-steps must be"),
        (["compare", "--task", "rosenbrock", "--seeds", "0"], "seeds must be a positive"),
        (
            ["compare", "--task", "rosenbrock", "--out", "/proc/optimist-cannot-write"],
            "cannot write to --out",
        ),
        (
            [
                "compare",
                "--task",
                "rosenbrock",
                "--storage",
                "postgresql+psycopg2://u:pw@127.0.0.1:9/db",
            ],
            "cannot open storage",
        ),
        (["compare", "--no-such-flag"], "unrecognized arguments"),
        (["trajectories", "--function", "nope"], "unknown function 'nope'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    if "--out" not in args and args[0] == "compare":
        args = [*args, "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "pw" not in err


def test_listing_commands(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in (
        "rosenbrock",
        "beale",
        "saddle",
        "ill-conditioned",
        "mnist-logreg",
        "mnist-mlp",
        "fashion-cnn",
        "shakespeare-char",
    ):
        assert name in out
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in optimist.optimizers())
    assert main(["methods"]) == 0
    assert "minibatch" in capsys.readouterr().out


def test_trajectories_command(tmp_path, capsys):
    out = tmp_path / "traj"
    code = main(
        [
            "trajectories",
            "--function",
            "beale",
            "--optimizers",
            "sgd,momentum,adam",
            "--steps",
            "60",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "paths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "paths.gif").read_bytes()[:6] == b"GIF89a"
    data = json.loads((out / "trajectories.json").read_text())
    assert [r["method"] for r in data["runs"]] == ["sgd", "momentum", "adam"]
    assert all(len(r["trajectory"]) == 61 for r in data["runs"])


def _two_layer():
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))


def test_python_api_on_a_users_model_and_data(tmp_path):
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 6)).astype("float32")
    y = np.argmax(x[:, :3] + 0.1 * rng.normal(size=(600, 3)), axis=1)
    result = optimist.compare(
        _two_layer,
        ((x[:480], y[:480]), (x[480:], y[480:])),
        name="toy",
        optimizers=["minibatch", "adam"],
        budget=3,
        seeds=2,
        out=tmp_path / "api",
        report=False,
    )
    assert sorted(result.ranking("toy")) == ["adam", "minibatch"]
    validate(result.results)
    assert (tmp_path / "api" / "results.json").is_file()
    assert "toy" in result.table()
    with pytest.raises(optimist.comparison.ConfigError, match="unknown method"):
        optimist.compare(_two_layer, (x, y, x, y), optimizers=["nope"], out=tmp_path / "bad")
