"""benchmarks/step_speed.py: its dispatch column, its table of rules and peers, and a tiny run."""

from __future__ import annotations

import pytest
import torch

import optimist.optim as oo
from helpers import benchmark
from optimist.optim import engine

step_speed = benchmark("step_speed")


def _params(*shapes):
    return [torch.nn.Parameter(torch.ones(s)) for s in shapes]


def test_dispatch_reports_the_path_the_optimizer_takes():
    if engine.available():
        assert step_speed.dispatch(oo.Adam(_params(4))) == "C++ engine"
    assert step_speed.dispatch(oo.Adam(_params(4), foreach=True)) == "torch foreach"
    assert step_speed.dispatch(oo.Adam(_params(4), foreach=False)) == "eager per tensor"
    assert step_speed.dispatch(oo.Lion(_params(4), foreach=True)) == "eager bucketed"
    assert step_speed.dispatch(oo.Adafactor(_params(4))) == "torch ops batched"
    assert step_speed.dispatch(oo.Adafactor(_params(4), foreach=False)) == "eager per tensor"
    if engine.available():
        assert step_speed.dispatch(oo.LAMB(_params(4))) == "C++ engine"
    assert step_speed.dispatch(oo.LARS(_params(4), foreach=True)) == "torch ops batched"
    via = step_speed.dispatch(oo.Muon(_params((3, 4), 4)))
    assert via.startswith("Newton-Schulz in torch ops + ")


@pytest.mark.parametrize("name", sorted(step_speed.ROWS))
def test_every_row_and_installed_peer_steps_the_same_shapes(name):
    row = step_speed.ROWS[name]
    if not hasattr(oo, row.optimist):
        pytest.skip(f"optimist.optim has no {row.optimist} here")
    shapes = [(8, 4), (4,)] if not row.matrices_only else [(8, 4)]
    fns, via, compiled = step_speed.make_contenders(row, shapes, compiled=False)
    assert "optimist" in fns and via and compiled == {}
    installed = [k for k, f in row.peers.items() if f is not None and k not in step_speed.COMPILED]
    assert len(fns) - ("reattach" in fns) == 1 + len(installed)  # no installed peer skipped
    times = step_speed.time_interleaved(fns, repeats=1, warmup=1)
    assert "reattach" not in times and all(t >= 0 for t in times.values())


def test_a_peer_that_frees_gradients_gets_them_back_and_pays_only_its_step():
    params = _params(3)
    grad = torch.ones(3)
    params[0].grad = grad
    seen = []

    def freeing_step():
        seen.append(params[0].grad is grad)
        params[0].grad = None

    step = step_speed._reattaching(freeing_step, params, [grad])
    step()
    step()
    assert seen == [True, True]


def test_a_compiled_peer_runs_its_first_steps_apart_and_the_table_reports_them():
    compiled_label = step_speed.COMPILED[0]
    made = []

    def stand_in(params):  # plain SGD in place of heavyball: its first steps are exact
        made.append(params)
        return torch.optim.SGD(params, lr=0.5)

    row = step_speed.Row("SGD", {"lr": 0.5}, 12, {compiled_label: stand_in})
    fns, _, compile_s = step_speed.make_contenders(row, [(4,)], compiled=False)
    assert compiled_label not in fns and compile_s == {} and made == []  # only with --compile

    fns, _, compile_s = step_speed.make_contenders(row, [(4,)], compiled=True)
    (p,) = made[0]
    start = step_speed.make_params([(4,)])[0]
    moved = start.detach() - step_speed.COMPILE_STEPS * 0.5 * start.grad
    torch.testing.assert_close(p.detach(), moved)  # the first steps ran before the timing
    took = compile_s[compiled_label]
    assert set(took) == {"wall", "cpu", "slowest"}
    assert 0 <= took["slowest"] <= took["wall"]

    times = {"optimist": 2e-3, compiled_label: 5e-3, "roofline": 1e-3}
    result = {"optimizer": "sgd", "size": "4", "threads": 1, "times": times, "via": "x"}
    result.update(compile_s={compiled_label: {"wall": 91.0, "cpu": 80.4, "slowest": 90.0}})
    result.update(ntensors=1, nparams=4)
    head, rows = step_speed.big_table([result], roof_n=1000)
    cell = rows[0][head.index("heavyball compiled")]
    assert cell == "compiled 5.0 ms (2.50×; compile 91 s wall / 80 s CPU)"
    assert rows[0][head.index("fastest eager peer")] == "—"  # a compiled peer is no eager peer


@pytest.mark.parametrize("clock", ["wall", "thread"])
def test_a_small_run_prints_both_tables_with_verdicts(capsys, clock):
    code = step_speed.main(
        ["--sizes", "3K,tiny", "--optimizers", "lion", "--repeats", "1", "--markdown"]
        + ["--roofline-elements", "65536", "--clock", clock]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"{clock} clock" in out
    assert "| lion |" in out and "pytorch_optimizer" in out
    assert out.count("met") >= 2  # a verdict in each table
    assert "1000×100" in out


def test_the_thread_clock_refuses_several_threads(capsys):
    with pytest.raises(SystemExit):
        step_speed.main(["--sizes", "tiny", "--optimizers", "lion", "--clock", "thread"]
                        + ["--threads", "1,2"])  # fmt: skip
    assert "--threads 1" in capsys.readouterr().err


def test_the_thread_clock_does_not_count_time_spent_waiting():
    import time

    times = step_speed.time_interleaved(
        {"sleep": lambda: time.sleep(0.05)}, repeats=1, warmup=0, clock=step_speed.CLOCKS["thread"]
    )
    assert times["sleep"] < 0.025


def test_engine_speed_imports_the_classic_rows_from_here():
    module = benchmark("engine_speed")  # imports CLASSIC, ROWS, make_params, ... from step_speed
    assert module.CLASSIC == step_speed.CLASSIC
    for name in module.CLASSIC:
        row = module.ROWS[name]
        assert hasattr(oo, row.optimist) and isinstance(row.kwargs, dict)


@pytest.mark.skipif(not engine.available(), reason="needs the C++ engine")
def test_step_overhead_times_the_same_engine_calls_the_step_makes():
    module = benchmark("step_overhead")
    t = module.measure("sgd", "20K", repeats=2)
    assert set(t) == {"step()", "plan + run", "gather"}
    assert all(0 < v < 1e3 for v in t.values())
    assert engine.load is not None and not isinstance(engine.load(), module._Recorder)
    with pytest.raises(SystemExit, match="engine's plan and run"):
        module.measure("adafactor", "20K", repeats=1)  # matrix rule: no engine plan


def test_the_roofline_share_pairs_each_round_with_its_own_roofline():
    # per round, the rule moves 120 bytes against add_'s 120: its share is roof time / its time
    # (0.5, 0.25, 0.5: the median 0.5); without the rounds, the two minima are paired (0.25)
    result = {"nparams": 10, "times": {"optimist": 2.0, "roofline": 0.5}}
    assert step_speed.roofline_share(result, 12, 10) == pytest.approx(0.25)  # no rounds: minima
    result["roof_rounds"] = [[4.0, 2.0, 3.0], [2.0, 0.5, 1.5]]
    assert step_speed.roofline_share(result, 12, 10) == pytest.approx(0.5)


def test_time_interleaved_records_every_round_when_asked():
    rounds: dict[str, list[float]] = {}
    calls = []
    times = step_speed.time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=3,
        warmup=1,
        rounds=rounds,
    )
    assert calls == ["a", "b"] * 4
    assert set(rounds) == {"a", "b"} and all(len(v) == 3 for v in rounds.values())
    assert times["a"] == min(rounds["a"]) and times["b"] == min(rounds["b"])
