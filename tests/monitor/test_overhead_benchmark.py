"""The statistics and the lockstep runner of ``benchmarks/monitor_overhead.py`` (nothing timed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from helpers import benchmark


@pytest.fixture(scope="module")
def overhead():
    return benchmark("monitor_overhead")


def test_median_interval_ranks_and_coverage(overhead):
    # n = 10: [x(2), x(9)] (1-based) covers the median unless <= 1 value lies on one side
    assert overhead.median_interval(10) == (1, 8, 1 - 2 * 11 / 1024)
    # too few values to reach 95%: the whole sample, with the coverage it has
    assert overhead.median_interval(5) == (0, 4, 1 - 2 / 32)
    for n in (20, 41, 100, 257):
        lo, hi, coverage = overhead.median_interval(n)
        assert hi == n - 1 - lo
        assert coverage == pytest.approx(1 - 2 * stats.binom.cdf(lo, n, 0.5))
        assert coverage >= 0.95 > 1 - 2 * stats.binom.cdf(lo + 1, n, 0.5)  # the narrowest
    with pytest.raises(ValueError, match="at least one value"):
        overhead.median_interval(0)


def test_paired_overhead_recovers_a_known_ratio_under_drifting_load(overhead):
    """Synthetic paired timings: the load multiplies both times of a pair by a factor between
    1 and 3 (far larger than the effect), each time has 2% noise of its own, and the monitored
    one is 3% slower. The paired median finds the 3%; its 95% interval holds the truth in about
    95% of repeated experiments (order statistics: at least 95%, here 96.0% for n = 41)."""
    rng = np.random.default_rng(0)
    true, n, reps, hits = 0.03, 41, 400, 0
    for _ in range(reps):
        load = rng.uniform(1.0, 3.0, n)
        plain = 1e-3 * load * rng.lognormal(0.0, 0.02, n)
        monitored = 1e-3 * (1 + true) * load * rng.lognormal(0.0, 0.02, n)
        r = overhead.paired_overhead(list(plain), list(monitored))
        assert r["low"] <= r["overhead"] <= r["high"]
        assert r["pairs"] == n
        hits += r["low"] <= true <= r["high"]
    assert 0.92 <= hits / reps <= 0.99
    # one experiment with many pairs pins it down; the minima of the two sides do not
    load = rng.uniform(1.0, 3.0, 1001)
    plain = load * rng.lognormal(0.0, 0.02, 1001)
    monitored = (1 + true) * load * rng.lognormal(0.0, 0.02, 1001)
    r = overhead.paired_overhead(list(plain), list(monitored))
    assert r["overhead"] == pytest.approx(true, abs=0.003)
    assert r["high"] - r["low"] < 0.006
    with pytest.raises(ValueError, match="equally long"):
        overhead.paired_overhead([1.0, 2.0], [1.0])


def test_verdict_uses_the_ends_of_the_interval(overhead):
    assert overhead.verdict({"low": 0.01, "high": 0.049}) == "met"
    assert overhead.verdict({"low": 0.04, "high": 0.06}) == "not shown"
    assert overhead.verdict({"low": 0.051, "high": 0.08}) == "missed"


def test_lockstep_alternates_the_two_runs_batch_by_batch(overhead):
    order: list[int] = []

    def run(me: int, batches: int):
        def fit(baton) -> None:
            for b in range(batches):
                baton.on_train_batch_begin(b)
                order.append(me)

        return fit

    lockstep = overhead._Lockstep()
    times = lockstep.run([run(0, 5), run(1, 3)], first=1)
    assert order == [1, 0, 1, 0, 1, 0, 0, 0]  # strictly alternating until one run ends
    assert len(times) == 2 and min(times) >= 0

    def broken(baton) -> None:
        baton.on_train_batch_begin(0)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):  # the other run is not left waiting
        lockstep.run([run(0, 4), broken], first=0)


@pytest.mark.slow
def test_paired_loops_run_and_report(overhead):
    """The plumbing, on a few short pairs (what it measures is not asserted: nothing timed)."""
    r = overhead.measure_loop("tiny", 10, pairs=3, min_block=15, warmup=5)
    assert r["pairs"] == 3 and r["every"] == 10
    assert r["low"] <= r["overhead"] <= r["high"]
    assert r["plain"] > 0 and r["watched"] > 0 and 0 < r["share"] < 1
    f = overhead.measure_fit(pairs=1)
    assert f["pairs"] == 1 and f["low"] == f["overhead"] == f["high"]
    assert 0 < f["share"] < 1
    row = overhead._row("tiny", "10", r, "ms")
    assert row.startswith("| tiny | 10 | ") and overhead.verdict(r) in row
