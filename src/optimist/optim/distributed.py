"""What the engine needs from ``torch.distributed``: local shards and rank-wide pass-0 scalars.

* :func:`local` / :func:`local_grad`: the local shard of a DTensor (FSDP2's ``fully_shard``
  parameters, gradients and the optimizer state made like them); other tensors unchanged. Every
  rule is element-wise, so updating the local shards is the sharded update.
* :func:`global_grad_stats`: pass 0 (sum of squared gradients, finiteness) over the whole model,
  the same numbers on every rank, so ``clip_by_global_norm`` and ``skip_nonfinite`` decide
  alike everywhere:

  - DTensor gradients: local sums combined by DTensor itself (a ``Partial`` sum over the mesh
    dimensions the gradient is sharded on, nothing over the replicated ones); one collective
    per (mesh, placements) pair;
  - plain gradients, when a process group is initialised: the ranks' rows
    ``(sum of squares, non-finite, numel)`` are all-gathered; if every rank holds the same row
    the parameters are replicas (DDP: the gradients were already averaged) and it counts once,
    otherwise each rank holds its own part (``ZeroRedundancyOptimizer``) and the rows are
    summed. Either way every rank ends with the same numbers.
* whole-tensor work on a DTensor parameter (the tensor-wise optimizers under FSDP2; under
  ``ZeroRedundancyOptimizer`` every tensor is whole on its rank and nothing here applies):

  - :func:`full`, :func:`whole`: all-gather a DTensor (or a local shard laid out as one); the
    whole-tensor work then runs on every rank alike (Muon's Newton-Schulz, Adafactor's
    factored moments, SOAP's preconditioners), and :func:`shard_of` cuts this rank's shard
    out of the result;
  - :func:`global_norms`: norms of tensors laid out like a parameter, from local sums of squares
    all-reduced over the mesh dimensions it is sharded on, one collective for all of them
    (LAMB/LARS trust ratios in torch ops, Adafactor's parameter RMS); :func:`tensor_sums`: the
    same for per-tensor rows of sums of many parameters, one collective per layout (LAMB/LARS
    on the engine).
* :func:`sync_zero_params`: under ``ZeroRedundancyOptimizer`` each rank's optimizer changes
  only its own partition; after a change outside ``step()`` (Schedule-Free's ``eval()`` /
  ``train()``, Lookahead's ``slow_weights()``, called on ``zero.optim``) every rank takes the
  owners' values, as ZeRO's own step ends.
* :func:`destroy_process_group`: ``torch.distributed.destroy_process_group()`` that really ends
  the group: after FSDP2 or any DTensor work, torch's DTensor caches (sharding propagation,
  redistribution plans) keep ``DeviceMesh`` objects, and each mesh keeps its process group
  (``DeviceMesh._pg_registry``), so torch's own call frees nothing and the gloo threads run on
  into interpreter shutdown, where a gloo worker dropping a finished collective's tensor
  would take the GIL, the likely cause of a rank's abort at exit (README, "Why a rank
  sometimes aborted at exit"). This one clears those caches first, so the group is freed and
  its threads joined inside the call.
* :func:`global_sums`: any float64 sums over parameters (Prodigy's two sums) made rank-wide the
  way pass 0 is: DTensor parts summed over the mesh dimensions they are sharded on, plain parts
  summed over the ranks unless every rank holds the same numbers (replicas, DDP).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor, Partial, Replicate
except ImportError:  # torch built without distributed support
    DTensor = None  # type: ignore[assignment,misc]

__all__ = [
    "collective_device",
    "destroy_process_group",
    "full",
    "global_grad_stats",
    "global_norms",
    "global_sums",
    "is_dtensor",
    "like",
    "local",
    "local_grad",
    "shard_of",
    "sync_zero_params",
    "tensor_sums",
    "whole",
]

TotalFn = Callable[[Sequence[Tensor], float], tuple[float, bool]]
"""Pass 0 of plain tensors: (sum of squares over all of them, all finite)."""


def is_dtensor(t: object) -> bool:
    """True for a ``torch.distributed.tensor.DTensor``."""
    return DTensor is not None and isinstance(t, DTensor)


def _is_dtensor_type(kind: type) -> bool:
    return DTensor is not None and issubclass(kind, DTensor)


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view: in-place updates reach the DTensor); else ``t``."""
    return t.to_local() if is_dtensor(t) else t


def like(reference: Tensor, shard: Tensor) -> Tensor:
    """``shard`` (a local tensor) as a DTensor laid out as ``reference``, if that is one."""
    if not is_dtensor(reference):
        return shard
    return DTensor.from_local(
        shard,
        reference.device_mesh,
        reference.placements,
        run_check=False,
        shape=reference.shape,
        stride=reference.stride(),
    )


def local_grad(grad: Tensor, param: Tensor) -> Tensor:
    """The local shard of ``grad`` laid out as ``param``'s (redistributed if placed otherwise)."""
    if not is_dtensor(param):
        return grad
    if not is_dtensor(grad):
        raise ValueError(
            "the gradient of a DTensor parameter must be a DTensor sharded like it. "
            f"Received: a {type(grad).__name__} of shape {tuple(grad.shape)}"
        )
    if grad.device_mesh != param.device_mesh or tuple(grad.placements) != tuple(param.placements):
        grad = grad.redistribute(param.device_mesh, param.placements)
    return grad.to_local()


def full(t: Tensor) -> Tensor:
    """The whole tensor of a DTensor (all-gathered: every rank gets the same); else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


def whole(shard: Tensor, reference: Tensor) -> Tensor:
    """The whole tensor whose local shard ``shard`` is, laid out as DTensor ``reference``
    (all-gathered: every rank gets the same); ``shard`` itself for a plain ``reference``."""
    return like(reference, shard).full_tensor() if is_dtensor(reference) else shard


def shard_of(whole_tensor: Tensor, reference: Tensor) -> Tensor:
    """This rank's local shard of ``whole_tensor`` (the same on every rank), laid out as
    DTensor ``reference``; no communication. ``whole_tensor`` itself for a plain ``reference``."""
    if not is_dtensor(reference):
        return whole_tensor
    mesh = reference.device_mesh
    replicated = DTensor.from_local(whole_tensor, mesh, [Replicate()] * mesh.ndim, run_check=False)
    return replicated.redistribute(mesh, reference.placements).to_local()


def global_norms(shards: Sequence[Tensor], reference: Tensor) -> list[float]:
    """The 2-norms of the whole tensors of ``shards`` (local shards laid out as ``reference``).

    A plain ``reference``: ``t.norm()`` of each. A DTensor: float64 sums of squares of the
    local shards, summed over the mesh dimensions ``reference`` is sharded on in one
    collective, then square roots (equal on every rank).
    """
    if not is_dtensor(reference):
        return [float(t.norm()) for t in shards]
    sums = torch.stack([t.double().square().sum() for t in shards])
    return tensor_sums(sums[None], [reference])[0].sqrt().tolist()


def tensor_sums(sums: Tensor, references: Sequence[Tensor]) -> Tensor:
    """Rows of per-tensor sums over local shards (row ``i`` of the tensors laid out as
    ``references[i]``) made sums over the whole tensors: the rows of DTensor references summed
    over the mesh dimensions they are sharded on, one collective per :func:`layout_key` for all
    their rows (LAMB/LARS trust ratios on the engine); plain rows as they are. The same result
    on every rank."""
    layouts: dict[tuple, list[int]] = {}
    for i, ref in enumerate(references):
        key = layout_key(ref)
        if key is not None:
            layouts.setdefault(key, []).append(i)
    if not layouts:
        return sums
    out = sums.clone()
    for rows in layouts.values():
        out[rows] = _over_mesh(sums[rows], references[rows[0]]).to(out.device, out.dtype)
    return out


def _world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _plain_row(grads: Sequence[Tensor], clip_value: float, total: TotalFn) -> Tensor:
    sum_sq, finite = total(grads, clip_value)
    numel = float(sum(g.numel() for g in grads))
    row = torch.tensor([sum_sq, 0.0 if finite else 1.0, numel], dtype=torch.float64)
    return _over_ranks(row)


def _over_ranks(row: Tensor) -> Tensor:
    """A float64 row of one rank's parts summed over the ranks, or taken once when every rank
    holds the same row (replicas: DDP); ``row`` itself without a process group."""
    world = _world()
    if world == 1:
        return row
    mine = row.to(collective_device())
    rows = [torch.empty_like(mine) for _ in range(world)]
    torch.distributed.all_gather(rows, mine)
    every = torch.stack(rows).cpu()
    if all(torch.equal(r, every[0]) for r in every):
        return every[0]  # replicas (DDP)
    return every.sum(0)  # one part each (ZeRO)


def collective_device() -> torch.device:
    """Where the default process group's collectives take their tensors: the current GPU for
    NCCL (which has no CPU collectives), else the CPU (gloo, or a backend per device type)."""
    backend = str(torch.distributed.get_backend()).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _over_mesh(row: Tensor, reference: Tensor) -> Tensor:
    """A float64 row of local sums over shards laid out as DTensor ``reference``, summed over
    the mesh dimensions it is sharded on (replicated ones count once): one collective."""
    spec = [Partial() if pl.is_shard() else Replicate() for pl in reference.placements]
    row = row.to(reference.device)
    return DTensor.from_local(row, reference.device_mesh, spec, run_check=False).full_tensor().cpu()


def layout_key(p: Tensor) -> tuple | None:
    """How ``p`` is laid out over the ranks: None for a plain tensor, else its (mesh,
    placements); parameters with one key share one reduction in :func:`global_sums`."""
    return (p.device_mesh, tuple(p.placements)) if is_dtensor(p) else None


def global_sums(parts: dict[tuple | None, tuple[Tensor, list[float]]], width: int) -> list[float]:
    """Rank-wide totals of ``width`` float64 sums over parameters, the same on every rank.

    ``parts`` maps a :func:`layout_key` to (a parameter with that layout, this rank's ``width``
    sums over the local shards of the parameters with that layout). Plain parameters: summed
    over the ranks unless every rank holds the same sums (replicas, e.g. DDP; module
    docstring); DTensor parameters: summed over the mesh dimensions they are sharded on. One
    collective per layout; a rank with no parameter (an empty ZeRO partition) joins the plain
    one with zeros.
    """
    if not parts:
        parts = {None: (torch.empty(0), [0.0] * width)}
    if len(parts) == 1 and None in parts and _world() == 1:  # no tensor made (a tiny step's 3%)
        return [0.0 + v for v in parts[None][1]]  # (0.0 + v: as the sum below, -0.0 -> 0.0)
    total = torch.zeros(width, dtype=torch.float64)
    for key, (reference, sums) in parts.items():
        row = torch.tensor(sums, dtype=torch.float64)
        total += _over_ranks(row) if key is None else _over_mesh(row, reference)
    return total.tolist()


def _sharded_row(grads: Sequence[Tensor], clip_value: float, total: TotalFn) -> Tensor:
    first = grads[0]
    if any(pl.is_partial() for pl in first.placements):
        raise ValueError(
            "clip_by_global_norm / skip_nonfinite need reduced gradients; received a DTensor "
            f"gradient with placements {tuple(first.placements)} (reduce it before step())"
        )
    sum_sq, finite = total([g.to_local() for g in grads], clip_value)
    part = torch.tensor([sum_sq, 0.0 if finite else 1.0], dtype=torch.float64)
    return _over_mesh(part, first)


def global_grad_stats(
    grads: Sequence[Tensor], clip_value: float, total: TotalFn
) -> tuple[float, bool]:
    """Sum of squared gradients and whether all are finite, over every rank (module docstring).

    ``total(grads, clip_value)`` gives the sum of squares and finiteness of plain tensors (the
    engine's pass 0). Without a process group or DTensors that is the answer itself, with no
    tensor made (pass 0 ends with every cache cold and the step follows at once).
    """
    if not any(map(_is_dtensor_type, set(map(type, grads)))) and _world() == 1:
        return total(grads, clip_value)  # the common case, decided per type, not per tensor
    sharded: dict[tuple, list[Tensor]] = {}
    plain: list[Tensor] = []
    for g in grads:
        if is_dtensor(g):
            sharded.setdefault((g.device_mesh, tuple(g.placements)), []).append(g)
        else:
            plain.append(g)
    if not sharded and _world() == 1:
        return total(plain, clip_value)
    row = torch.zeros(2, dtype=torch.float64)
    if plain or not sharded:
        row += _plain_row(plain, clip_value, total)[:2]
    for group in sharded.values():
        row += _sharded_row(group, clip_value, total)
    return float(row[0]), bool(row[1] == 0)


def sync_zero_params(zero: torch.optim.Optimizer) -> None:
    """Broadcast every parameter from the rank whose ``ZeroRedundancyOptimizer`` partition holds
    it (ZeRO's own end of ``step()``), after its local optimizer (``zero.optim``) changed them
    outside a step, e.g. ``zero.optim.eval()`` of Schedule-Free; call it on every rank."""
    sync = getattr(zero, "_sync_params", None)
    if not callable(sync) or not hasattr(zero, "optim"):
        raise TypeError(
            "sync_zero_params needs a torch.distributed.optim.ZeroRedundancyOptimizer; "
            f"received a {type(zero).__name__}"
        )
    sync()


def destroy_process_group() -> None:
    """``torch.distributed.destroy_process_group()`` after clearing the torch.distributed caches
    that hold a process group past it (module docstring), so the group's threads are joined
    here, not during interpreter shutdown. Collective like torch's: call it on every rank,
    after a ``dist.barrier()`` when a rank may still be working."""
    import torch.distributed as dist

    # DTensor's caches are keyed by or hold specs and planners that keep their mesh: the
    # lru_cache wrappers (some per thread), the redistribution planners and the C++ fast path's
    # cache (torch >= 2.10); clearing a cache only costs its next lookup
    for obj in gc.get_objects():
        if type(obj) is functools._lru_cache_wrapper and str(obj.__module__).startswith(
            "torch.distributed"
        ):
            obj.cache_clear()
    try:
        from torch.distributed.tensor import _redistribute
    except ImportError:
        _redistribute = None
    for clear in (
        getattr(_redistribute, "clear_redistribute_planner_cache", None),
        getattr(torch._C, "_clear_DTensor_sharding_propagator_cache", None),
    ):
        if clear is not None:
            clear()
    gc.collect()  # meshes and groups left in reference cycles
    dist.destroy_process_group()
