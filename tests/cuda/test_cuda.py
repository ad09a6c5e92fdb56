"""optimist on a CUDA device: every registered optimizer, the classic rules against torch.optim,
quantized state, the monitor, Keras-style training and torch.distributed (NCCL, one process).

Skipped without CUDA. ``OPTIMIST_TEST_DEVICE=cpu`` runs the same file on the CPU (the "device"
is then the CPU, so only the device differs between that run and the one on a GPU); any other
value names the device to test (``cuda:1``).

Gradients are set, not back-propagated (drawn on the CPU with a seeded generator and copied),
so two runs differ only in the optimizer's arithmetic. Tolerances, as a fraction of the largest
parameter change of the reference run (``scale``):

* float32, device vs CPU: 1e-4 * scale + 1e-6. The two run different kernels (on CUDA the
  rule's torch ops or torch's foreach kernel; on CPU optimist's C++ engine), whose results
  differ by a few float32 ulps of the parameter per step (~6e-8 each at |p| ~ 1, ~5e-7 after
  the steps here, ~1e-5 of a change of ~0.05): the bound has a 10x margin and still catches a
  wrong term (any error in a rule moves the result by a sizeable part of the change).
* float64: 1e-10 * scale + 1e-13, for the same reason.
* Muon: 5e-2 * scale. Its Newton-Schulz iteration runs in bfloat16 (torch's default), whose
  matmuls round differently on the CPU and in cuBLAS (one bfloat16 ulp is 0.4%).
* SOAP float32: 1e-3 * scale (eigh in LAPACK vs cuSOLVER: eigenvectors to ~1e-6 / gap).
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch

import optimist
import optimist.optim as oo
from engine.table import ELEMENTWISE, EVERY, Row, ids, make_params
from helpers import device_under_test, requires_device
from optimist import transforms as T
from optimist.optim.eager import torch_fused_available

DEVICE = device_under_test()
pytestmark = requires_device
DEV = DEVICE or torch.device("cpu")
ON_CPU = DEV.type == "cpu"
CPU = torch.device("cpu")

# a small model's shapes: a 4x3 weight (SOAP's factors from one gradient have at most a 1-dim
# null space, whose eigenvector is unique up to a sign, to which SOAP is invariant), biases,
# a scalar
SHAPES = [(4, 3), (3,), (7,), ()]
BIG = [(64, 80), (300,), (7,)]  # int8 state needs >= 4096 elements in a tensor
STEPS = 5
TOL = {torch.float32: (1e-4, 1e-6), torch.float64: (1e-10, 1e-13)}
LOOSE = {"muon": (5e-2, 5e-2), "soap": (1e-3, 1e-10)}  # (float32, float64) relative

# one row per optimizer (its first example), plus a chain
ONE_PER_OPTIMIZER = list({row.entry.factory: row for row in reversed(EVERY)}.values())[::-1]
CHAIN = optimist.chain(
    T.clip_by_global_norm(0.5),
    T.scale_by_adam(),
    T.add_decayed_weights(0.1, mask=T.no_bias_or_norm),
)


def _chain_row() -> Row:
    from engine.table import Entry

    return Row(Entry("chain", CHAIN), {"lr": 0.01}, "chain")


ROWS = [*ONE_PER_OPTIMIZER, _chain_row()]


def _takes_foreach(row: Row) -> bool:
    import inspect

    params = inspect.signature(row.entry.factory).parameters.values()
    return "foreach" in row.entry.parameters or any(p.kind == p.VAR_KEYWORD for p in params)


DISPATCH = [(row, {}) for row in ROWS] + [
    (row, {"foreach": False}) for row in ROWS if _takes_foreach(row)
]


def _dispatch_id(case) -> str:
    row, extra = case
    return row.id + ("-foreach_false" if extra else "-default")


# --- helpers -------------------------------------------------------------------------------------


def grads(step: int, shapes=SHAPES, dtype=torch.float32, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


def params_on(device, dtype=torch.float32, shapes=SHAPES) -> list[torch.Tensor]:
    return [p.detach().to(device).requires_grad_() for p in make_params(dtype, shapes=shapes)]


def steps(opt, params, first: int, count: int, shapes=SHAPES) -> None:
    for step in range(first, first + count):
        for p, g in zip(params, grads(step, shapes), strict=True):
            p.grad = g.to(device=p.device, dtype=p.dtype)
        opt.step()


def run(build, device, dtype=torch.float32, shapes=SHAPES, count=STEPS, **extra):
    params = params_on(device, dtype, shapes)
    opt = build(params, **extra)
    steps(opt, params, 0, count, shapes)
    return params, opt


def host(params) -> list[torch.Tensor]:
    return [p.detach().to(CPU, copy=True) for p in params]


def assert_runs_close(got, want, start, rel: float, floor: float) -> None:
    """``got`` within ``rel`` of the largest change of ``want`` from ``start`` (+ ``floor``)."""
    got, want, start = host(got), host(want), host(start)
    scale = max(float((w - s).abs().max()) for w, s in zip(want, start, strict=True))
    assert scale > 0, "the reference run did not move"
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=rel * scale + floor)


def assert_bitwise(got, want) -> None:
    for g, w in zip(host(got), host(want), strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def tolerance(name: str, dtype: torch.dtype) -> tuple[float, float]:
    rel, floor = TOL[dtype]
    if name in LOOSE:
        rel = max(rel, LOOSE[name][dtype == torch.float64])
    return rel, floor


# --- every optimizer: the device equals the CPU --------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", DISPATCH, ids=_dispatch_id)
def test_device_equals_cpu(case, dtype):
    row, extra = case
    start = host(params_on(CPU, dtype))
    on_device, _ = run(row.build, DEV, dtype, **extra)
    on_cpu, _ = run(row.build, CPU, dtype, **extra)
    assert all(p.device.type == DEV.type for p in on_device)
    assert_runs_close(on_device, on_cpu, start, *tolerance(row.entry.name, dtype))


# --- classic rules against torch.optim on the same device ----------------------------------------

CLASSIC = [
    row
    for row in ELEMENTWISE
    if row.entry.torch_twin is not None and row.entry.cls.rule.torch_foreach is not None
]


def _twin(row: Row, params, **extra):
    return row.entry.torch_twin(params, **{**row.entry.defaults, **row.kwargs, **extra})


def _state(opt, params) -> list[torch.Tensor]:
    return [
        v for p in params for _, v in sorted(opt.state[p].items()) if isinstance(v, torch.Tensor)
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("row", CLASSIC, ids=ids)
def test_classic_rules_equal_torch_optim(row, dtype):
    """foreach=True runs torch's own multi-tensor kernel (``run_torch_foreach``): bitwise equal
    to ``torch.optim.X(foreach=True)``, parameters and state; so is the default dispatch on an
    accelerator, which takes the same path. foreach=False (the rule's per-tensor torch ops) vs
    torch's single-tensor loop: other kernels, so the float tolerance above."""
    ours_fe, opt_fe = run(row.build, DEV, dtype, foreach=True)
    theirs_fe, twin_fe = run(lambda p, **k: _twin(row, p, **k), DEV, dtype, foreach=True)
    assert_bitwise(ours_fe, theirs_fe)
    assert_bitwise(_state(opt_fe, ours_fe), _state(twin_fe, theirs_fe))

    ours, opt = run(row.build, DEV, dtype)
    if ON_CPU:  # the default is optimist's C++ engine there
        assert_runs_close(ours, theirs_fe, host(params_on(CPU, dtype)), *TOL[dtype])
    else:
        assert_bitwise(ours, theirs_fe)
        assert_bitwise(_state(opt, ours), _state(twin_fe, theirs_fe))

    start = host(params_on(CPU, dtype))
    ours_1, _ = run(row.build, DEV, dtype, foreach=False)
    theirs_1, _ = run(lambda p, **k: _twin(row, p, **k), DEV, dtype, foreach=False)
    assert_runs_close(ours_1, theirs_1, start, *TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("row", CLASSIC, ids=ids)
def test_fused_true_on_the_device(row, dtype):
    """``fused=True`` on an accelerator runs torch's fused kernel where torch has one for the
    rule (Adam, AdamW, SGD, Adagrad): bitwise ``torch.optim.X(fused=True)``, state included;
    the other rules refuse it with a one-line error. (On the CPU fused=True is optimist's C++
    engine: the float tolerance.)"""
    rule = row.entry.cls.rule
    if not ON_CPU and not torch_fused_available(rule, DEV):
        params = params_on(DEV, dtype)
        opt = row.build(params, fused=True)
        for p, g in zip(params, grads(0), strict=True):
            p.grad = g.to(device=DEV, dtype=dtype)
        before = host(params)
        with pytest.raises(RuntimeError, match="has no fused kernel on"):
            opt.step()
        assert_bitwise(params, before)  # nothing changed
        return
    if not torch_fused_available(rule, DEV):
        pytest.skip(f"torch has no fused {row.entry.cls.__name__}")
    ours, opt = run(row.build, DEV, dtype, fused=True)
    theirs, twin = run(lambda p, **k: _twin(row, p, **k), DEV, dtype, fused=True)
    if ON_CPU:
        assert_runs_close(ours, theirs, host(params_on(CPU, dtype)), *TOL[dtype])
        return
    assert_bitwise(ours, theirs)
    assert_bitwise(_state(opt, ours), _state(twin, theirs))
    assert all(s.device.type == DEV.type for s in _state(opt, ours))  # step too, as torch's


# --- quantized state on the device ---------------------------------------------------------------

ONE_PER_RULE = list({row.entry.factory: row for row in reversed(ELEMENTWISE)}.values())[::-1]
# bound on ||run - float32 run|| / ||float32 run's change|| after 6 steps; measured on the CPU
# (OPTIMIST_TEST_DEVICE=cpu): bfloat16 <= 0.0037, int8 <= 0.023, except the sign-based rules
# (a flipped sign moves an element by 2 lr): Lion and SophiaG 0.023 / 0.076
CODEC_ERROR = {"bfloat16": 0.01, "int8": 0.05}
SIGN_RULES = {"lion": 3.0, "sophiag": 3.0}  # factor on the bounds
# Schedule-Free's state z is the iterate itself: quantizing it moves the weights by the codec's
# step (measured 0.32 / 2.0), so it is compared to the same state_dtype on the CPU instead; FTRL
# recomputes the weights from its state (z, n) every step (int8: 0.051 from float32 state)
ITERATE_IN_STATE = {"schedule_free_adamw", "schedule_free_sgd", "ftrl"}


def _slot_tensors(opt, p) -> dict[str, torch.Tensor]:
    """The rule's element-wise state slots of ``p`` (``Rule.slots``)."""
    keys = {slot.key for slot in type(opt).rule.slots}
    return {k: v for k, v in opt.state[p].items() if k in keys}


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
@pytest.mark.parametrize("row", ONE_PER_RULE, ids=ids)
def test_state_dtype_on_the_device(row, state_dtype):
    """State stored on the device in ``state_dtype``; a state_dict moved device -> CPU file ->
    device continues bit for bit; the run stays within the codec's error of float32 state
    (relative L2 distance of the parameter changes; bfloat16's 8 mantissa bits and int8's 4
    give measured distances well under these bounds)."""
    params, opt = run(row.build, DEV, shapes=BIG, count=4, state_dtype=state_dtype)
    big = params[0]
    slots = _slot_tensors(opt, big)
    assert slots, "no element-wise state"
    want = torch.bfloat16 if state_dtype == "bfloat16" else torch.int8
    for key, value in slots.items():
        assert value.dtype == want, key
        assert value.device.type == DEV.type, key
        if state_dtype == "int8":
            assert opt.state[big][key + "_absmax"].dtype == torch.float32

    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    on_host = torch.load(buffer, map_location="cpu", weights_only=True)
    twin = [p.detach().clone().requires_grad_() for p in params]
    resumed = row.build(twin, state_dtype=state_dtype)
    resumed.load_state_dict(on_host)
    for key, value in _slot_tensors(resumed, twin[0]).items():
        assert value.dtype == want and value.device.type == DEV.type, key
    steps(opt, params, 4, 2, BIG)
    steps(resumed, twin, 4, 2, BIG)
    assert_bitwise(twin, params)

    name = row.entry.name
    if name in ITERATE_IN_STATE:
        full, _ = run(row.build, CPU, shapes=BIG, count=6, state_dtype=state_dtype)
        bound = CODEC_ERROR[state_dtype]
    else:
        full, _ = run(row.build, DEV, shapes=BIG, count=6)
        bound = CODEC_ERROR[state_dtype] * SIGN_RULES.get(name, 1.0)
    start = host(params_on(CPU, shapes=BIG))
    moved = torch.cat([(p - s).flatten() for p, s in zip(host(full), start, strict=True)])
    ours = torch.cat([(p - s).flatten() for p, s in zip(host(params), start, strict=True)])
    distance = float((ours - moved).norm() / moved.norm())
    assert distance < bound, distance


@pytest.mark.parametrize("row", ONE_PER_RULE, ids=ids)
def test_bfloat16_parameters_on_the_device(row):
    """bfloat16 parameters close to the float32 run (the bound of tests/engine/test_rules.py)."""
    ref, _ = run(row.build, DEV, torch.float32)
    low, _ = run(row.build, DEV, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in low)
    for a, b in zip(host(low), host(ref), strict=True):
        torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2)


# --- the prologue and epilogue on the device ------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_maximize_on_the_device_equals_torch(dtype):
    """maximize=True against torch's, and bitwise the same optimizer descending on -g (both
    negate the gradient first and then do the same arithmetic)."""
    start = host(params_on(CPU, dtype))
    ours, _ = run(lambda p, **k: oo.Adam(p, lr=0.01, maximize=True, **k), DEV, dtype)
    theirs, _ = run(lambda p: torch.optim.Adam(p, lr=0.01, maximize=True), DEV, dtype)
    assert_runs_close(ours, theirs, start, *TOL[dtype])
    params = params_on(DEV, dtype)
    descending = oo.Adam(params, lr=0.01)
    for step in range(STEPS):
        for p, g in zip(params, grads(step), strict=True):
            p.grad = -g.to(device=DEV, dtype=dtype)
        descending.step()
    assert_bitwise(ours, params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_clip_by_global_norm_on_the_device_equals_clip_grad_norm(dtype):
    """Pass 0 on the device: ``chain(clip_by_global_norm(c), scale_by_adam())`` equals torch's
    ``clip_grad_norm_`` followed by Adam (max_norm / (norm + 1e-6), as torch)."""
    start = host(params_on(CPU, dtype))
    ours, _ = run(optimist.chain(T.clip_by_global_norm(0.5), T.scale_by_adam()), DEV, dtype)
    params = params_on(DEV, dtype)
    adam = torch.optim.Adam(params, lr=1e-3)
    norms = []
    for step in range(STEPS):
        for p, g in zip(params, grads(step), strict=True):
            p.grad = g.to(device=DEV, dtype=dtype)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 0.5)))
        adam.step()
    assert min(norms) > 0.5  # the clip acted on every step
    assert_runs_close(ours, params, start, *TOL[dtype])


def test_weight_decay_mask_on_the_device_equals_two_torch_groups():
    """``add_decayed_weights(wd, mask=no_bias_or_norm)`` after the rule: AdamW's decay for the
    matrices only, i.e. torch's AdamW with weight_decay=wd on them and 0 on the rest."""
    wd = 0.1
    start = host(params_on(CPU))
    chain = optimist.chain(T.scale_by_adam(), T.add_decayed_weights(wd, mask=T.no_bias_or_norm))
    ours, _ = run(lambda p: chain(p, lr=0.01), DEV)

    def torch_groups(p):
        return torch.optim.AdamW(
            [
                {"params": [q for q in p if q.ndim >= 2], "weight_decay": wd},
                {"params": [q for q in p if q.ndim < 2], "weight_decay": 0.0},
            ],
            lr=0.01,
        )

    theirs, _ = run(torch_groups, DEV)
    assert_runs_close(ours, theirs, start, *TOL[torch.float32])
    undecayed, _ = run(lambda p: oo.Adam(p, lr=0.01), DEV)
    got, plain = host(ours), host(undecayed)
    assert not torch.equal(got[0], plain[0])  # the matrix decayed
    assert all(torch.equal(a, b) for a, b in zip(got[1:], plain[1:], strict=True))  # not these


@pytest.mark.parametrize("name", ["ScheduleFreeAdamW", "ScheduleFreeSGD"])
def test_schedule_free_train_eval_on_the_device(name):
    cls = getattr(oo, name)
    build = lambda p: cls(p, lr=0.01, warmup_steps=2)  # noqa: E731
    on_device, opt = run(build, DEV)
    on_cpu, ref = run(build, CPU)
    start = host(params_on(CPU))
    assert_runs_close(on_device, on_cpu, start, *TOL[torch.float32])
    trained = host(on_device)
    opt.eval()
    ref.eval()
    assert all(p.device.type == DEV.type for p in on_device)
    assert not all(torch.equal(a, b) for a, b in zip(host(on_device), trained, strict=True))
    assert_runs_close(on_device, on_cpu, start, *TOL[torch.float32])
    opt.train()
    for a, b in zip(host(on_device), trained, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# --- the monitor on a device model ----------------------------------------------------------------


@contextmanager
def sync_counter():
    """A function giving the number of host syncs CUDA reported so far (torch's sync debug mode
    "warn"); on the CPU there is nothing to wait for and it stays 0."""
    if DEV.type != "cuda":
        yield lambda: 0
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield lambda: sum("synchroniz" in str(w.message) for w in caught)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def _train_steps(model, opt, data, m=None, count=40) -> list[int]:
    """``count`` steps; the steps (1-based) during which a host sync happened."""
    x, y = data
    synced = []
    with sync_counter() as syncs:
        for step in range(1, count + 1):
            before = syncs()
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            if m is not None:
                m.log_loss(loss)
            if syncs() > before:
                synced.append(step)
    return synced


def test_monitor_log_loss_reads_cuda_losses_once_per_interval():
    """``log_loss`` keeps a CUDA loss as a tensor and reads a whole interval in one transfer:
    with ``every=10`` only the sampled steps (signal readings, loss readings: about one step in
    ten) sync with the host, the others run without any sync."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    model = model.to(DEV)
    data = (torch.randn(32, 8, device=DEV), torch.randn(32, 1, device=DEV))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    _train_steps(model, opt, data, count=3)  # warm-up (CUDA init, cuBLAS handles)
    assert _train_steps(model, opt, data) == []  # the bare loop never syncs
    with optimist.monitor.watch(model, opt, every=10) as m:
        synced = _train_steps(model, opt, data, m)
        assert m.loss_every == 10
    losses = [r["loss"] for r in m.records if "loss" in r]
    assert 4 <= len(losses) <= 6 and all(np.isfinite(losses))
    assert len(synced) <= 10, f"host syncs in steps {synced} of 40"


# --- Keras-style training on the device ----------------------------------------------------------


def _xy(n=64):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 8, generator=gen)
    return x.numpy(), (x[:, :1] * 2 - x[:, 1:2]).numpy()


def _sequential():
    from optimist.layers import Dense, Input
    from optimist.models import Sequential

    torch.manual_seed(0)
    return Sequential([Input((8,)), Dense(16, activation="tanh"), Dense(1)])


def test_sequential_fit_on_the_device_follows_its_parameters():
    """``model.to(device)`` (the model built, e.g. by an ``Input``): fit moves each batch to the
    parameters' device; the result matches the same fit on the CPU."""
    x, y = _xy()
    results = []
    for device in (DEV, CPU):
        model = _sequential().to(device)
        model.compile(optimizer="adam", loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        assert all(p.device.type == device.type for p in model.parameters())
        assert history.history["loss"][-1] < history.history["loss"][0]
        results.append((history.history["loss"], host(model.parameters())))
    (loss_dev, w_dev), (loss_cpu, w_cpu) = results
    np.testing.assert_allclose(loss_dev, loss_cpu, rtol=1e-4)
    for a, b in zip(w_dev, w_cpu, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    pred = _sequential().to(DEV).predict(x[:4], verbose=0)
    assert np.asarray(pred).shape == (4, 1)


def test_fit_a_torch_module_on_the_device():
    x, y = _xy()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    net = net.to(DEV)
    history = optimist.fit(net, x, y, optimizer="adamw", loss="mse", epochs=3, verbose=0)
    assert all(p.device.type == DEV.type for p in net.parameters())
    assert history.history["loss"][-1] < history.history["loss"][0]


# --- torch.distributed: DDP, ZeRO, FSDP2 in one process ------------------------------------------


@pytest.fixture(scope="module")
def process_group():
    """A world of one: NCCL on CUDA (it refuses two ranks on one GPU), gloo on the CPU."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch without distributed")
    owned = not dist.is_initialized()
    if owned:
        if DEV.type == "cuda":
            torch.cuda.set_device(DEV.index or 0)
        backend = "nccl" if DEV.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.get_backend()
    finally:
        if owned:
            dist.destroy_process_group()


DIST_OPTIMIZERS = {
    "adam": lambda p: oo.Adam(p, lr=0.01),
    "adamw_int8": lambda p: oo.AdamW(p, lr=0.01, weight_decay=0.1, state_dtype="int8"),
    "sgd_momentum": lambda p: oo.SGD(p, lr=0.05, momentum=0.9),
    "lion": lambda p: oo.Lion(p, lr=0.01),
    "muon": lambda p: oo.Muon(p, lr=0.02, adamw_lr=0.01),
    "clipped": lambda p: CHAIN(p, lr=0.01),
}


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)  # 64 x 64 = 4096 weights: int8 state
    layers = [torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64)]
    return torch.nn.Sequential(*layers).double().to(DEV)


def _train(model, opt) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64).to(DEV)
    y = torch.randint(0, 64, (8,), generator=gen).to(DEV)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    out = []
    for p in model.parameters():
        p = p.full_tensor() if hasattr(p, "full_tensor") else p
        out.append(p.detach().to(CPU, copy=True))
    return out


@pytest.mark.parametrize("kind", ["ddp", "zero", "fsdp"])
@pytest.mark.parametrize("name", list(DIST_OPTIMIZERS))
def test_distributed_world_of_one_equals_plain(process_group, kind, name):
    """DDP, ZeroRedundancyOptimizer and FSDP2 ``fully_shard`` (DTensor parameters on the device,
    the engine on their local shards) give the plain model's parameters (float64, 1e-12)."""
    make = DIST_OPTIMIZERS[name]
    plain = _mlp()
    want = _train(plain, make(list(plain.parameters())))
    model = _mlp()
    if kind == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)
        opt = make(list(model.parameters()))
    elif kind == "zero":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation inside torch.distributed.optim
            from torch.distributed.optim import ZeroRedundancyOptimizer
        model = torch.nn.parallel.DistributedDataParallel(model)
        params = list(model.parameters())
        if name == "muon":  # ZeRO keeps the groups it is given: Muon's two, made here
            params = [
                {"params": [p for p in params if p.ndim >= 2], "use_muon": True},
                {"params": [p for p in params if p.ndim < 2], "use_muon": False},
            ]
        opt = ZeroRedundancyOptimizer(params, optimizer_class=make)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        fully_shard(model, mesh=init_device_mesh(DEV.type, (1,)))
        assert all(hasattr(p, "full_tensor") for p in model.parameters())
        opt = make(list(model.parameters()))
    got = _train(model, opt)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    if kind == "fsdp":  # the state is sharded like its parameter, on the device
        states = [v for s in opt.state.values() for k, v in s.items() if k != "step"]
        tensors = [v for v in states if isinstance(v, torch.Tensor) and v.ndim > 0]
        assert tensors and all(v.device.type == DEV.type for v in tensors)
