"""watch(): signals, the unchanged trajectory, sharpness, fit's Monitor callback, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import optimist
from optimist.monitor import Monitor, MonitorWarning, watch


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _data(n: int = 64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train(net, opt, steps, m=None):
    x, y = _data()
    for i in range(steps):
        xb, yb = x[(i * 16) % 64 :][:16], y[(i * 16) % 64 :][:16]
        loss = nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if m is not None:
            m.log_loss(loss)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: optimist.optim.Adam(p, lr=1e-2),
        lambda p: optimist.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: optimist.optim.RMSprop(p, lr=1e-2),
        lambda p: torch.optim.Adagrad(p, lr=0.1),
    ],
    ids=["adam", "sgd-nesterov", "rmsprop", "torch-adagrad"],
)
def test_monitor_does_not_change_the_trajectory(make):
    plain = _net()
    opt = make(plain.parameters())
    _train(plain, opt, 25)
    watched = _net()
    opt2 = make(watched.parameters())
    with watch(watched, opt2, every=1) as m:  # every step sampled: the most intrusive setting
        _train(watched, opt2, 25, m)
    for a, b in zip(plain.parameters(), watched.parameters(), strict=True):
        assert torch.equal(a, b)
    for sa, sb in zip(opt.state.values(), opt2.state.values(), strict=True):
        for k in sa:
            if isinstance(sa[k], torch.Tensor):
                assert torch.equal(sa[k], sb[k]), k
    assert len([r for r in m.records if "grad_norm" in r]) == 25


def test_a_one_tensor_model_keeps_its_trajectory_too():
    """The weights' copy of a sampled step is a copy even for a single tensor (not a view that
    the update-ratio reading would then overwrite)."""
    runs = []
    for monitored in (False, True):
        w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        opt = torch.optim.SGD([w], lr=0.05)
        with watch(None, opt, every=1) as m:
            if not monitored:
                m.close()
            for _ in range(5):
                loss = (w * w).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                m.log_loss(loss)
        runs.append(w.detach().clone())
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[1], torch.tensor([1.0, -2.0], dtype=torch.float64) * 0.9**5)
    ratios = [r["update_ratio/param0"] for r in m.records if "grad_norm" in r]
    assert ratios == pytest.approx([0.1] * 5)  # SGD on |w|^2: each step moves w by 0.1 w


def test_unsampled_steps_leave_only_the_post_step_hook():
    net = _net()
    opt = optimist.optim.Adam(net.parameters(), lr=1e-3)
    with watch(net, opt, every=4) as m:
        _train(net, opt, 2, m)  # step 0 sampled; steps 1-3 not
        assert len(opt._optimizer_step_pre_hooks) == 0
        assert len(opt._optimizer_step_post_hooks) == 1
        assert not net[1]._forward_hooks
        _train(net, opt, 2, m)  # the coming step 4 is sampled: armed again
        assert len(opt._optimizer_step_pre_hooks) == 1 and net[1]._forward_hooks
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert not net[1]._forward_hooks


def _reporting_loop(net, opt, m, steps, *, before=False, every_other=False, accumulate=1):
    """A loop that reports each step's loss before or after ``step()`` (or every other step);
    with ``accumulate`` > 1, several micro-batches (each reported) per optimizer step."""
    x, y = _data()
    hooks: list[int] = []  # the optimizer's post-step hooks during each step
    for i in range(steps):
        for j in range(accumulate):
            k = i * accumulate + j
            xb, yb = x[(k * 16) % 64 :][:16], y[(k * 16) % 64 :][:16]
            loss = nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            if before or accumulate > 1:
                m.log_loss(loss)
        hooks.append(len(opt._optimizer_step_post_hooks))
        opt.step()
        opt.zero_grad()
        if not before and accumulate == 1 and not (every_other and i % 2):
            m.log_loss(loss)
    return hooks


@pytest.mark.parametrize(
    "kind",
    [
        {"before": False},
        {"before": True},
        {"every_other": True},
        {"accumulate": 2},
    ],
    ids=["report-after-step", "report-before-step", "every-other-step", "accumulation"],
)
def test_loss_reports_count_the_steps_so_the_post_hook_comes_off(monkeypatch, kind):
    """One loss report per step parks the post-step hook between samples (no hook at all on most
    steps) and changes nothing: the same records, at the same steps, as the hook's own count.
    Reports before the step, or not one per step, never park it."""
    import optimist.monitor.signals as signals

    runs = []
    for park_after in (10**9, signals.PARK_AFTER):  # the hook counting alone, then parking
        monkeypatch.setattr(signals, "PARK_AFTER", park_after)
        net = _net()
        opt = optimist.optim.Adam(net.parameters(), lr=1e-2)
        with watch(net, opt, every=9) as m:
            hooks = _reporting_loop(net, opt, m, 40, **kind)
            assert m.step == 40
        runs.append((m.records, hooks, [p.detach().clone() for p in net.parameters()]))
    (records, hooks, params), (parked_records, parked_hooks, parked_params) = runs
    assert parked_records == records
    assert [r["step"] for r in records if "grad_norm" in r] == [0, 9, 18, 27, 36]
    assert all(torch.equal(a, b) for a, b in zip(params, parked_params, strict=True))
    assert hooks == [1] * 40
    if kind == {"before": False}:
        # on from the step before each sample to PARK_AFTER steps after it, off in between
        assert parked_hooks.count(0) >= 40 // 2
        for sample in (9, 18, 27, 36):
            assert parked_hooks[sample - 1] == parked_hooks[sample] == 1
    else:
        assert parked_hooks == [1] * 40


def test_signals_of_a_sampled_step():
    net = _net()
    opt = optimist.optim.Adam(net.parameters(), lr=1e-3)
    with watch(net, opt, every=5, full=True) as m:
        _train(net, opt, 11, m)
    signal_steps = [r["step"] for r in m.records if "grad_norm" in r]
    assert signal_steps == [0, 5, 10]
    r = next(r for r in m.records if "grad_norm" in r)
    # the global norm is the norm of the per-layer norms
    assert r["grad_norm"] == pytest.approx(math.hypot(r["grad_norm/0"], r["grad_norm/2"]))
    assert r["nonfinite"] == 0.0
    # Adam's first step moves every entry by ~lr: the update ratio is ~lr * sqrt(n) / ||w||
    w0 = _net()[0].requires_grad_(False)
    n, norm = w0.weight.numel() + w0.bias.numel(), math.hypot(w0.weight.norm(), w0.bias.norm())
    assert r["update_ratio/0"] == pytest.approx(1e-3 * math.sqrt(n) / norm, rel=0.05)
    assert 0.0 <= r["dead/1"] <= 1.0
    assert r["v_max"] >= r["v_min"] >= 0.0 and r["momentum_norm"] > 0
    assert r["eff_lr/0"] > 0
    assert m.step == 11
    losses = [r for r in m.records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 6, 11]  # the first loss alone, then means of 5


def test_light_mode_reads_only_what_the_verdicts_need(tmp_path):
    """Without a log/CSV/TensorBoard output the optimizer-state signals are left out; the
    signals the verdicts read are the same numbers as in the full mode."""
    runs = {}
    for mode, kwargs in {
        "light": {},
        "full": {"full": True},
        "logged": {"log": tmp_path / "m.jsonl"},
    }.items():
        net = _net()
        opt = optimist.optim.Adam(net.parameters(), lr=1e-2)
        with watch(net, opt, every=5, **kwargs) as m:
            _train(net, opt, 11, m)
        runs[mode] = [r for r in m.records if "grad_norm" in r]
    state = {"momentum_norm", "v_min", "v_max", "eff_lr/0", "eff_lr/2"}
    light, full = runs["light"], runs["full"]
    assert not state & set().union(*light) and state <= set(full[0]) <= set(runs["logged"][0])
    assert len(light) == len(full) == 3
    for a, b in zip(light, full, strict=True):
        assert {"grad_norm/0", "update_ratio/2", "dead/1", "nonfinite"} <= set(a)
        assert a == {k: v for k, v in b.items() if k not in state}


def test_auto_interval_widens_while_the_monitor_costs_too_much():
    from optimist.monitor.signals import SignalCollector

    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    steps: list[int] = []
    # budget 0: every reading costs "too much", so the interval doubles after each one but the
    # first (which has no previous reading to be compared with)
    c = SignalCollector(net, opt, lambda r: steps.append(r["step"]), every="auto", budget=0.0)
    _train(net, opt, 160)
    c.close()
    assert steps == [0, 10, 30, 70, 150]  # 10, then 20, 40, 80
    assert c.every == 160
    # a generous budget keeps the interval
    steps.clear()
    c = SignalCollector(net, opt, lambda r: steps.append(r["step"]), every="auto", budget=1e9)
    _train(net, opt, 31)
    c.close()
    assert steps == [0, 10, 20, 30]
    with pytest.raises(ValueError, match="'auto'"):
        SignalCollector(net, opt, print, every="sometimes")


def test_auto_reads_the_loss_every_10_steps_while_the_signals_thin_out():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    with watch(net, opt) as m:  # every="auto"
        m._collector.budget = 0.0  # every signal reading costs "too much"
        m.loss_budget = 1e9  # and no loss reading does
        _train(net, opt, 61, m)
    assert [r["step"] for r in m.records if "grad_norm" in r] == [0, 10, 30]
    assert [r["step"] for r in m.records if "loss" in r] == [1, 11, 21, 31, 41, 51, 61]
    assert m.every == 40 and m.loss_every == 10
    with watch(net, opt, every=4) as m:  # a fixed interval is the loss's too
        _train(net, opt, 9, m)
    assert [r["step"] for r in m.records if "loss" in r] == [1, 5, 9]
    assert m.loss_every == 4


def test_dead_share_counts_units_silent_for_the_whole_batch():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([1.0, -1.0, -1.0, -1.0]))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    with watch(net, opt, every=1) as m:
        net(torch.randn(8, 4)).sum().backward()
        opt.step()
    assert m.records[0]["dead/1"] == 0.75


def test_sharpness_of_a_quadratic():
    w = nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=0.1)
    with watch(None, opt) as m:
        value = m.sharpness(lambda: 0.5 * (w[0] ** 2 + 10 * w[1] ** 2), iters=20)
    assert value == pytest.approx(10.0, rel=1e-3)
    assert m.records[-1]["sharpness"] == value
    assert w.grad is None  # Hessian-vector products do not touch .grad


def test_hooks_come_off_when_the_watch_closes():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with watch(net, opt, every=1) as m:
        _train(net, opt, 2)
    n = len(m.records)
    _train(net, opt, 3)
    assert len(m.records) == n


def test_bad_input_is_a_clear_error(tmp_path):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="every"):
        watch(net, opt, every=0)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        watch(net, "adam")
    with watch(net, opt) as m:
        m.log_loss(1.0)
        m.log_loss(torch.tensor(2.0))  # the CPU fast path
        for bad in (torch.ones(3), torch.ones(0), torch.ones(2, requires_grad=True)):
            with pytest.raises(ValueError, match="scalar loss"):
                m.log_loss(bad)
        assert m._losses == [2.0]  # a rejected loss adds nothing
    with pytest.raises(FileNotFoundError, match="folder"):
        watch(net, opt, log=tmp_path / "missing" / "log.jsonl")
    assert not (tmp_path / "missing").exists()


# ---- fit ----------------------------------------------------------------------------------------
def test_fit_monitors_by_default_and_warns_once_per_verdict():
    x, y = _data(256)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    far_too_large = optimist.optim.SGD(net.parameters(), lr=1e3)
    with pytest.warns(MonitorWarning) as record:
        optimist.fit(
            net,
            x.numpy(),
            y.numpy(),
            optimizer=far_too_large,
            loss="sparse_categorical_crossentropy",
            epochs=3,
            verbose=0,
            check_nan=False,
        )
    messages = [str(w.message) for w in record if issubclass(w.category, MonitorWarning)]
    (ratio,) = [m for m in messages if "update_ratio_high in layer module.0 (step 0)" in m]
    assert "the learning rate is too large for this layer" in ratio
    assert len(messages) == len(set(messages))  # once each


def test_fit_monitor_off_and_own_monitor(tmp_path):
    x, y = _data(128)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MonitorWarning)
        optimist.fit(
            net,
            x.numpy() * 1e4,
            y.numpy(),
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            epochs=1,
            verbose=0,
            check_nan=False,
            monitor=False,
        )
    mon = Monitor(log=tmp_path / "fit.jsonl", warn=False, every=10)
    net2 = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    history = optimist.fit(
        net2,
        x.numpy(),
        y.numpy(),
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        epochs=3,
        batch_size=16,
        verbose=0,
        callbacks=[mon],
        validation_split=0.25,
    )
    assert len(history.history["loss"]) == 3
    assert [v.name for v in mon.verdicts()] == ["healthy"]
    log = optimist.monitor.read_log(tmp_path / "fit.jsonl")
    assert [r["step"] for r in log.records if "val_loss" in r] == [6, 12, 18]
    assert [r["step"] for r in log.records if "grad_norm" in r] == [0, 10]


def test_fit_calls_the_monitor_per_batch_only_while_the_model_is_unbuilt():
    built = optimist.models.Sequential([optimist.layers.Dense(3)])
    built.build((None, 8))
    built.compile(optimizer="sgd", loss="mse")
    mon = Monitor()
    mon.set_model(built)
    assert not hasattr(mon, "on_train_batch_begin")  # fit skips the per-batch call
    unbuilt = optimist.models.Sequential([optimist.layers.Dense(3)])
    unbuilt.compile(optimizer="sgd", loss="mse")
    mon.set_model(unbuilt)
    assert callable(mon.on_train_batch_begin)
    x, y = _data(64)
    # a DataLoader: the model is built, and its optimizer made, on the first batch
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, nn.functional.one_hot(y, 3).float()), batch_size=32
    )
    unbuilt.fit(data, epochs=1, verbose=0, callbacks=[mon])
    assert callable(mon.on_train_batch_begin)
    # attached at the second batch's start: the first batch built the model and its optimizer
    assert mon.watch is not None and mon.watch.step == 1
    assert [v.name for v in mon.verdicts()] == ["healthy"]


def test_fit_is_bit_identical_with_and_without_the_monitor():
    x, y = _data(128)
    params = []
    for monitor in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        optimist.fit(
            net,
            x.numpy(),
            y.numpy(),
            optimizer="adam",
            loss="sparse_categorical_crossentropy",
            epochs=2,
            batch_size=16,
            verbose=0,
            monitor=monitor,
        )
        params.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)
    assert np.isfinite(params[0][0].numpy()).all()


def test_own_time_counts_readings_and_loss_readings():
    import time

    net = _net()
    opt = optimist.optim.Adam(net.parameters(), lr=1e-2)
    start = time.perf_counter()
    with watch(net, opt, every=5) as m:
        _train(net, opt, 3, m)  # readings at step 0 and the first loss: counted
        before = m.own_time
        m.log_loss(1.0, reading=True)  # a loss reading alone adds its time
        assert m.own_time > before > 0
    assert m.own_time < time.perf_counter() - start


def test_own_time_is_cpu_time_so_a_busy_machine_does_not_inflate_it(monkeypatch):
    """The monitor's own time (and the auto interval's budget) is the training thread's CPU time:
    time the thread waits (here a sleep in each reading; on a shared machine, other processes'
    turns) is not counted as the monitor's."""
    import time

    from optimist.monitor.verdicts import Diagnoser

    add = Diagnoser.add

    def slow_add(self, record):
        time.sleep(0.02)
        return add(self, record)

    monkeypatch.setattr(Diagnoser, "add", slow_add)
    net = _net()
    opt = optimist.optim.Adam(net.parameters(), lr=1e-2)
    with watch(net, opt, every=2) as m:
        _train(net, opt, 6, m)  # 3 signal readings, 4 loss readings: 0.14 s of sleep
    assert len(m.records) == 7
    assert 0 < m.own_time < 0.06
