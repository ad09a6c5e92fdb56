"""The monitor log (round trip, killed runs), `optimist diagnose`, CSV and TensorBoard output."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import require
from optimist.cli import main
from optimist.monitor import diagnose, health, read_log, watch
from optimist.monitor.sinks import tensorboard_available

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(tmp_path: Path, steps: int = 60, lr: float = 0.05, **kw):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    with watch(net, opt, every=5, **kw) as m:
        for i in range(steps):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            m.log_loss(loss)
            if i % 20 == 19:
                m.log_val_loss(loss.item() * 1.1)
    return m


def test_log_round_trip(tmp_path):
    path = tmp_path / "run.jsonl"
    m = _run(tmp_path, log=path)
    log = read_log(path)
    assert not log.truncated
    assert log.header["every"] == 5 and log.header["optimizer"] == "SGD"
    assert log.header["layer_sizes"] == {"0": 8 * 32 + 32, "2": 32 * 3 + 3}
    assert log.records == m.records  # floats survive JSON exactly
    assert diagnose(path) == m.verdicts()
    assert health(path) == m.health() == health(m)
    lines = path.read_text().splitlines()
    assert all(json.loads(line)["type"] in ("header", "record") for line in lines)


def test_non_finite_values_round_trip(tmp_path):
    path = tmp_path / "nan.jsonl"
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    with watch(None, opt, every=1, log=path) as m:
        (w * float("inf")).sum().backward()
        opt.step()
        m.log_loss(float("nan"))
    records = read_log(path).records
    assert records[0]["nonfinite"] == 1.0
    assert records[1]["loss"] != records[1]["loss"]  # NaN
    assert [v.name for v in diagnose(path)] == ["diverging"]


def test_diagnose_a_log_of_a_killed_run(tmp_path):
    # a run killed by SIGKILL mid-training: the chunks written before the kill stay readable
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from torch import nn
        from optimist.monitor import watch
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        opt = torch.optim.SGD(net.parameters(), lr=5e-5)
        x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
        m = watch(net, opt, every=2, log={str(path)!r})
        for i in range(1000):
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(); loss.backward(); opt.step(); m.log_loss(loss)
            if i == 400:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    complete = read_log(path)
    assert len(complete.records) > 100
    # and killed in the middle of a write: a partial last line
    with open(path, "a") as f:
        f.write('{"type": "record", "step": 402, "grad_no')
    log = read_log(path)
    assert log.truncated and log.records == complete.records
    assert "stalled" in [v.name for v in diagnose(log)]


def test_cli_diagnose_prints_verdicts_and_plots(tmp_path, capsys):
    path = tmp_path / "run.jsonl"
    _run(tmp_path, lr=5e-5, steps=80, log=path)
    with open(path, "a") as f:
        f.write('{"type": "rec')  # cut short
    for out in ("signals.png", "signals.svg"):
        assert main(["diagnose", str(path), "--plot", str(tmp_path / out)]) == 0
        assert (tmp_path / out).stat().st_size > 1000
    text = capsys.readouterr().out
    assert "records up to step" in text and "cut off" in text
    assert "- stalled" in text and "Try: raise the learning rate" in text
    assert (tmp_path / "signals.svg").read_text().lstrip().startswith("<?xml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl"], "no monitor log"),
        (["bad.jsonl"], "not an optimist monitor log"),
        (["run.jsonl", "--plot", "out.pdf"], ".png or .svg"),
        (["run.jsonl", "--plot", "nowhere/out.png"], "does not exist"),
    ],
)
def test_cli_diagnose_bad_input(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"hello": 1}\n')
    _run(tmp_path, steps=10, log=tmp_path / "run.jsonl")
    assert main(["diagnose", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("optimist diagnose: error:") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "run.jsonl"]


def test_csv_output(tmp_path):
    m = _run(tmp_path, steps=20, csv=tmp_path / "run.csv")
    with open(tmp_path / "run.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"step", "signal", "value"}
    expected = [(r["step"], k, v) for r in m.records for k, v in r.items() if k != "step"]
    assert [(int(r["step"]), r["signal"], float(r["value"])) for r in rows] == expected


def test_tensorboard_output(tmp_path):
    require(tensorboard_available(), "tensorboard", "pip install tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, steps=20, tensorboard=tmp_path / "tb")
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "grad_norm", "update_ratio/0", "dead/1"} <= set(tags)
    assert [e.step for e in acc.Scalars("grad_norm")] == [0, 5, 10, 15]
