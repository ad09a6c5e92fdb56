"""benchmarks/keras_speed.py: its shape sets, both sides stepping alike, and a tiny run's table."""

from __future__ import annotations

import importlib.util
import math
import os
import platform
import subprocess
import sys

import pytest
import torch

from helpers import KERAS_NUMPY2, benchmark, require

keras_speed = benchmark("keras_speed")


@pytest.fixture
def keras(monkeypatch):
    """Keras 3 on the torch backend and the CPU; the environment is restored afterwards."""
    require(importlib.util.find_spec("keras") is not None, "Keras 3", "pip install keras")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    monkeypatch.setenv("KERAS_TORCH_DEVICE", "cpu")
    return keras_speed.import_keras()


def test_shape_sets_interleave_matrices_and_vectors_and_name_them_as_layers():
    shapes = keras_speed.parse_shapes("transformer")
    assert shapes[:3] == [(1024, 1024), (1024,), (1024, 1024)]
    assert sum(math.prod(s) for s in shapes) == 12 * 1024 * 1024 + 12 * 1024
    assert len(keras_speed.parse_shapes("tiny")) == 200
    assert keras_speed.parse_shapes("2*3x4,1*5,6") == [(3, 4), (5,), (6,), (3, 4)]
    names = keras_speed.param_names([(3, 4), (5,), (6,), (3, 4)])
    assert names == ["dense_0.weight", "dense_0.bias", "dense_0.bias", "dense_1.weight"]
    for bad in ("3x", "0*4", "2*3x-1", "ax4"):
        with pytest.raises(ValueError, match="bad shape"):
            keras_speed.parse_shapes(bad)


@pytest.mark.filterwarnings(KERAS_NUMPY2)
@pytest.mark.parametrize("name", ["Adam", "Muon"])
def test_both_sides_take_the_same_step_from_the_same_values(keras, name):
    shapes = keras_speed.parse_shapes("3*16x8,3*16")
    names = keras_speed.param_names(shapes)
    start = [p.detach().clone() for p in keras_speed.make_params(shapes)]
    params = keras_speed.make_params(shapes)
    keras_step, runs, weights = keras_speed.keras_contender(keras, name, params, names)
    step, via = keras_speed.optimist_contender(name, params, names)
    with torch.no_grad():
        keras_step()
        step()
    assert runs == ("torch foreach" if name == "Adam" else "per variable")
    assert "C++ engine" in via or "torch" in via
    if name == "Muon":
        assert via.startswith("Newton-Schulz")  # the matrices went to Muon's branch
    for mine, theirs, before in zip(params, weights, start, strict=True):
        assert not torch.equal(mine.detach(), before)  # it stepped
        torch.testing.assert_close(mine.detach(), theirs.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings(KERAS_NUMPY2)
def test_a_tiny_run_prints_a_row_per_optimizer_with_both_times(keras, capsys):
    code = keras_speed.main(  # glibc as it comes: --malloc keep would change this process's
        ["--shapes", "tiny", "--optimizers", "adam,muon", "--repeats", "1", "--markdown"]
        + ["--malloc", "glibc"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "minimum of 1 interleaved rounds" in out and "as it comes" in out
    lines = out.splitlines()
    assert "| " + " | ".join(keras_speed.HEAD) + " |" in lines
    rows = [line for line in lines if line.startswith("| Adam |") or line.startswith("| Muon |")]
    assert [r.split("|")[1].strip() for r in rows] == ["Adam", "Muon"]
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(keras_speed.HEAD)
        assert cells[1] == "tiny" and cells[2] == "0.42M/200" and cells[3] == "1"
        theirs, ours, ratio = float(cells[4]), float(cells[5]), float(cells[6].rstrip("×"))
        assert all(math.isfinite(t) and t > 0 for t in (theirs, ours))
        assert ratio == pytest.approx(theirs / ours, rel=0.1)  # the ratio of the two times
        assert all(int(n) >= 0 for n in cells[7].split(" / "))  # page faults of each side


def test_page_faults_counts_the_pages_a_step_touches_first():
    # 64 MiB: above glibc's largest mmap threshold, so always fresh pages: 16384 of 4 KiB, or
    # 32 of 2 MiB where the kernel gives transparent huge pages
    fresh = keras_speed.page_faults(lambda: torch.ones(2**24))
    assert fresh >= 32 and fresh > 4 * keras_speed.page_faults(lambda: None)


@pytest.mark.filterwarnings(KERAS_NUMPY2)
def test_by_default_the_run_keeps_freed_memory_and_says_so(keras, tmp_path):
    """Run apart (mallopt would change this test process for good): its header and one row."""
    script = keras_speed.__file__
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, script, "--shapes", "2*8x4,2*8", "--optimizers", "lion", "--repeats", "1"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    glibc = platform.libc_ver()[0] == "glibc"
    expected = (
        "glibc malloc keeps freed memory" if glibc else "not glibc: --malloc keep does nothing"
    )
    assert expected in done.stdout and "\nLion " in done.stdout


def test_the_thread_clock_refuses_several_threads_and_unknown_names_are_refused(capsys):
    with pytest.raises(SystemExit):
        keras_speed.main(["--clock", "thread", "--threads", "1,2"])
    assert "--threads 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        keras_speed.main(["--optimizers", "adam,sophia"])
    assert "unknown optimizers ['sophia']" in capsys.readouterr().err
