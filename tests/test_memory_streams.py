"""benchmarks/memory_streams.py: its arithmetic on known times, and a tiny run."""

from __future__ import annotations

import pytest

from helpers import benchmark

memory_streams = benchmark("memory_streams")


def test_analyse_expresses_the_writes_in_array_reads():
    n = 1000
    ns = {name: 1.0 for name in memory_streams.PASSES}  # ns per element
    ns.update({"sum(a)": 1.0, "a.add_(b)": 2.5, "torch.add(a, b, out=c)": 3.5})
    got = memory_streams.analyse({k: v * n * 1e-9 for k, v in ns.items()}, n)
    assert got["read"] == pytest.approx(1.0)
    assert got["in_place_write"] == pytest.approx(0.5)
    assert got["other_write"] == pytest.approx(1.5)
    # a pass's model: its arrays at these costs (addcmul_: 3 reads + 1 write in place)
    assert memory_streams.model_ns("a.addcmul_(b, c)", got) == pytest.approx(3.5)


def test_the_floors_come_from_the_measured_passes():
    n = 1000
    ns = {name: 1.0 for name in memory_streams.PASSES}
    # a read 1 ns, a write in place 0.5 (add_ 2.5), Adam's pass 8, addcmul_ 3.5
    ns.update({"sum(a)": 1.0, "a.add_(b)": 2.5, "Adam step (torch fused)": 8.0})
    ns.update({"a.addcmul_(b, c)": 3.5, "torch.add(a, b, out=c)": 3.0})
    chain, schedule_free = memory_streams.floors({k: v * n * 1e-9 for k, v in ns.items()}, n)
    assert chain == pytest.approx(9.0 / 8.0)  # Adam's pass and one more read
    assert schedule_free == pytest.approx(3 * 2.5 / 4.0)  # 3 add_ against addcmul_ + a write


def test_a_tiny_run_prints_every_pass(capsys):
    memory_streams.main(["--elements", "4096", "--repeats", "2"])
    out = capsys.readouterr().out
    for name in memory_streams.PASSES:
        assert name in out
    assert "a write in place (add_ - 2 reads)" in out and "the chain's floor is" in out
