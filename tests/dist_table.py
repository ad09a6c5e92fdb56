"""Every registered optimizer under ZeroRedundancyOptimizer and FSDP2, rows from the registry.

No optimizer is listed by hand: each factory registered in :mod:`optimist.optim.registry` gets a
row (``engine/table.py``'s entries, with the first of its ``examples``), so a new optimizer is
tested here by being registered. :data:`SETTINGS` only adds what makes a short run reach an
optimizer's distributed work (a Lookahead synchronisation, a SOAP eigenbasis refresh);
:data:`EXTRA` adds rows beyond one per optimizer (int8 state).

Gradients are set, not back-propagated: step ``t`` gives parameter ``i`` the gradient
``c_i * p + n_{i,t}`` of its current whole value (fixed random ``c_i > 0`` and ``n_{i,t}``),
bit-identical in one process, under ZeRO (every rank sets every gradient, as DDP leaves them)
and under FSDP2 (each rank keeps its shard of it). So the runs differ only where the optimizer
itself works across ranks (the order of all-reduced float64 sums), and the comparison is
tight (1e-12) for every optimizer, SOAP included: a backward over half batches would differ by
~1e-16 in the gradients, which SOAP's eigenbasis amplifies where its factors are rank-deficient
(see ``soap_backward_cases`` for SOAP with back-propagated gradients).

One spawn runs every row under both strategies (:func:`table_rank`); :func:`table_single` is the
one-process twin.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

import dist_cases
from engine.table import Entry, entries
from optimist.optim.distributed import full, is_dtensor, like, shard_of, sync_zero_params

STEPS = 4
# what a 4-step run needs to reach an optimizer's distributed work, by registry entry name
SETTINGS: dict[str, dict[str, Any]] = {
    "lookahead": {"k": 2},  # two synchronisations of the slow weights
    "soap": {"precondition_frequency": 2},  # the QR refresh of the eigenbases at step 2
}
# replicated: every rank holds every parameter and the same gradients (DDP, after its all-reduce)
KINDS = ("replicated", "zero", "fsdp")
# rows beyond one per optimizer: name -> (entry name, settings)
EXTRA: dict[str, tuple[str, dict[str, Any]]] = {
    "adamw_int8": ("adamw", {"lr": 0.01, "weight_decay": 0.1, "state_dtype": "int8"}),
    "muon_int8": ("muon", {"state_dtype": "int8"}),
}
# (kind, row) pairs that cannot work: the one-line error they raise instead (README)
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("fsdp", "muon_int8"): "RuntimeError: Muon's state_dtype='int8' is not supported for "
    "DTensor (FSDP2) parameters yet; use state_dtype=None there",
}


def rows() -> dict[str, tuple[Entry, dict[str, Any]]]:
    """Row name -> (registry entry, constructor settings)."""
    by_name = {entry.name: entry for entry in entries()}
    out = {
        name: (entry, {**entry.examples[0], **SETTINGS.get(name, {})})
        for name, entry in by_name.items()
    }
    for name, (entry_name, settings) in EXTRA.items():
        out[name] = (by_name[entry_name], settings)
    return out


def build(row: str, params: Any, **extra: Any) -> torch.optim.Optimizer:
    entry, settings = rows()[row]
    return entry.factory(params, **{**entry.defaults, **settings, **extra})


def groups(row: str, params: list[torch.Tensor]) -> list[Any]:
    """The param groups ``row`` is built with (Muon's split made before ZeRO sees them)."""
    entry, _ = rows()[row]
    return dist_cases.muon_groups(params) if entry.name == "muon" else params  # muon_int8 too


def model() -> torch.nn.Module:
    """Two 64 x 64 layers: square, full-rank factors for SOAP; 4096-element weights whose
    halves are whole int8 blocks; 64-element biases (plain state: below int8's size)."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64)]
    return torch.nn.Sequential(*layers).double()


def set_grads(params: list[torch.Tensor], step: int) -> None:
    """Parameter ``i``'s gradient ``c_i * p + n_{i,t}`` (module docstring), of the whole
    parameter; a DTensor parameter gets its own shard of it."""
    for i, p in enumerate(params):
        whole = full(p.detach())
        gen = torch.Generator().manual_seed(1000 * i)
        c = torch.rand(whole.shape, generator=gen, dtype=whole.dtype) + 0.5
        g = c * whole + torch.randn(whole.shape, generator=gen, dtype=whole.dtype)
        gen.manual_seed(1000 * i + 1 + step)
        g += 0.1 * torch.randn(whole.shape, generator=gen, dtype=whole.dtype)
        p.grad = like(p, shard_of(g, p)) if is_dtensor(p) else g


def inner(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimist optimizer (ZeRO's local one on this rank)."""
    return opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt


def poison(kind: str, net: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """A NaN in rank 1's own part of the gradients only (ZeRO: its partition; FSDP2: its
    shard); replicated (DDP would spread it) and one process: in the last parameter's."""
    last = list(net.parameters())[-1].grad
    if kind in ("single", "replicated"):
        last.view(-1)[-1] = float("nan")
    elif torch.distributed.get_rank() == 1:
        if kind == "zero":
            own = [p for g in inner(opt).param_groups for p in g["params"] if p.grad is not None]
            own[0].grad.view(-1)[-1] = float("nan")
        else:
            last.to_local().view(-1)[-1] = float("nan")


def run(
    kind: str, net: torch.nn.Module, opt: torch.optim.Optimizer, guarded: bool = False
) -> dict[str, Any]:
    """STEPS steps; SophiaG folds each gradient into its curvature (``update_hessian``) and
    Schedule-Free ends in eval mode (its average; under ZeRO then every rank takes the owners'
    partitions). ``guarded``: a NaN at step NAN_STEP (:func:`poison`), skipped. The whole
    parameters, Prodigy's sums and the skipped steps."""
    params = list(net.parameters())
    local = inner(opt)
    for step in range(STEPS):
        set_grads(params, step)
        if guarded and step == NAN_STEP:
            poison(kind, net, opt)
        opt.step()
        if hasattr(local, "update_hessian") and not (guarded and step == NAN_STEP):
            local.update_hessian()  # (it reads the raw gradient: never a skipped one)
    if hasattr(local, "eval"):
        local.eval()
        if kind == "zero":
            sync_zero_params(opt)
    out: dict[str, Any] = {"params": [full(p.detach()).clone() for p in params]}
    out.update({key: local.param_groups[0][key] for key in PRODIGY_SUMS if key in local.defaults})
    out["skipped"] = getattr(local, "optimizer", local).skipped_steps
    return out


# Prodigy's step size and its two sums: the same on every rank as in one process
PRODIGY_SUMS = ("d", "d_numerator", "d_denom")
NAN_STEP = 1


def guarded_rows() -> list[str]:
    """The rows that take ``skip_nonfinite`` (every one today)."""
    out = []
    for row in rows():
        try:
            build(row, [torch.nn.Parameter(torch.zeros(2))], skip_nonfinite=True)
        except TypeError:
            continue
        out.append(row)
    return out


def table_rank(rank: int) -> dict[str, object]:
    """Every row under each of KINDS on this rank, plain and guarded (one spawn for it all)."""
    out: dict[str, object] = {}
    cases = [(row, False) for row in rows()] + [(row, True) for row in guarded_rows()]
    for row, guarded in cases:
        extra = {"skip_nonfinite": True} if guarded else {}
        for kind in KINDS:
            net = model()
            name = f"{kind}/{row}" + ("/guarded" if guarded else "")
            try:
                if kind == "zero":
                    params = groups(row, list(net.parameters()))
                    factory = partial(_build_any, row, extra)
                    opt = ZeroRedundancyOptimizer(params, optimizer_class=factory)
                else:  # replicated (as under DDP: whole parameters, the same gradients), FSDP2
                    if kind == "fsdp":
                        fully_shard(net)
                    opt = build(row, groups(row, list(net.parameters())), **extra)
                out[name] = run(kind, net, opt, guarded)
            except Exception as error:  # noqa: BLE001 - recorded, the test says which it expects
                out[name] = f"{type(error).__name__}: {error}"
    out.update(soap_backward_cases(rank))
    out.update(lookahead_slow_cases())
    return out


def _build_any(row: str, extra: dict[str, Any], params: Any, **_: Any) -> torch.optim.Optimizer:
    """ZeRO's optimizer_class (the settings are the row's, not ZeRO's keyword arguments)."""
    return build(row, params, **extra)


def table_single() -> dict[str, object]:
    """Every row in one process, plain and guarded."""
    out: dict[str, object] = {}
    cases = [(row, False) for row in rows()] + [(row, True) for row in guarded_rows()]
    for row, guarded in cases:
        net = model()
        extra = {"skip_nonfinite": True} if guarded else {}
        opt = build(row, groups(row, list(net.parameters())), **extra)
        out[row + ("/guarded" if guarded else "")] = run("single", net, opt, guarded)
    return out


# --- SOAP with back-propagated gradients ----------------------------------------------------------

SOAP_STEPS = 3


def soap(params: Any) -> torch.optim.Optimizer:
    import optimist.optim as oo

    return oo.SOAP(params, lr=0.01, precondition_frequency=2)


def soap_data(rows_: int, features: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows_, features, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 64, (rows_,), generator=g)


# 256 rows through square 64 x 64 layers: full-rank, well-separated Shampoo factors. (On
# tests/dist_cases.py's 16 -> 64 MLP with 8 rows, the 64 x 64 left factor of the 64 x 16 weight
# has rank <= 16, a degenerate eigenbasis: 2 ranks differed from one process by 0.023 after 3
# steps; here by 5e-9. 64 rows: 2e-8.)
SOAP_DATA = soap_data(256, 64)


def soap_backward_cases(rank: int) -> dict[str, object]:
    """SOAP under ZeRO (over DDP) and FSDP2 with gradients from a backward on half batches;
    SOAP's FSDP2 state through torch.distributed.checkpoint."""
    half = tuple(t.chunk(dist_cases.WORLD)[rank] for t in SOAP_DATA)
    net = DistributedDataParallel(model())
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=soap)
    out: dict[str, object] = {}
    out["soap_backward/zero"] = dist_cases.train(net, opt, half, steps=SOAP_STEPS)
    net = model()
    fully_shard(net)
    opt = soap(net.parameters())
    out["soap_backward/fsdp"] = dist_cases.train(net, opt, half, steps=SOAP_STEPS)
    out.update(dist_cases.checkpoint_cases(rank, half, {"soap": soap}, model))
    return out


def soap_backward_single() -> list[torch.Tensor]:
    net = model()
    return dist_cases.train(net, soap(net.parameters()), SOAP_DATA, steps=SOAP_STEPS)


def soap_load_on_one(folder: Path) -> list[torch.Tensor]:
    """One process loads SOAP's 2-rank FSDP2 checkpoint and trains on the whole batch."""
    return dist_cases.load_on_one("soap", folder, soap, model, SOAP_DATA)


# --- Lookahead's slow weights under ZeRO ------------------------------------------------------

# 3 steps at k=2: synchronised at step 2, one fast step since, so slow and fast weights differ
LOOKAHEAD_STEPS = 3


def lookahead_slow_cases() -> dict[str, object]:
    """Lookahead over each rank's ZeRO partition (``zero.optim``): the whole parameters in its
    ``slow_weights()`` block before and after ``sync_zero_params`` (README: the block swaps only
    the own partition), after leaving it and syncing again, and after one more step."""
    net = model()
    opt = ZeroRedundancyOptimizer(
        list(net.parameters()), optimizer_class=partial(_build_any, "lookahead", {})
    )
    return {f"lookahead_slow/{k}": v for k, v in _lookahead_slow(net, opt, opt.optim).items()}


def lookahead_slow_single() -> dict[str, list[torch.Tensor]]:
    net = model()
    opt = build("lookahead", list(net.parameters()))
    return _lookahead_slow(net, opt, opt)


def _lookahead_slow(
    net: torch.nn.Module, opt: torch.optim.Optimizer, lookahead: torch.optim.Optimizer
) -> dict[str, list[torch.Tensor]]:
    params = list(net.parameters())

    def whole() -> list[torch.Tensor]:
        return [p.detach().clone() for p in params]

    for step in range(LOOKAHEAD_STEPS):
        set_grads(params, step)
        opt.step()
    out = {"fast": whole()}
    zero = isinstance(opt, ZeroRedundancyOptimizer)
    with lookahead.slow_weights():
        out["unsynced"] = whole()
        if zero:
            sync_zero_params(opt)
        out["slow"] = whole()
    if zero:
        sync_zero_params(opt)
    out["after"] = whole()
    set_grads(params, LOOKAHEAD_STEPS)
    opt.step()
    out["next"] = whole()
    return out
