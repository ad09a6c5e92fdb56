"""benchmarks/functional_overhead.py: a tiny run prints both timings."""

from __future__ import annotations

from helpers import benchmark

functional_overhead = benchmark("functional_overhead")


def test_a_tiny_run_prints_class_and_functional(capsys):
    functional_overhead.main(["--shapes", "2x64", "--repeats", "1", "--calls", "2"])
    out = capsys.readouterr().out
    assert "adam, 2 tensors x 64: class " in out and "functional " in out and "ratio " in out
