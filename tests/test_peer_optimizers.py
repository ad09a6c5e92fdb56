"""The 2022-2024 optimizers against independent implementations that install here.

ADOPT against the authors' package (``torch-adopt``) and Optax; AdEMAMix and Adan against Optax
(JAX on CPU, float64); Schedule-Free AdamW and SGD against the authors' ``schedulefree`` and
Optax; Adafactor, SophiaG, LAMB and LARS against Optax. Each
runs the same gradients through both for 20 steps. CI installs the peers
(``scripts/setup.sh``); elsewhere a missing one skips with the install command.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist.optim as oo
from helpers import needs_optax, peer

STEPS = 20
SHAPE = (6, 5)


def problem(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(SHAPE), [rng.standard_normal(SHAPE) for _ in range(STEPS)]


def run_ours(cls, kwargs, param, grads, fused=True):  # noqa: ANN001, ANN201
    p = torch.tensor(param, requires_grad=True)
    implementation = {True: {"fused": True}, False: {"foreach": False}, None: {}}[fused]
    opt = cls([p], **kwargs, **implementation)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


def assert_schedule_free_equals_optax(transform, make, param, grads):  # noqa: ANN001
    """optimist's Schedule-Free optimizer ``make([p])`` and an Optax Schedule-Free
    ``transform`` after ``grads``: y (train mode), then the eval weights x."""
    import jax.numpy as jnp

    optax = needs_optax()
    y = jnp.asarray(param)
    state = transform.init(y)
    for g in grads:
        updates, state = transform.update(jnp.asarray(g), state, y)
        y = optax.apply_updates(y, updates)
    p = torch.tensor(param, requires_grad=True)
    opt = make(p)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(y), rtol=1e-11, atol=1e-13)
    opt.eval()
    x = optax.contrib.schedule_free_eval_params(state, y)
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(x), rtol=1e-11, atol=1e-13)


def run_optax(transform, param, grads):  # noqa: ANN001, ANN201
    import jax.numpy as jnp

    optax = needs_optax()
    x = jnp.asarray(param, dtype=jnp.float64)
    state = transform.init(x)
    for g in grads:
        updates, state = transform.update(jnp.asarray(g, dtype=jnp.float64), state, x)
        x = optax.apply_updates(x, updates)
    return np.asarray(x)


# torch-adopt 0.x calls torch APIs that torch 2.13 deprecates; the warnings are its own
ADOPT_DEPRECATIONS = pytest.mark.filterwarnings(
    "ignore:Use _accelerator_graph_capture:DeprecationWarning:adopt",
    "ignore:`torch._utils.is_compiling` is deprecated:UserWarning:adopt",
)


@ADOPT_DEPRECATIONS
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ({}, {}),
        ({"weight_decay": 0.1, "lr": 0.05}, {"weight_decay": 0.1, "lr": 0.05}),
        (
            {"clip_exponent": None, "betas": (0.8, 0.99)},
            {"clip_lambda": None, "betas": (0.8, 0.99)},
        ),  # noqa: E501
    ],
)
def test_adopt_equals_the_authors_package(ours, theirs, fused):
    Theirs = peer("adopt").ADOPT

    param, grads = problem()
    expected = run_ours(Theirs, theirs, param, grads, fused=False)  # same driver, their class
    got = run_ours(oo.ADOPT, ours, param, grads, fused=fused)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@ADOPT_DEPRECATIONS
def test_adopt_decoupled_decay_differs_from_the_authors_only_on_the_first_step():
    Theirs = peer("adopt").ADOPT

    param, grads = problem(1)
    theirs = run_ours(Theirs, {"weight_decay": 0.1, "decouple": True}, param, grads, fused=False)
    # the documented difference: optimist decays on the first (initialisation) step too
    ours = run_ours(
        oo.ADOPT, {"weight_decay": 0.1, "decoupled_weight_decay": True}, param * 1.0001, grads
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)
    assert not np.allclose(ours, theirs, rtol=1e-12)


def test_adopt_equals_optax():
    optax = needs_optax()
    param, grads = problem(2)
    expected = run_optax(optax.contrib.adopt(1e-2), param, grads)
    np.testing.assert_allclose(
        run_ours(oo.ADOPT, {"lr": 1e-2}, param, grads), expected, rtol=1e-11, atol=1e-13
    )


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_ademamix_equals_optax(weight_decay):
    optax = needs_optax()
    param, grads = problem(3)
    kw = dict(b1=0.9, b2=0.99, b3=0.999, alpha=5.0, eps=1e-8, weight_decay=weight_decay)
    expected = run_optax(optax.contrib.ademamix(1e-2, **kw), param, grads)
    ours = {"lr": 1e-2, "betas": (0.9, 0.99, 0.999), "alpha": 5.0, "weight_decay": weight_decay}
    got = run_ours(oo.AdEMAMix, ours, param, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adan_equals_optax(weight_decay):
    optax = needs_optax()
    param, grads = problem(4)
    # Optax weights the gradient difference by 1 - beta2 where the authors' code (and optimist)
    # use beta2 (the paper's 1 - beta2); beta2 = 0.5 is where the two conventions agree
    kw = dict(b1=0.9, b2=0.5, b3=0.95, eps=1e-8, eps_root=0.0, weight_decay=weight_decay)
    tx = optax.adan(1e-2, **kw)
    expected = run_optax(tx, param, grads)
    # Optax decays as lr * wd * param with the update: Adan's no_prox form
    ours = {"lr": 1e-2, "betas": (0.9, 0.5, 0.95), "weight_decay": weight_decay, "no_prox": True}
    got = run_ours(oo.Adan, ours, param, grads)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


# --- Schedule-Free: the authors' package, train/eval modes, checkpoints in either mode ----------

SF_CASES = [
    ("AdamWScheduleFree", oo.ScheduleFreeAdamW, {}),
    (
        "AdamWScheduleFree",
        oo.ScheduleFreeAdamW,
        {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5},
    ),  # noqa: E501
    ("AdamWScheduleFree", oo.ScheduleFreeAdamW, {"lr": 0.01, "r": 1.0, "betas": (0.8, 0.99)}),
    ("SGDScheduleFree", oo.ScheduleFreeSGD, {"lr": 0.1, "weight_decay": 0.1, "warmup_steps": 4}),
    ("SGDScheduleFree", oo.ScheduleFreeSGD, {"lr": 0.05, "momentum": 0.5, "weight_lr_power": 1.0}),
]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("theirs", "cls", "kwargs"), SF_CASES)
def test_schedule_free_equals_the_authors_package(theirs, cls, kwargs, fused):
    schedulefree = peer("schedulefree")
    param, grads = problem(5)
    a = torch.tensor(param, requires_grad=True)
    b = torch.tensor(param, requires_grad=True)
    ref = getattr(schedulefree, theirs)([a], **kwargs, foreach=False)
    ours = cls([b], **kwargs, **({"fused": True} if fused else {"foreach": False}))
    ref.train()
    ours.train()
    for g in grads:
        a.grad, b.grad = torch.tensor(g), torch.tensor(g)
        ref.step()
        ours.step()
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-12, atol=1e-14)
    ref.eval()
    ours.eval()  # both now hold x, the average
    np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert ours.param_groups[0]["k"] == ref.param_groups[0]["k"] == STEPS
    torch.testing.assert_close(ours.state[b]["z"], ref.state[a]["z"], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_schedule_free_checkpoint_in_either_mode_resumes_the_same_run(mode, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(32, 4), torch.randn(32, 3)

    def train_steps(m, opt, n):  # noqa: ANN001, ANN202
        opt.train()
        for _ in range(n):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()

    opt = oo.ScheduleFreeAdamW(model.parameters(), lr=0.05, warmup_steps=3)
    train_steps(model, opt, 6)
    getattr(opt, mode)()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    train_steps(model, opt, 6)
    opt.eval()
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    resumed = torch.nn.Linear(4, 3)
    opt2 = oo.ScheduleFreeAdamW(resumed.parameters(), lr=0.05, warmup_steps=3)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    resumed.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.training == (mode == "train")
    train_steps(resumed, opt2, 6)
    opt2.eval()
    for p, q in zip(resumed.parameters(), uninterrupted, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)


def test_schedule_free_modes():
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = oo.ScheduleFreeSGD([p], lr=0.1, momentum=0.8)
    opt.eval()  # before the first step there is no z: nothing moves
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"eval mode; call optimizer.train\(\)"):
        p.grad = torch.ones_like(p)
        opt.step()
    opt.train()
    for _ in range(3):
        p.grad = p.detach().clone()
        opt.step()
    y, z = p.detach().clone(), opt.state[p]["z"].clone()
    opt.eval()
    torch.testing.assert_close(p.detach(), (y - 0.2 * z) / 0.8)  # x = (y - (1 - b1) z) / b1
    opt.eval()  # idempotent
    torch.testing.assert_close(p.detach(), (y - 0.2 * z) / 0.8)
    opt.train()
    torch.testing.assert_close(p.detach(), y)
    with pytest.raises(ValueError, match="momentum"):
        oo.ScheduleFreeSGD([p], momentum=0.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        oo.ScheduleFreeAdamW([p], warmup_steps=-1)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_schedule_free_adamw_equals_optax(weight_decay):
    optax = needs_optax()

    param, grads = problem(6)
    tx = optax.contrib.schedule_free_adamw(1e-2, b1=0.9, b2=0.99, weight_decay=weight_decay)
    make = lambda p: oo.ScheduleFreeAdamW(  # noqa: E731
        [p], lr=1e-2, betas=(0.9, 0.99), weight_decay=weight_decay
    )
    assert_schedule_free_equals_optax(tx, make, param, grads)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(
    "kwargs", [{}, {"weight_decay": 0.1}, {"momentum": 0.5, "weight_lr_power": 1.0}]
)
def test_schedule_free_sgd_equals_optax(kwargs, fused):
    """Optax's ``contrib.schedule_free_sgd`` (y, then the eval weights x). Without warmup: Optax
    warms up from 0 at the first step (``warmup_constant_schedule``), the authors' package (and
    optimist, tested against it above) from ``1 / warmup_steps``."""
    optax = needs_optax()

    param, grads = problem(11)
    theirs = {"b1": kwargs.get("momentum", 0.9), "weight_decay": kwargs.get("weight_decay")}
    theirs["weight_lr_power"] = kwargs.get("weight_lr_power", 2.0)
    tx = optax.contrib.schedule_free_sgd(0.1, **theirs)
    implementation = {"fused": True} if fused else {"foreach": False}
    make = lambda p: oo.ScheduleFreeSGD([p], lr=0.1, **kwargs, **implementation)  # noqa: E731
    assert_schedule_free_equals_optax(tx, make, param, grads)


# --- Adafactor and SophiaG against Optax --------------------------------------------------------


@pytest.mark.parametrize("foreach", [None, False])  # optimist's batched path, and per tensor
@pytest.mark.parametrize(("lr", "weight_decay"), [(1e-2, 0.0), (0.05, 0.1)])
def test_adafactor_equals_optax(lr, weight_decay, foreach):
    """``optax.adafactor`` in torch.optim.Adafactor's convention: factored over the two largest
    dims (the last two here), no momentum, update clipping at RMS 1, scaled by
    ``max(RMS(param), 1e-3)`` and by torch's relative step ``min(lr, 1/sqrt(t))`` (a schedule),
    decay ``p * (1 - lr * wd)`` (Optax's ``weight_decay_rate`` is ``lr * wd``). Optax computes the
    second-moment decay ``1 - t^-0.8`` in float32 (``factorized._decay_rate_pow``), so the two
    agree to ~1e-9, not to float64 rounding."""
    optax = needs_optax()
    import jax.numpy as jnp

    rng = np.random.default_rng(10)
    shapes = [(6, 5), (4, 7), (5,), (2, 5, 4)]
    values = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(STEPS)]
    tx = optax.adafactor(
        learning_rate=lambda count: jnp.minimum(lr, 1.0 / jnp.sqrt(count + 1.0)),
        min_dim_size_to_factor=1,
        multiply_by_parameter_scale=True,
        clipping_threshold=1.0,
        momentum=None,
        eps=1e-30,  # added to g^2 by Optax; torch clamps the estimate at finfo.eps^2 instead
        weight_decay_rate=lr * weight_decay or None,
    )
    xs = [jnp.asarray(v) for v in values]
    state = tx.init(xs)
    for gs in grads:
        updates, state = tx.update([jnp.asarray(g) for g in gs], state, xs)
        xs = optax.apply_updates(xs, updates)
    params = [torch.tensor(v, requires_grad=True) for v in values]
    opt = oo.Adafactor(params, lr=lr, weight_decay=weight_decay, foreach=foreach)
    for gs in grads:
        for p, g in zip(params, gs, strict=True):
            p.grad = torch.tensor(g)
        opt.step()
    for p, x in zip(params, xs, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), np.asarray(x), rtol=1e-7, atol=2e-8)


def _gnb_diagonal(optax):  # noqa: ANN001, ANN202
    """An Optax Hessian-diagonal transformation returning ``ĝ ⊙ ĝ`` of the gradient it is passed
    (``hessian_grad=``): SophiaG's Gauss-Newton-Bartlett estimate, where Optax's default is
    Hutchinson's (SophiaH), so both optimizers see the same curvature estimates."""
    import jax

    def update(updates, state, params=None, hessian_grad=None, **extra):  # noqa: ANN001, ANN202
        return jax.tree.map(lambda g: g * g, hessian_grad), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sophia_g_equals_optax_with_the_same_curvature_estimates(weight_decay, fused):
    """``optax.contrib.sophia`` with optimist's ``update_hessian()`` estimates. Optax refreshes
    ``h`` after the update of every step whose count is a multiple of ``update_interval``, which is
    ``update_hessian()`` after those steps; its ``gamma`` is ``rho * bs``. With ``beta1 = 0``:
    Optax bias-corrects the momentum (``m / (1 - beta1^t)``), the authors' code (and optimist) does
    not, and the two agree only without momentum. Steps both clip and pass (gamma 4)."""
    optax = needs_optax()
    import jax.numpy as jnp

    every, gamma = 3, 4.0
    rng = np.random.default_rng(9)
    param = rng.standard_normal(SHAPE)
    grads = [rng.standard_normal(SHAPE) for _ in range(STEPS)]
    sampled = [rng.standard_normal(SHAPE) for _ in range(STEPS)]  # the GNB pass's gradients
    tx = optax.contrib.sophia(
        0.05,
        b1=0.0,
        b2=0.9,
        eps=1e-15,
        weight_decay=weight_decay,
        gamma=gamma,
        update_interval=every,
        hessian_diagonal_fn=_gnb_diagonal(optax),
    )
    x = jnp.asarray(param)
    state = tx.init(x)
    for g, h in zip(grads, sampled, strict=True):
        updates, state = tx.update(jnp.asarray(g), state, x, hessian_grad=jnp.asarray(h))
        x = optax.apply_updates(x, updates)
    p = torch.tensor(param, requires_grad=True)
    implementation = {"fused": True} if fused else {"foreach": False}
    opt = oo.SophiaG(
        [p], lr=0.05, betas=(0.0, 0.9), rho=gamma, bs=1, weight_decay=weight_decay, **implementation
    )
    ratios = []
    for step, (g, h) in enumerate(zip(grads, sampled, strict=True)):
        p.grad = torch.tensor(g)
        ratios.append(
            (p.grad.abs() / (gamma * opt.state[p]["hessian"])).flatten() if step else None
        )
        opt.step()
        if step % every == 0:
            p.grad = torch.tensor(h)
            opt.update_hessian()
    np.testing.assert_allclose(p.detach().numpy(), np.asarray(x), rtol=1e-11, atol=1e-13)
    passed = torch.cat(ratios[1:]) < 1
    assert passed.any() and not passed.all()  # the clip both acted and let steps through


# --- LAMB and LARS against Optax ------------------------------------------------------------------


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lamb_equals_optax(weight_decay):
    optax = needs_optax()
    param, grads = problem(7)
    tx = optax.lamb(1e-2, b1=0.9, b2=0.99, eps=1e-6, weight_decay=weight_decay)
    expected = run_optax(tx, param, grads)
    kw = {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": weight_decay}
    got = run_ours(oo.LAMB, kw, param, grads, fused=None)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_equals_optax(nesterov):
    optax = needs_optax()
    param, grads = problem(8)
    kw = dict(weight_decay=0.01, trust_coefficient=0.02, eps=1e-9, momentum=0.8, nesterov=nesterov)
    expected = run_optax(optax.lars(0.5, **kw), param, grads)
    got = run_ours(oo.LARS, {"lr": 0.5, **kw}, param, grads, fused=None)
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lars_in_the_papers_forms_equals_pytorch_optimizer(nesterov, weight_decay):
    """``lr_inside_momentum=False`` with ``trust_ratio_form="paper"`` is ``pytorch_optimizer``'s
    LARS on a matrix (torch SGD's form: the buffer holds ratio-scaled updates, the step is lr
    times it; the ratio's denominator ||g|| + wd ||p||); the learning rate changes every step,
    where the lr forms part, and with decay the ratio forms part too."""
    lars = peer("pytorch_optimizer").LARS
    param, grads = problem(9)
    lrs = [0.5 * 0.7**k for k in range(len(grads))]
    kw = {"momentum": 0.8, "trust_coefficient": 0.02, "nesterov": nesterov}
    kw["weight_decay"] = weight_decay
    paper = {"lr_inside_momentum": False, "trust_ratio_form": "paper"}
    runs = {}
    for name, make in {
        "peer": lambda p: lars([p], lr=lrs[0], dampening=0.0, **kw),
        "outside": lambda p: oo.LARS([p], lr=lrs[0], **paper, **kw),
        "inside": lambda p: oo.LARS([p], lr=lrs[0], **kw),
    }.items():
        p = torch.tensor(param, requires_grad=True)
        opt = make(p)
        for lr, g in zip(lrs, grads, strict=True):
            opt.param_groups[0]["lr"] = lr
            p.grad = torch.tensor(g)
            opt.step()
        runs[name] = p.detach().numpy()
    np.testing.assert_allclose(runs["outside"], runs["peer"], rtol=1e-12, atol=1e-14)
    assert np.abs(runs["inside"] - runs["peer"]).max() > 1e-6  # the flag matters


def test_trust_ratio_is_one_for_zero_norms():
    from optimist.optim.trust_ratio import trust_ratio

    assert trust_ratio(torch.zeros(3), torch.ones(3)) == 1.0
    assert trust_ratio(torch.ones(4), torch.zeros(4), 0.5) == 1.0
    assert trust_ratio(torch.ones(4), torch.full((4,), 2.0), 0.5) == pytest.approx(0.25)
