"""The bucketed eager path: a rule's torch-ops function once over many tensors (accelerators).

The per-tensor eager path (:func:`optimist.optim.eager.run_eager`) launches every op of a rule
once per parameter: ~10 kernels per tensor, so a model of many small tensors is bound by kernel
launches on a GPU. Here the tensors of a group that can share one call are put in *buckets*;
per bucket the parameters, gradients, each state slot (and the EMA) are concatenated flat (one
``torch.cat`` each), the rule's eager function runs **once** on the flat tensors with the same
prologue, and the results are written back with ``torch._foreach_copy_`` (one multi-tensor
kernel per list). Every rule here is element-wise, so each element sees the same operations on
the same values as tensor by tensor: the results are bitwise those of the per-tensor path
(tested for every rule). No rule's math is repeated here.

Tensors share a bucket when they agree on everything the per-tensor path decides per tensor:
dtype and device of the parameter, gradient, each slot and the EMA; the step count and the
scalar state (the host scalars); whether a fresh slot is made this step; the prologue's
per-parameter L2 and decay factors (masks split buckets by value). Stochastic rounding (bfloat16
state, ``stochastic_params``) draws the same random bits as tensor by tensor: each tensor's
segment hashes its own seed (:func:`optimist.optim.codecs.segment_bits`). What stays per tensor:
int8-stored slots of tensors that are not whole 256-element blocks (a block must not straddle two
tensors), tensors above :data:`TENSOR_MAX` elements (one call each costs nothing there; the flat
copies would), tensor subclasses, and buckets of one.

Extra memory is bounded: a bucket holds at most :data:`BUCKET_MAX` elements, so its flat copies
(parameter, gradient, slots, temporaries) stay a few times ``BUCKET_MAX`` elements.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from optimist.optim import codecs
from optimist.optim.base import as_real
from optimist.optim.distributed import local
from optimist.optim.eager import Batch, prepare_gradient, run_eager, with_fresh
from optimist.optim.gather import PLAIN_TYPES
from optimist.optim.native import available, load
from optimist.optim.rule import Rule

__all__ = [
    "BUCKET_MAX", "CPU_TENSOR_MAX", "TENSOR_MAX", "Layout", "advance", "buckets", "by_size",
    "device_values", "host_values", "run_bucketed", "split", "tensor_max",
]  # fmt: skip

T = TypeVar("T")

TENSOR_MAX = 1 << 20
"""Tensors with more elements are stepped one call each (on accelerators)."""
CPU_TENSOR_MAX = 1 << 16
"""The same on the CPU (``foreach=True``), where a tensor's ops run from the caches: a flat
bucket of large tensors would run each op from memory."""
BUCKET_MAX = 1 << 24
"""The most elements of one bucket."""


def host_values(tensors: list[Tensor]) -> list[float]:
    """The values of one-element tensors (one stack and one copy to the host)."""
    if not tensors:
        return []
    try:
        return torch.stack(tensors).reshape(-1).tolist()
    except RuntimeError:  # mixed devices or shapes
        return [float(t.item()) for t in tensors]


@functools.lru_cache(maxsize=256)
def device_values(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.tensor(values)`` on ``device``, made once per (values, dtype, device) and shared
    (never write to it): made afresh each step it would be a blocking host-to-device copy on
    CUDA (torch waits for the stream after a copy from pageable memory)."""
    return torch.tensor(values, dtype=dtype, device=device)


def _one(values: Any) -> bool:
    """Whether an iterable holds one distinct value (or none)."""
    return len(set(values)) <= 1


def _dtype(t: Tensor | None) -> torch.dtype | None:
    return None if t is None else t.dtype


def tensor_max(device: torch.device) -> int:
    return CPU_TENSOR_MAX if device.type == "cpu" else TENSOR_MAX


def _blocked(t: Tensor, n: int) -> bool:
    """A state tensor the bucket takes: plain, and int8 only in whole blocks (``n`` elements a
    multiple of QUANT_BLOCK), so that its blocks are the same flat as alone."""
    return type(t) in PLAIN_TYPES and (t.dtype != torch.int8 or n % codecs.QUANT_BLOCK == 0)


def _uniform(
    batch: Batch, emas: list[Tensor], steps: list[float], scalars: list[list[float]]
) -> bool:
    """Whether every tensor of ``batch`` may share one bucket (the usual case), checked list
    by list without a key per tensor."""
    params, grads, pro = batch.params, batch.grads, batch.prologue
    columns = [c for c in batch.columns if c]
    lists = [params, grads, *columns, emas]
    quantized = any(c[0].dtype == torch.int8 for c in columns)
    return (
        all(_one(t.dtype for t in ts) for ts in lists)
        and set(map(type, itertools.chain(*lists))) <= set(PLAIN_TYPES)
        and not any(g.is_sparse for g in grads)
        and _one(p.device for p in params)
        and max(map(Tensor.numel, params)) <= tensor_max(params[0].device)
        and not (quantized and any(p.numel() % codecs.QUANT_BLOCK for p in params))
        and _one(steps)
        and all(_one(v) for v in scalars)
        and _one(batch.fresh)
        and _one(pro["l2"])
        and _one(pro["decay"])
    )


def _key(
    batch: Batch, emas: list[Tensor], steps: list[float], scalars: list[list[float]], i: int
) -> tuple[Any, ...] | None:
    """What tensor ``i`` shares with its bucket (None: it is stepped alone)."""
    p, g, pro = batch.params[i], batch.grads[i], batch.prologue
    slots = [c[i] if c else None for c in batch.columns]
    n = p.numel()
    if (
        n > tensor_max(p.device)
        or type(p) not in PLAIN_TYPES
        or type(g) not in PLAIN_TYPES
        or g.is_sparse
        or not all(s is None or _blocked(s, n) for s in slots)
    ):
        return None
    return (
        p.dtype,
        p.device,
        g.dtype,
        tuple(_dtype(s) for s in slots),
        _dtype(emas[i]) if emas else None,
        steps[i] if steps else None,
        tuple(v[i] for v in scalars),
        bool(batch.fresh[i]) if batch.fresh else False,
        pro["l2"][i] if pro["l2"] else None,
        pro["decay"][i] if pro["decay"] else None,
    )


def buckets(rule: Rule, batch: Batch, emas: list[Tensor]) -> tuple[list[int], list[list[int]]]:
    """Split ``batch`` into the indices stepped one by one and the buckets (lists of >= 2
    indices, each at most :data:`BUCKET_MAX` elements). ``emas``: the EMA tensors (or [])."""
    states = batch.states
    steps = host_values([s["step"] for s in states]) if rule.has_step else []
    scalars = [host_values([s[key] for s in states]) for key, _ in rule.scalar_state]
    n = len(batch.params)
    groups: list[list[int]]
    singles: list[int] = []
    if _uniform(batch, emas, steps, scalars):
        groups = [list(range(n))]
    else:
        by_key: dict[tuple[Any, ...], list[int]] = {}
        for i in range(n):
            key = _key(batch, emas, steps, scalars, i)
            if key is None:
                singles.append(i)
            else:
                by_key.setdefault(key, []).append(i)
        groups = list(by_key.values())
    alone, out = split(groups, lambda i: batch.params[i].numel())
    return sorted(singles + alone), out


def split(groups: Iterable[list[T]], numel: Callable[[T], int]) -> tuple[list[T], list[list[T]]]:
    """Each group (items that may share a bucket) cut into buckets of consecutive items of at
    most :data:`BUCKET_MAX` elements in all (:func:`by_size`; ``numel`` gives an item's):
    the items left in a bucket of their own, and the buckets of two or more."""
    alone: list[T] = []
    out: list[list[T]] = []
    for members in groups:
        for chunk in by_size([numel(m) for m in members]):
            if len(chunk) == 1:
                alone.append(members[chunk[0]])
            else:
                out.append([members[j] for j in chunk])
    return alone, out


def by_size(sizes: list[int], limit: int | None = None) -> list[list[int]]:
    """Consecutive indices of ``sizes`` (element counts) in buckets of at most ``limit``
    elements (None: :data:`BUCKET_MAX`, read at the call; a larger one alone)."""
    limit = BUCKET_MAX if limit is None else limit
    out: list[list[int]] = []
    chunk: list[int] = []
    total = 0
    for i, numel in enumerate(sizes):
        if chunk and total + numel > limit:
            out.append(chunk)
            chunk, total = [], 0
        chunk.append(i)
        total += numel
    if chunk:
        out.append(chunk)
    return out


class _BucketScalars:
    """Scalar state of a bucket's parameters, which hold one common value."""

    def __init__(self, states: list[dict[str, Any]]) -> None:
        self.states = states

    def scale(self, key: str, factor: float) -> float:
        values = [s[key] for s in self.states]
        if _on_engine(values):
            return load().scale_scalars(values, float(factor))  # each ``state[key] *= factor``
        torch._foreach_mul_(values, factor)
        return float(values[0].item())


def _on_engine(scalars: list[Tensor]) -> bool:
    """Whether the C++ engine's loops over one-element CPU tensors take ``scalars``."""
    return available() and all(
        t.is_cpu and t.dtype in (torch.float32, torch.float64) for t in scalars
    )


def advance(steps: list[Tensor]) -> float:
    """``step += 1`` for each of the bucket's step counts (equal); the new value."""
    if _on_engine(steps):
        return load().advance_steps(steps)
    torch._foreach_add_(steps, 1)
    return float(steps[0].item())


class Layout:
    """How a bucket's lists (one shape per tensor, alike in every list) go flat and back:
    lists of vectors by ``torch.cat`` and ``torch.split_with_sizes_copy`` into the tensors
    (no view made per tensor), other shapes through flat views of each tensor."""

    def __init__(self, params: list[Tensor]) -> None:
        self.vectors = set(map(Tensor.dim, params)) == {1}
        self.sizes = list(map(Tensor.numel, params))

    def flat(self, tensors: list[Tensor]) -> Tensor:
        return torch.cat(tensors) if self.vectors else _flatten_dense_tensors(tensors)

    def spread(self, values: Tensor, dtype: torch.dtype) -> Tensor:
        """A flat tensor holding ``values[i]`` (as ``dtype``) over tensor ``i``'s segment, with
        no host read (a per-tensor scale applied element-wise)."""
        counts = device_values(tuple(self.sizes), torch.int64, values.device)
        return values.to(dtype).repeat_interleave(counts, output_size=sum(self.sizes))

    def write(self, targets: list[Tensor], flat: Tensor) -> None:
        """Copy the segments of ``flat`` into ``targets`` (converted to their dtype)."""
        if flat.dtype != targets[0].dtype:
            flat = flat.to(targets[0].dtype)
        if self.vectors:
            torch.split_with_sizes_copy(flat, self.sizes, out=targets)
        else:
            torch._foreach_copy_(targets, _unflatten_dense_tensors(flat, targets))


def run_bucketed(
    rule: Rule,
    group: dict[str, Any],
    batch: Batch,
    *,
    ema: float | None,
    stochastic_params: bool,
    seed: int,
) -> None:
    """One step of ``batch`` through the rule's eager function: once per bucket (see the
    module docstring), one call per tensor for the rest; arguments as
    :func:`~optimist.optim.eager.run_eager`'s."""
    emas = [as_real(local(s["ema"])) for s in batch.states] if ema is not None else []
    singles, groups = buckets(rule, batch, emas)
    for i in singles:
        run_eager(
            rule, group, batch.subset([i]), ema=ema, stochastic_params=stochastic_params, seed=seed
        )
    whole = len(groups) == 1 and not singles
    for members in groups:
        _run_bucket(
            rule,
            group,
            batch if whole else batch.subset(members),
            emas if whole or not emas else [emas[i] for i in members],
            ema=ema,
            stochastic_params=stochastic_params,
            seed=seed,
        )


def _run_bucket(
    rule: Rule,
    group: dict[str, Any],
    batch: Batch,
    emas: list[Tensor],
    *,
    ema: float | None,
    stochastic_params: bool,
    seed: int,
) -> None:
    """The steps of :func:`~optimist.optim.eager.run_eager`, on the bucket's flat tensors."""
    states = batch.states
    t = advance([s["step"] for s in states]) if rule.has_step else 0.0
    hyper = rule.scalars(group, t, _BucketScalars(states))
    p0 = batch.params[0]
    real = _real if p0.is_complex() else _same  # (one dtype per bucket)
    params = real(batch.params)
    columns = [real(c) if c else None for c in batch.columns]
    native = all(c is None or c[0].dtype == p0.dtype for c in columns) and not (
        stochastic_params and p0.dtype in (torch.bfloat16, torch.float16)
    )
    if native or p0.is_complex():
        compute = params[0].dtype
    else:
        compute = torch.float64 if p0.dtype == torch.float64 else torch.float32
    layout = Layout(params)
    work = layout.flat(params).to(compute)
    g = layout.flat(real(batch.grads)).to(compute)
    pro = batch.prologue
    decay = pro["decay"][0] if pro["decay"] else pro["decay_all"]
    if decay != 1.0:
        work.mul_(decay)
    l2 = pro["l2"][0] if pro["l2"] else pro["l2_all"]
    g = prepare_gradient(
        g, work, pro["grad_scale"], pro["clip_value"], pro["clip_first"], pro["maximize"], l2
    )
    scales = [torch.cat(sc) if sc and c and c[0].dtype == torch.int8 else None
              for c, sc in zip(columns, batch.scales, strict=True)]  # fmt: skip
    views = [
        None if c is None else _decode(layout.flat(c), sc).to(compute)
        for c, sc in zip(columns, scales, strict=True)
    ]
    fresh = bool(batch.fresh[0]) if batch.fresh else False
    rule.eager(work, g, views, hyper, with_fresh(batch.flags, rule.fresh_flag, fresh))
    if ema is not None:
        e = layout.flat(emas)
        e.mul_(ema).add_(work.to(e.dtype), alpha=1 - ema)
        layout.write(emas, e)
    for k, (c, view) in enumerate(zip(columns, views, strict=True)):
        if c is None or view is None:
            continue
        if c[0].dtype == torch.int8:
            codes, absmax = codecs.int8_encode(view)
            layout.write(c, codes)
            torch.split_with_sizes_copy(
                absmax, [n // codecs.QUANT_BLOCK for n in layout.sizes], out=batch.scales[k]
            )
            continue
        if c[0].dtype == torch.bfloat16 and view.dtype != c[0].dtype and batch.state_stochastic:
            view = _stochastic(view, seed, batch.index, k, layout.sizes)
        layout.write(c, view)
    if stochastic_params and p0.dtype == torch.bfloat16 and compute != p0.dtype:
        work = _stochastic(work, seed, batch.index, None, layout.sizes)
    layout.write(params, work)


def _decode(flat: Tensor, scale: Tensor | None) -> Tensor:
    """A flat slot as values (int8 codes with the concatenated block scales)."""
    return flat if scale is None else codecs.int8_decode(flat, scale)


def _real(tensors: list[Tensor]) -> list[Tensor]:
    return [as_real(t) for t in tensors]


def _same(tensors: list[Tensor]) -> list[Tensor]:
    return tensors


def _stochastic(flat: Tensor, seed: int, index: Any, slot: int | None, sizes: list[int]) -> Tensor:
    """``flat`` rounded to bfloat16 with each tensor's own random bits (as tensor by tensor)."""
    seeds = [codecs.slot_seed(seed, i, slot) for i in index]
    return codecs.bf16_stochastic(flat, 0, codecs.segment_bits(seeds, sizes, flat.device))
