"""Hostile inputs and a failing machine: secrets, task names as paths, environment errors,
absurd budgets, a damaged study database, unwritable results, bursts of Ctrl-C (issue 7)."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import optimist
from optimist.cli import main
from optimist.comparison import custom_task, validate
from optimist.comparison import runner as runner_module
from optimist.comparison.safety import inside, redact, safe_name, scrub, secrets_of

SECRET = "S3cr3tPa55word"

QUICK = ["--task", "rosenbrock", "--optimizers", "gd,adam", "--budget-steps", "30"]
QUICK += ["--evals", "5", "--quiet", "--workers", "1"]


def _every_byte_under(folder: Path) -> bytes:
    chunks = []
    for path in folder.rglob("*"):
        chunks.append(str(path).encode())
        if path.is_file():
            chunks.append(path.read_bytes())
    return b"\n".join(chunks)


# --- 1: secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://user:{SECRET}@db.example:5432/optimist",
        f"postgresql+psycopg2://user:{SECRET}@db.example/optimist?sslmode=require",
        f"postgresql://user@db.example/optimist?password={SECRET}&sslmode=require",
        f"postgresql://db.example/optimist?sslmode=require&password={SECRET}",
        f"host=db.example user=me password={SECRET} dbname=optimist",
        f"host=db.example password='{SECRET}' dbname=optimist",
        f"mysql://user:{SECRET}@ssword@db.example/optimist",
    ],
)
def test_redact_hides_the_password_in_every_url_form(url):
    shown = redact(url)
    assert SECRET not in shown and "***" in shown
    assert "db.example" in shown  # the rest stays readable
    assert SECRET in secrets_of(url) or f"{SECRET}@ssword" in secrets_of(url)


def test_scrub_removes_known_secrets_from_any_text():
    url = "postgresql://me:p%40ss%2Fw0rd!@host/db"
    secrets = secrets_of(url)
    assert "p@ss/w0rd!" in secrets  # the decoded form, as a driver's message would show it
    doc = {"error": 'FATAL: password authentication failed ("p@ss/w0rd!")', "n": [1, "x"]}
    assert "p@ss/w0rd!" not in json.dumps(scrub(doc, secrets))
    assert scrub(doc, secrets)["n"] == [1, "x"]


def test_no_secret_reaches_results_report_or_logs(tmp_path, capsys):
    out = tmp_path / "out"
    storage = f"sqlite:///{out}/study.db?password={SECRET}"
    code = main(["compare", *QUICK, "--out", str(out), "--storage", storage])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert SECRET not in captured.out + captured.err
    assert SECRET.encode() not in _every_byte_under(out)
    document = json.loads((out / "results.json").read_text())
    assert "password=***" in document["command"]
    assert "password=***" in document["protocol"]["storage"]


def test_libpq_password_via_the_python_api_is_hidden(tmp_path):
    out = tmp_path / "api"
    result = optimist.compare(
        tasks=["saddle"],
        optimizers=["gd"],
        budget_steps=10,
        n_evals=2,
        out=out,
        storage=f"sqlite:///{out}/study.db?sslmode=x&password={SECRET}",
    )
    assert SECRET not in json.dumps(result.results)
    assert SECRET.encode() not in _every_byte_under(out)


def test_unreachable_server_error_hides_the_password(tmp_path, capsys):
    storage = f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:9/db?password={SECRET}"
    assert main(["compare", *QUICK, "--out", str(tmp_path / "o"), "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and len(err.strip().splitlines()) == 1


# --- 2: task names are not paths ----------------------------------------------------------


def test_safe_names_are_distinct_and_stay_in_their_folder(tmp_path):
    names = ["a/b", "a_b", "A_b", "..", ".", "../../escaped", "", "x" * 300, "mnist-mlp", "ü"]
    files = [safe_name(n) for n in names]
    assert len(set(files)) == len(files)
    assert safe_name("mnist-mlp") == "mnist-mlp"  # a name that is already safe is kept
    for f in files:
        assert f and "/" not in f and not f.startswith(".") and len(f) < 80
        inside(tmp_path, tmp_path / f)
    with pytest.raises(ValueError, match="outside the output folder"):
        inside(tmp_path, tmp_path / ".." / "x")


def _tiny_model():
    return torch.nn.Linear(4, 2)


def test_hostile_task_names_write_a_report_and_nothing_outside(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    data = (x[:60], y[:60], x[60:], y[60:])
    names = ["a/b", "a_b", "../../escaped"]
    tasks = [custom_task(_tiny_model, data, name=n, eval_size=20) for n in names]
    out = tmp_path / "deep" / "er" / "out"
    before = set(tmp_path.rglob("*"))
    result = optimist.compare(
        tasks=tasks, optimizers=["adam"], budget=1, n_evals=3, out=out, report=True
    )
    assert result.report is not None and result.report.is_file()
    created = set(tmp_path.rglob("*")) - before
    assert all(p == out or out in p.parents or p in out.parents for p in created), created
    stems = {p.name.split("-loss-steps")[0] for p in (out / "plots").glob("*-loss-steps.svg")}
    assert len(stems) == 3  # three tasks, three distinct sets of plots
    page = result.report.read_text()
    assert all(n.replace("/", "&#x2F;") in page or n in page for n in names)


# --- 5: environment errors are retried, not recorded ---------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied"),
        OSError(errno.EIO, "Input/output error"),
        RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed."),
    ],
    ids=["ENOSPC", "EACCES", "EIO", "killed-worker"],
)
def test_environment_error_stops_with_one_line_and_is_retried(exc, tmp_path, monkeypatch, capsys):
    out = tmp_path / "env"
    real = runner_module.results_io.write_trial_file
    calls = {"n": 0}

    def failing(out_dir, record):
        calls["n"] += 1
        if calls["n"] == 2:
            raise exc
        return real(out_dir, record)

    monkeypatch.setattr(runner_module.results_io, "write_trial_file", failing)
    code = main(["compare", *QUICK, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "run the same command again" in err
    partial = json.loads((out / "results.json").read_text())
    assert partial["status"] == "partial"

    monkeypatch.setattr(runner_module.results_io, "write_trial_file", real)
    assert main(["compare", *QUICK, "--out", str(out)]) == 0
    document = json.loads((out / "results.json").read_text())
    assert document["status"] == "complete"
    assert all(r["state"] == "complete" for r in document["runs"])
    assert not any("error" in r for r in document["runs"])


# --- 13: budgets, unwritable results, damaged database, Ctrl-C bursts, errored methods ---------


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (["--budget", "inf"], "budget must be a finite number"),
        (["--budget", "1e300"], "the most is 5,000,000 per run"),
        (["--budget-steps", "100000000000"], "the most is 5,000,000 per run"),
        (["--budget", "1e-9"], "no optimizer step"),
        (["--budget", "nan"], "budget must be a positive number"),
    ],
)
def test_absurd_budgets_are_one_line_errors(budget, message, tmp_path, capsys):
    args = ["compare", "--task", "rosenbrock,digits-mlp", "--optimizers", "sgd", *budget]
    assert main([*args, "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unwritable_results_is_one_line(tmp_path, capsys):
    out = tmp_path / "ro"
    (out / "results.json").mkdir(parents=True)  # cannot be replaced by a file
    code = main(["compare", *QUICK, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "cannot write the results" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def _damage(db: Path, value: str) -> None:
    with sqlite3.connect(db) as conn:
        (row,) = conn.execute(
            "SELECT trial_user_attribute_id FROM trial_user_attributes WHERE key='result' "
            "ORDER BY trial_user_attribute_id LIMIT 1"
        ).fetchall()
        conn.execute(
            "UPDATE trial_user_attributes SET value_json=? WHERE trial_user_attribute_id=?",
            (value, row[0]),
        )


def test_damaged_database_rows(tmp_path, capsys):
    out = tmp_path / "db"
    assert main(["compare", *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    # valid JSON of the wrong shape: the trial is run again, the study completes
    _damage(out / "study.db", "5")
    assert main(["compare", *QUICK, "--out", str(out)]) == 0
    validate(json.loads((out / "results.json").read_text()))
    capsys.readouterr()
    # unparsable JSON: a one-line error, not a traceback
    _damage(out / "study.db", "{broken")
    code = main(["compare", *QUICK, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 3 and "looks damaged" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_method_whose_every_run_errored_is_never_ranked(tmp_path, monkeypatch):
    real = runner_module.run_trial

    def broken_adam(task, method, *args, **kwargs):
        if method.name == "adam":
            raise ValueError("boom")
        return real(task, method, *args, **kwargs)

    monkeypatch.setattr(runner_module, "run_trial", broken_adam)
    result = optimist.compare(
        tasks=["rosenbrock"], optimizers=["adam", "gd"], budget_steps=20, n_evals=4, out=tmp_path
    )
    rows = {r["method"]: r for r in result.summary}
    assert rows["adam"]["rank"] is None and rows["adam"]["n_errors"] == 1
    assert rows["gd"]["rank"] == 1
    assert result.ranking("rosenbrock") == ["gd"]
    alone = optimist.compare(
        tasks=["rosenbrock"], optimizers=["adam"], budget_steps=20, n_evals=4, out=tmp_path / "a"
    )
    assert alone.summary[0]["rank"] is None
    assert "adam" not in alone.results["recommendations"]["rosenbrock"].split("Recommendation")[-1]
    assert "Recommendation" not in alone.results["recommendations"]["rosenbrock"]


def test_plots_are_written_atomically(tmp_path, monkeypatch):
    from optimist.comparison import results as results_io

    placed = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):
        placed.append(Path(dst).resolve())
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(results_io.os, "replace", spy)
    out = tmp_path / "atomic"
    optimist.compare(
        tasks=["saddle"], optimizers=["gd"], budget_steps=10, n_evals=2, out=out, report=True
    )
    plots = [p.resolve() for p in (out / "plots").iterdir()]
    assert plots and all(p in placed for p in plots)


@pytest.mark.slow
def test_a_burst_of_ctrl_c_still_exits_130_with_a_partial_report(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "burst"
    args = ["compare", "--task", "rosenbrock,digits-mlp", "--optimizers", "gd,momentum,adam"]
    args += ["--tune", "--grid-size", "3", "--seeds", "2", "--budget-steps", "200"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "optimist", *args, "--out", str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300
    while len(list((out / "trials").rglob("*.json"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.03)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    validate(json.loads((out / "results.json").read_text()))
