"""optimist.schedules: closed-form values, torch's classes by name, state_dict, plot, errors."""

from __future__ import annotations

import math

import pytest
import torch

import optimist
from optimist import schedules as S


def sgd(lr: float = 1.0) -> torch.optim.SGD:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def cos_between(a: float, b: float, x: float) -> float:
    return b + (a - b) * 0.5 * (1 + math.cos(math.pi * x))


def test_warmup_cosine_closed_form():
    values = S.lr_values(
        "warmup_cosine", 14, lr=2.0, total_steps=12, warmup_steps=4, min_factor=0.1
    )
    expected = [2.0 * t / 4 for t in range(4)]
    expected += [2.0 * cos_between(1.0, 0.1, min(1, (t - 4) / 8)) for t in range(4, 14)]
    assert values == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert values[12] == values[13] == pytest.approx(0.2)  # stays at the floor after the end


def test_wsd_closed_form_every_decay():
    kw = dict(total_steps=20, warmup_steps=2, decay_steps=5, min_factor=0.0)
    shapes = {"linear": lambda x: 1 - x, "1-sqrt": lambda x: 1 - math.sqrt(x)}
    shapes["cosine"] = lambda x: cos_between(1.0, 0.0, x)
    for decay, shape in shapes.items():
        values = S.lr_values("wsd", 22, decay=decay, **kw)
        expected = [0.0, 0.5] + [1.0] * 13 + [shape(min(1, (t - 15) / 5)) for t in range(15, 22)]
        assert values == pytest.approx(expected, rel=1e-12, abs=1e-15), decay
    default = S.WarmupStableDecay(sgd(), total_steps=100)
    assert default.decay_steps == 20 and default.decay == "1-sqrt"


def test_inverse_sqrt_closed_form():
    values = S.lr_values("inverse_sqrt", 10, lr=0.5, warmup_steps=4, warmup_start_factor=0.2)
    expected = [0.5 * (0.2 + 0.8 * t / 4) for t in range(4)]
    expected += [0.5 * math.sqrt(4 / t) for t in range(4, 10)]
    assert values == pytest.approx(expected, rel=1e-12)
    assert S.lr_values("rsqrt", 3, warmup_steps=0) == pytest.approx([1, 1, 1 / math.sqrt(2)])


@pytest.mark.parametrize(
    ("name", "kwargs", "closed_form"),
    [
        ("linear", {"start_factor": 0.25, "total_iters": 4}, lambda t: 0.25 + 0.75 * min(t, 4) / 4),
        ("step", {"step_size": 3, "gamma": 0.5}, lambda t: 0.5 ** (t // 3)),
        ("exponential", {"gamma": 0.9}, lambda t: 0.9**t),
        ("polynomial", {"total_iters": 5, "power": 2.0}, lambda t: (1 - min(t, 5) / 5) ** 2),
    ],
)
def test_torch_rules_by_name_closed_form(name, kwargs, closed_form):
    values = S.lr_values(name, 8, **kwargs)
    assert values == pytest.approx([closed_form(t) for t in range(8)], rel=1e-9, abs=1e-12)


def test_one_cycle_and_plateau_are_torchs():
    opt = sgd()
    one_cycle = S.get("one-cycle", opt, max_lr=1.0, total_steps=10)
    assert type(one_cycle) is torch.optim.lr_scheduler.OneCycleLR
    values = S.lr_values("one_cycle", 10, max_lr=1.0, total_steps=10, anneal_strategy="linear")
    assert max(values) == pytest.approx(1.0) and values[0] == pytest.approx(1.0 / 25)
    metrics = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    lrs = S.lr_values("plateau", 6, metrics=metrics, patience=1, factor=0.1)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1])


def test_state_dict_round_trip_resumes_the_schedule():
    a = S.get("wsd", sgd(), total_steps=30, warmup_steps=5, decay="cosine")
    for _ in range(17):
        a.optimizer.step()
        a.step()
    b = S.get("wsd", sgd(), total_steps=30, warmup_steps=5, decay="cosine")
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        for s in (a, b):
            s.optimizer.step()
            s.step()
        assert a.get_last_lr() == b.get_last_lr()
    assert a.get_last_lr()[0] == pytest.approx(b.factor(27))


def test_works_with_optimist_optimizers_and_per_group_lrs():
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    opt = optimist.optim.Adam([{"params": params[:1], "lr": 0.1}, {"params": params[1:]}], lr=1.0)
    sched = S.get("cosine", opt, total_steps=4)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [0.1 * cos_between(1, 0, 0.25), cos_between(1, 0, 0.25)]
    )


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_atomically(tmp_path, suffix):
    out = S.plot("wsd", tmp_path / f"wsd{suffix}", steps=50, total_steps=50, warmup_steps=5)
    assert out.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind
    assert out.read_bytes()[:4] == (b"\x89PNG" if suffix == ".png" else b"<?xm")


def test_errors_are_one_line_value_errors(tmp_path):
    cases = [
        (lambda: S.get("cosinus", sgd(), total_steps=5), "Did you mean 'cosine'"),
        (lambda: S.get("cosine", sgd(), total_step=5), "schedule 'cosine'"),
        (lambda: S.get("cosine", sgd(), total_steps=5, warmup_steps=5), "warmup_steps"),
        (lambda: S.get("wsd", sgd(), total_steps=5, decay="exp"), "decay"),
        (lambda: S.get("wsd", sgd(), total_steps=5, warmup_steps=3, decay_steps=3), "<= total"),
        (lambda: S.get("cosine", sgd(), total_steps=5, min_factor=1.5), r"\[0, 1\]"),
        (lambda: S.get("cosine", sgd(), total_steps=0), "total_steps"),
        (lambda: S.lr_values("plateau", 3), "metrics"),
        (lambda: S.plot("cosine", tmp_path / "x.jpg", steps=3, total_steps=3), ".png or .svg"),
        (lambda: S.plot("cosine", tmp_path / "no/x.png", steps=3, total_steps=3), "folder"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    assert S.names() == sorted(S.names()) and "wsd" in S.names()
