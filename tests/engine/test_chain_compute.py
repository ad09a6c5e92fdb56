"""benchmarks/chain_compute.py: a tiny run prints one row per step, and bad counts are refused."""

from __future__ import annotations

import pytest

from helpers import benchmark, needs_engine

chain_compute = benchmark("chain_compute")


def test_a_tiny_run_reports_every_step(capsys):
    needs_engine()
    assert chain_compute.main(["--rounds", "1", "--calls", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["AdamW", "chain", "chain", "pass"]
    assert all(len(r.split()) >= 3 for r in rows)


def test_counts_below_one_are_refused():
    with pytest.raises(SystemExit):
        chain_compute.main(["--rounds", "0"])
