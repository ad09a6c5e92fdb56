"""benchmarks/memory_streams.py: its arithmetic on known times, and a tiny run."""

from __future__ import annotations

import pytest

from helpers import benchmark

memory_streams = benchmark("memory_streams")


def test_analyse_expresses_the_writes_in_array_reads():
    n = 1000
    ns = {name: 1.0 for name in memory_streams.PASSES}  # ns per element
    ns.update({"a.dot(b)": 2.0, "a.add_(b)": 2.5, "torch.add(a, b, out=c)": 3.5})
    got = memory_streams.analyse({k: v * n * 1e-9 for k, v in ns.items()}, n)
    assert got["read"] == pytest.approx(1.0)
    assert got["in_place_write"] == pytest.approx(0.5)
    assert got["other_write"] == pytest.approx(1.5)


def test_a_tiny_run_prints_every_pass(capsys):
    memory_streams.main(["--elements", "4096", "--repeats", "2"])
    out = capsys.readouterr().out
    for name in memory_streams.PASSES:
        assert name in out
    assert "a write in place (add_ - dot)" in out
