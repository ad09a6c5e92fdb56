"""``optimist compare --lr-find``: the range test's suggestion replaces the default LR."""

from __future__ import annotations

import json
import math

import pytest

from optimist.comparison import compare, lr_find
from optimist.comparison.methods import get_method
from optimist.comparison.runner import lr_grid
from optimist.comparison.tasks import get_task
from optimist.monitor import lr_finder


def test_snap_rounds_to_a_tenth_of_a_decade():
    assert lr_find.snap(0.0123) == 0.0126  # 10**-1.9
    assert lr_find.snap(1e-3) == 0.001
    assert lr_find.snap(0.0101) == lr_find.snap(0.0099) == 0.01


def test_find_lr_is_the_range_test_rounded_and_repeatable():
    task, method = get_task("digits-mlp"), get_method("adam")
    found = lr_find.find_lr(task, method, None)
    again = lr_find.find_lr(task, method, None)
    assert found == again  # seeded: the same number every time
    assert found["default_lr"] == task.default_lr(method)
    assert lr_find.START_LR <= found["suggestion"] <= lr_find.END_LR
    assert found["lr"] == found["suggestion"]
    # it is optimist.lr_finder's own suggestion on the same model, data and seeds
    import torch

    from optimist.comparison.training_loop import derive_seed

    data = task.data(None)
    torch.manual_seed(derive_seed(task.name, "lr-find", "init"))
    model = task.model_fn()
    raw = lr_finder(
        model,
        (data.x_train, data.y_train),
        optimizer=method.build(list(model.parameters()), 1e-7),
        loss="cross_entropy",
        steps=lr_find.FINDER_STEPS,
        batch_size=method.batch_size(len(data.y_train)),
        seed=derive_seed(task.name, "lr-find", "order") % (2**31),
    )
    assert abs(math.log10(raw.suggestion) - math.log10(found["suggestion"])) <= 0.05 + 1e-9


@pytest.mark.slow
def test_compare_lr_find_centres_the_grid_and_says_so(tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = dict(
        tasks=["digits-mlp", "rosenbrock"],
        optimizers=["adam"],
        budget_steps=20,
        n_evals=2,
        out=out,
        lr_find=True,
    )
    result = compare(**common)
    doc = result.results
    found = doc["lr_finder"]["digits-mlp/adam"]
    assert set(doc["lr_finder"]) == {"digits-mlp/adam"}  # no range test on 2-D functions
    rows = {r["task"]: r for r in doc["summary"]}
    assert rows["digits-mlp"]["lr"] == found["suggestion"] != found["default_lr"]
    assert rows["digits-mlp"]["lr_source"] == "lr-finder"
    assert rows["rosenbrock"]["lr_found"] is None and rows["rosenbrock"]["lr_source"] == "default"
    assert [r["lr"] for r in doc["runs"] if r["task"] == "digits-mlp"] == [found["suggestion"]]
    page = (out / "report.html").read_text()
    assert "LR finder" in page and f"{found['suggestion']:.3g} †" in page
    assert json.loads((out / "lr_finder.json").read_text())["digits-mlp/adam"]["lr"] == found["lr"]
    frame_row = result.to_pandas().set_index("task").loc["digits-mlp"]
    assert frame_row["lr_found"] == found["suggestion"]

    # tuning, same folder: the grid is centred on the suggestion, taken from lr_finder.json
    def no_second_sweep(*args, **kwargs):
        raise AssertionError("the range test ran again instead of reusing lr_finder.json")

    monkeypatch.setattr(lr_find, "find_lr", no_second_sweep)
    tuned = compare(**common, tune=True, grid_size=3, lr_span=1.0)
    trials = [t["lr"] for t in tuned.results["tuning"] if t["task"] == "digits-mlp"]
    assert sorted(trials) == sorted(lr_grid(found["suggestion"], _Span(3, 1.0)))
    assert found["suggestion"] in trials
    assert tuned.results["lr_finder"] == doc["lr_finder"]


class _Span:
    """The two settings lr_grid reads."""

    def __init__(self, grid_size: int, lr_span: float) -> None:
        self.grid_size, self.lr_span, self.lr_range = grid_size, lr_span, None


def test_cli_flag_and_study_key_reach_the_config(monkeypatch, tmp_path):
    from optimist import cli
    from optimist.comparison import api

    seen = []

    def fake_run(config):
        seen.append(config)
        raise api.RunError("stop here")

    monkeypatch.setattr(api, "run", fake_run)
    base = ["compare", "--task", "digits-mlp", "--optimizers", "adam", "--out", str(tmp_path)]
    assert cli.main([*base, "--lr-find"]) == 3
    study = tmp_path / "study.toml"
    study.write_text("lr_find = true\n")
    assert cli.main([*base, "--study", str(study)]) == 3
    assert cli.main(base) == 3
    assert [c.lr_find for c in seen] == [True, True, False]
