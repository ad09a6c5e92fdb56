"""benchmarks/bucket_speed.py: its op counts show the buckets, and a tiny run prints its table."""

from __future__ import annotations

import re

from helpers import benchmark

bucket_speed = benchmark("bucket_speed")  # it imports step_speed from beside it


def test_bucketed_step_dispatches_a_few_ops_instead_of_some_per_tensor():
    r = bucket_speed.measure("lion", "tiny", "cpu", repeats=1, steps=1)
    per_tensor, bucketed = r["counts"]["per tensor"][0], r["counts"]["bucketed"][0]
    assert per_tensor >= 5 * 1000  # Lion's eager function: at least 5 ops per tensor
    assert bucketed <= 30, bucketed  # one bucket: the same ops once, plus flattening
    assert r["seconds"]["bucketed"] > 0 and r["tensors"] == 1000


def test_main_prints_a_row_per_optimizer(capsys):
    assert bucket_speed.main(["--optimizers", "adopt", "--sizes", "tiny", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| adopt \| tiny \| \d{5} → \d{2} \|", out), out
