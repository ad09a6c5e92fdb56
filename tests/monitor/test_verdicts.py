"""Verdicts on constructed runs (each failure class, and healthy ones), and the rules one by one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import optimist
from optimist.monitor import ADVICE, VERDICTS, Thresholds, Verdict, health, watch
from optimist.monitor.verdicts import Diagnoser

# (benchmark case, the verdict it must get); one seed each, from the benchmark's report seeds
CASES = [
    ("digits-mlp-adam", "healthy"),
    ("rosenbrock-adam", "healthy"),
    ("lr-x100-sgd", "dead_relus"),  # the too-large first steps kill the ReLUs
    ("quadratic-lr-x100", "diverging"),
    ("lr-x100-adam", "update_ratio_high"),
    ("lr-div1000-adam", "stalled"),
    ("lr-div1000-adam", "update_ratio_low"),
    ("no-input-scaling", "exploding_gradients"),
    ("bad-init-large", "exploding_gradients"),
    ("bad-init-small", "vanishing_gradients"),
    ("dead-relus", "dead_relus"),
    ("deep-sigmoid", "vanishing_gradients"),
    ("label-noise-overfit", "overfitting"),
]


@pytest.mark.parametrize(("case", "verdict"), CASES, ids=[f"{c}-{v}" for c, v in CASES])
def test_constructed_run_gets_its_verdict(bench, case, verdict):
    cases = {c.name: c for c in bench.cases()}
    result = bench.run_case(cases[case], seed=100)
    names = [v["name"] for v in result.verdicts]
    assert verdict in names, names
    assert result.caught
    if verdict == "healthy":
        assert names == ["healthy"]
    else:
        assert "healthy" not in names


def test_healthy_runs_of_every_kind_raise_no_alarm(bench):
    for case in bench.cases():
        if case.label == "healthy":
            result = bench.run_case(case, seed=101)
            assert [v["name"] for v in result.verdicts] == ["healthy"], (case.name, result.verdicts)


def test_oscillating_on_a_run_that_bounces():
    # SGD on |w| with a step larger than the distance to the minimum: w jumps across 0 forever
    w = nn.Parameter(torch.tensor([0.3]))
    opt = torch.optim.SGD([w], lr=1.0)
    with watch(None, opt, every=1) as m:
        for _ in range(40):
            loss = w.abs().sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.log_loss(loss)
    names = [v.name for v in m.verdicts()]
    assert names == ["oscillating"], m.verdicts()
    assert "lower the learning rate" in m.verdicts()[0].advice


def test_non_finite_gradients_are_diverging_at_once():
    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    with watch(None, opt, every=1) as m:
        loss = (w * float("nan")).sum()
        loss.backward()
        opt.step()
    (v,) = m.verdicts()
    assert (v.name, v.step) == ("diverging", 0)
    assert "NaN/inf" in v.evidence


def _feed(d: Diagnoser, key: str, values: list[float], every: int = 10) -> None:
    for i, value in enumerate(values):
        d.add({"step": i * every, key: value})


def test_rules_on_synthetic_series():
    d = Diagnoser()
    _feed(d, "loss", [2.3] * 12)
    assert [v.name for v in d.verdicts()] == ["stalled"]

    d = Diagnoser()
    _feed(d, "loss", [2.3 * 0.8**i for i in range(30)])
    assert [v.name for v in d.verdicts()] == ["healthy"]

    d = Diagnoser()
    _feed(d, "loss", [2.3, 2.0, 1.8, 9.0])
    (v,) = d.verdicts()
    assert (v.name, v.step) == ("diverging", 30)

    d = Diagnoser()
    for i, (train, val) in enumerate([(2, 2.1), (1, 1.2), (0.5, 1.0), (0.3, 1.3), (0.2, 1.5)]):
        d.add({"step": i * 100, "loss": train})
        d.add({"step": i * 100, "val_loss": val})
    (v,) = [v for v in d.verdicts() if v.name == "overfitting"]
    assert v.step == 400 and "rose from 1" in v.evidence

    d = Diagnoser(layer_sizes={"fc": 1000})
    _feed(d, "dead/relu", [0.1, 0.9, 0.95, 0.97])
    (v,) = d.verdicts()
    assert (v.name, v.layer, v.step) == ("dead_relus", "relu", 20)  # median of 3 readings


def test_thresholds_are_settable():
    d = Diagnoser(Thresholds(stall_min_readings=100))
    _feed(d, "loss", [2.3] * 12)
    assert [v.name for v in d.verdicts()] == ["healthy"]


def test_verdict_words_and_health():
    v = Verdict("dead_relus", 20, "90% of its units output 0", ADVICE["dead_relus"], "fc1")
    assert str(v).startswith("dead_relus in layer fc1 (step 20): 90% of its units output 0. Try:")
    assert set(ADVICE) == set(VERDICTS)
    assert health([Verdict("healthy", 5, "", "")]) == ("healthy", [])
    assert health([v]) == ("warning", ["dead_relus"])
    d = Verdict("diverging", 3, "", "")
    assert health([v, d, v]) == ("diverged", ["dead_relus", "diverging"])
    assert optimist.monitor.health([v]) == ("warning", ["dead_relus"])
