"""Every registered optimizer as a compare method, Muon's fallback on 2-D functions,
Schedule-Free's evaluation weights, and learning-rate schedules in the method syntax."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import optimist
from optimist.cli import main
from optimist.comparison.methods import (
    METHODS,
    OPTIMIZER_DEFAULTS,
    SCHEDULE_SETTINGS,
    evaluation_weights,
    get_method,
    parse_method,
    with_schedule,
)
from optimist.comparison.tasks import TASKS, custom_task
from optimist.comparison.training_loop import run_trial
from optimist.optim import registry, schedules
from optimist.optim.schedule_free import ScheduleFreeAdamW

MODERN = sorted(OPTIMIZER_DEFAULTS)


def test_every_registered_optimizer_is_a_method_and_every_row_is_registered():
    names = set(registry.optimizers())
    assert names <= set(METHODS)
    assert set(OPTIMIZER_DEFAULTS) <= names  # no row for an optimizer that is gone
    for name in OPTIMIZER_DEFAULTS:
        method = METHODS[name]
        assert method.optimizer == name and method.batch == "mini"
        assert method.default_lr == OPTIMIZER_DEFAULTS[name].lr
        assert not method.in_default_study


def test_lion_defaults_to_a_smaller_rate_than_adamw():
    assert 3 <= METHODS["adamw"].default_lr / METHODS["lion"].default_lr <= 10


@pytest.mark.parametrize("name", MODERN)
def test_modern_method_runs_on_a_function_with_its_function_lr(name):
    task = TASKS["rosenbrock"]
    method = METHODS[name]
    assert task.default_lr(method) == OPTIMIZER_DEFAULTS[name].function_lr
    result = run_trial(task, method, task.default_lr(method), 0, 60, n_evals=4)
    assert result["state"] == "complete"
    # the function LRs were chosen on the full budget; 60 steps must already make progress
    assert result["final"]["val_loss"] < 0.9 * task.function.gap(*task.function.start)


def test_a_bracketed_method_keeps_its_base_methods_function_lr():
    task = TASKS["rosenbrock"]
    assert task.default_lr(get_method("adam[weight_decay=0.0]")) == task.default_lr(METHODS["adam"])
    assert (
        task.default_lr(get_method("lion[weight_decay=0.1]"))
        == OPTIMIZER_DEFAULTS["lion"].function_lr
    )


def test_muon_on_a_vector_is_its_adamw_fallback_at_the_tuned_lr():
    """A 2-D test function has one 2-vector parameter: Muon runs it through its AdamW part, with
    the method's one learning rate; the trial equals a plain AdamW with the fallback's
    settings, step for step."""
    task = TASKS["rosenbrock"]
    muon = run_trial(task, METHODS["muon"], 0.05, 0, 40)
    adamw = dataclasses.replace(
        METHODS["adamw"], kwargs={"betas": (0.9, 0.95), "weight_decay": 0.1, "eps": 1e-8}
    )
    plain = run_trial(task, adamw, 0.05, 0, 40)
    assert muon["trajectory"] == plain["trajectory"]

    matrix, bias = torch.zeros(3, 4, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = METHODS["muon"].build([matrix, bias], 0.02)
    lrs = {g["use_muon"]: g["lr"] for g in opt.param_groups}
    assert lrs == {True: 0.02, False: 0.02}
    assert opt.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    # a fallback LR given explicitly is kept
    opt = parse_method("muon[adamw_lr=1e-4]").build([matrix, bias], 0.02)
    assert {g["use_muon"]: g["lr"] for g in opt.param_groups} == {True: 0.02, False: 1e-4}


def test_schedule_free_trajectory_is_its_evaluation_sequence():
    """On a 2-D function the gradient is taken at y (the parameters in train mode) and the
    path and gap are recorded at x (eval mode), as the authors evaluate."""
    task, f = TASKS["beale"], TASKS["beale"].function
    result = run_trial(task, METHODS["schedule_free_adamw"], 0.1, 0, 30)
    p = torch.tensor(f.start, dtype=torch.float64)
    opt = ScheduleFreeAdamW([p], lr=0.1)
    path = [list(f.start)]
    for _ in range(30):
        p.grad = torch.tensor(f.gradient(*p.tolist()), dtype=torch.float64)
        opt.step()
        opt.eval()
        path.append(p.tolist())
        opt.train()
    np.testing.assert_allclose(result["trajectory"], path, rtol=1e-12, atol=1e-14)
    y_path_end = p.tolist()
    assert (
        max(abs(a - b) for a, b in zip(path[-1], y_path_end, strict=True)) > 1e-6
    )  # x and y differ


def test_evaluation_weights_swaps_only_optimizers_that_have_modes():
    p = torch.nn.Parameter(torch.ones(3))
    opt = ScheduleFreeAdamW([p], lr=0.5)
    p.grad = torch.ones(3)
    for _ in range(3):
        opt.step()
    y = p.detach().clone()
    with evaluation_weights(opt):
        assert not torch.allclose(p, y)  # x, the average
    assert opt.training
    torch.testing.assert_close(p.detach(), y)
    plain = torch.optim.SGD([p], lr=0.1)
    with evaluation_weights(plain):
        torch.testing.assert_close(p.detach(), y)
    with evaluation_weights(None):  # fit's model before compile built its optimizer
        pass
    opt.eval()
    with evaluation_weights(opt):
        pass
    assert not opt.training  # left in the mode it was found in


def test_data_trial_evaluates_schedule_free_in_eval_mode(monkeypatch):
    """Every evaluation of the trial (the evaluation points inside fit, the final scores) sees
    the optimizer in eval mode: the parameters hold the average x."""
    from optimist.training import Model

    modes = []
    original = Model.evaluate

    def spy(self, *args, **kwargs):
        if self.optimizer is not None:
            modes.append(self.optimizer.training)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Model, "evaluate", spy)
    gen = np.random.default_rng(0)
    x = gen.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    task = custom_task(lambda: torch.nn.Linear(4, 2), (x, y, x, y), name="tiny")
    result = run_trial(task, METHODS["schedule_free_adamw"], 1e-2, 0, 8, n_evals=8)
    assert result["state"] == "complete"
    assert len(modes) >= 8 and not any(modes)


@pytest.mark.parametrize("name", sorted(SCHEDULE_SETTINGS))
def test_a_method_schedule_follows_the_named_schedule_over_the_run(name):
    total, lr = 20, 0.3
    method = parse_method(f"sgd[schedule={name}]")
    assert method.schedule == name and method.name == f"sgd[schedule={name}]"
    p = torch.zeros(2, requires_grad=True)
    opt = method.build([p], lr, total_steps=total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
    expected = schedules.lr_values(name, total, lr=lr, **SCHEDULE_SETTINGS[name](total, lr))
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert len(set(seen)) > 2  # the rate moved


def test_warmup_cosine_in_compare_warms_up_then_decays_to_zero():
    method = parse_method("adamw[schedule=cosine]")  # alias
    assert method.schedule == "warmup_cosine"
    assert "warmup_cosine" in method.description and method.as_dict()["schedule"] == (
        "warmup_cosine"
    )
    p = torch.zeros(2, requires_grad=True)
    opt = method.build([p], 1.0, total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(2)
        opt.step()
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 5
    assert lrs[-1] < 1e-3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("adam[schedule=plateau]", "needs a metric"),
        ("adam[schedule=cosin]", "Did you mean"),
        ("adam[eps=abc]", "adam[eps=abc]"),
        ("muon[adjust_lr_fn=sideways]", "sideways"),
    ],
)
def test_bad_settings_are_one_line_key_errors(spec, message):
    with pytest.raises(KeyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_method(spec)


def test_words_are_accepted_as_setting_values():
    method = parse_method("muon[adjust_lr_fn=original]")
    assert method.kwargs["adjust_lr_fn"] == "original"


def test_with_schedule_adds_a_setting_unless_the_method_names_one():
    assert with_schedule("adam", "wsd") == "adam[schedule=wsd]"
    assert with_schedule("adam[batch=64]", "wsd") == "adam[batch=64,schedule=wsd]"
    assert with_schedule("adam[schedule=step]", "wsd") == "adam[schedule=step]"
    assert with_schedule("adam", None) == "adam"
    constant = parse_method(with_schedule("adam[schedule=none]", "wsd"))
    assert constant.schedule is None and constant.name == "adam[schedule=none]"


def test_an_optimizer_registered_later_is_a_method_with_its_class_lr(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    class Mine(optimist.optim.SGD):
        def __init__(self, params, lr: float = 0.07):
            super().__init__(params, lr=lr)

    optimist.optim.register("mine", Mine, "A test optimizer.")
    method = get_method("mine")
    assert method.default_lr == 0.07 and method.function_lr == 0.07
    assert isinstance(method.build([torch.zeros(1, requires_grad=True)], 0.1), Mine)


def test_cli_compare_runs_new_optimizers_with_a_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "compare",
            "--task",
            "rosenbrock",
            "--optimizers",
            "lion,muon,schedule_free_adamw[weight_decay=0.0]",
            "--schedule",
            "warmup_cosine",
            "--budget-steps",
            "40",
            "--no-tune",
            "--no-report",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    document = json.loads((out / "results.json").read_text())
    assert set(document["methods"]) == {
        "lion[schedule=warmup_cosine]",
        "muon[schedule=warmup_cosine]",
        "schedule_free_adamw[weight_decay=0.0,schedule=warmup_cosine]",
    }
    for entry in document["methods"].values():
        assert entry["schedule"] == "warmup_cosine"
    finals = [r["final"]["val_loss"] for r in document["runs"]]
    assert finals and all(math.isfinite(v) for v in finals)


def test_cli_rejects_an_unknown_schedule_in_one_line(tmp_path, capsys):
    code = main(
        ["compare", "--task", "rosenbrock", "--optimizers", "adam", "--schedule", "nope"]
        + ["--budget-steps", "5", "--no-tune", "--quiet", "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Unknown schedule 'nope'" in err and err.count("\n") == 1


def test_a_scheduled_method_keeps_its_tunable_settings():
    from optimist.comparison.runner import tunable

    method = parse_method("adamw[schedule=wsd]")
    assert tunable(method, ("lr", "weight_decay", "momentum")) == ("weight_decay",)
