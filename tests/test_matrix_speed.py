"""benchmarks/matrix_speed.py: a tiny run prints a row per installed peer, from the mean."""

from __future__ import annotations

import importlib.util

from helpers import benchmark

matrix_speed = benchmark("matrix_speed")


def test_a_tiny_run_reports_the_mean_of_every_peer(capsys):
    matrix_speed.main(
        ["--size", "tiny", "--rows", "Adafactor,Muon", "--repeats", "2", "--chunk", "1"]
        + ["--markdown"]
    )
    out = capsys.readouterr().out
    assert "mean of 2 calls of 1 steps" in out
    rows = [
        line
        for line in out.splitlines()
        if line.startswith("| Adafactor") or line.startswith("| Muon")
    ]
    assert len(rows) == 2  # torch.optim is each row's peer
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        ours, peer, ratio = float(cells[2]), float(cells[3]), float(cells[4].rstrip("x"))
        # the ratio of the two means, printed to 0.1 ms
        assert ours > 0 and peer > 0 and abs(ratio - peer / ours) <= 0.15 * ratio


def test_the_soap_row_times_each_installed_peer(capsys):
    matrix_speed.main(["--size", "tiny", "--rows", "SOAP", "--repeats", "1", "--chunk", "1"])
    out = capsys.readouterr().out
    for peer in ("pytorch_optimizer", "heavyball"):
        assert (peer in out) == (importlib.util.find_spec(peer) is not None)
