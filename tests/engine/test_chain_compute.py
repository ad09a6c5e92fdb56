"""benchmarks/chain_compute.py: a tiny run prints one row per step, and bad counts are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helpers import needs_engine

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "chain_compute.py"
_spec = importlib.util.spec_from_file_location("chain_compute", _PATH)
chain_compute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chain_compute)


def test_a_tiny_run_reports_every_step(capsys):
    needs_engine()
    assert chain_compute.main(["--rounds", "1", "--calls", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [r.split()[0] for r in rows] == ["AdamW", "chain", "chain", "pass"]
    assert all(len(r.split()) >= 3 for r in rows)


def test_counts_below_one_are_refused():
    with pytest.raises(SystemExit):
        chain_compute.main(["--rounds", "0"])
