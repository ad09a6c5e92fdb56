r"""Muon: momentum orthogonalised by Newton-Schulz, for weight matrices; AdamW for the rest.

For every parameter with two or more dimensions (flattened to ``(shape[0], -1)``):

.. math::

    B_t &\leftarrow \mu B_{t-1} + (1 - \mu) g_t \quad(\text{torch's } \texttt{lerp}) \\
    \tilde B_t &\leftarrow g_t + \mu (B_t - g_t) \text{ (Nesterov) or } B_t \\
    O_t &\leftarrow \mathrm{NS}^{(a,b,c)}_k(\tilde B_t / \max(\lVert\tilde B_t\rVert_F, \epsilon))
        \quad\text{in bfloat16} \\
    \theta_t &\leftarrow \theta_{t-1}(1 - \gamma\lambda) - \gamma\,s(\text{shape})\,O_t

Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024), as
``torch.optim.Muon`` (torch 2.13) computes it: same arguments, defaults, state key
(``momentum_buffer``) and results (tested bit for bit; and against ``optimist.reference.muon`` in
float64 with ``ns_dtype=None``); ``adjust_lr_fn`` ``None``/"original"
scales by :math:`\sqrt{\max(1, A/B)}`, "match_rms_adamw" by :math:`0.2\sqrt{\max(A, B)}` (Liu et
al. 2025). Beyond torch's (which rejects them): parameters of rank < 2 (biases, norms) are
stepped by AdamW (optimist's engine rule) inside the same optimizer, with ``adamw_lr``,
``adamw_betas``, ``adamw_eps``, ``adamw_weight_decay``, in param groups of their own
(``use_muon=False``; put embeddings and the output head in such a group too, Muon is meant for
hidden layers); parameters of rank > 2 (convolutions) are orthogonalised as ``(shape[0], -1)``
matrices.

Storage and batching. The momentum buffer is element-wise state: it is stored as
``state_dtype`` asks (None: the parameter's dtype, as torch; "float32", "bfloat16" with
stochastic rounding, or block-wise "int8", :mod:`optimist.optim.codecs`), updated in float32
when stored otherwise than the parameter. Newton-Schulz runs on the stacked ``(B, m, n)`` batch
of a group's matrices of equal shape (one batched matmul per iteration instead of ``B``; bit for
bit the per-matrix result, tested; on the CPU only for matrices of at most 2^15 elements, where
it wins, :func:`_ns_batches`), in ``ns_dtype`` (torch's bfloat16 by default; None: the
update's own dtype, e.g. float64 for the NumPy reference tests). It is not ``torch.compile``d:
measured with ``benchmarks/matrix_speed.py --compile`` on CPU, the compiled iteration was 1%
slower once and 9% faster once (6-16 s to compile, per distinct shape): no clear win. The
engine's transforms other than gradient scaling (clipping, accumulation, schedules) do not
reach the Muon groups.

Distributed: under ``ZeroRedundancyOptimizer`` each matrix is whole on one rank (give Muon its
groups with ``use_muon`` set: ZeRO keeps the groups it was given, and Muon would split a mixed
one). Under FSDP2 (DTensor parameters) the momentum buffer is a DTensor sharded like the
parameter and the momentum update runs on the shards; :meth:`Muon._full_matrix` all-gathers the
update, Newton-Schulz runs on the whole matrix on every rank, and :meth:`Muon._local_update`
keeps each rank's own rows: the result of one process, for one all-gather and the whole
iteration per rank (:mod:`optimist.optim.distributed`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optimist.optim import bucket, codecs
from optimist.optim.adam import ADAM
from optimist.optim.base import ParamsT, check_flag, check_nonnegative, scalar
from optimist.optim.distributed import full, is_dtensor, like, shard_of
from optimist.optim.engine import RuleOptimizer
from optimist.optim.tensorwise import new_slot, read_slot, write_slot
from optimist.optim.transforms import ChainConfig

__all__ = ["Muon", "newton_schulz"]


_NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def newton_schulz(
    g: Tensor,
    coefficients: tuple[float, float, float],
    steps: int,
    eps: float,
    dtype: torch.dtype | None = torch.bfloat16,
) -> Tensor:
    """The quintic Newton-Schulz iteration of ``torch.optim.Muon`` on a matrix ``(m, n)`` or a
    batch of them ``(B, m, n)``, in ``dtype`` (bfloat16 as torch; None: ``g``'s dtype)."""
    a, b, c = coefficients
    x = g if dtype is None else g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    matrix = x.dim() == 2
    for _ in range(steps):
        gram = x @ x.mT
        if matrix:
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        else:
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


#: On the CPU, matrices of more elements than this run Newton-Schulz one by one: torch's 2-D
#: bfloat16 matmul is faster than its batched one there (one thread, 5 iterations: 256 x 1024
#: 14.6 ms a matrix alone, 18.6 batched by 4; 2048 x 512 28.0 against 37.1; 256 x 256 about
#: even, and matrix_speed's "small" set 10% slower batched by 16), while small ones gain (128 x
#: 128 6.1 ms for 16 alone, 2.8 batched; 64 x 64 4.0 against 0.6), and a stack of large ones
#: makes temporaries above glibc's mmap threshold that page-fault on every step.
CPU_NS_BATCH_MATRIX_MAX = 1 << 15
#: The most elements of one Newton-Schulz batch on the CPU (its temporaries stay heap memory).
CPU_NS_BATCH_MAX = 1 << 22


def _ns_batches(batch: list[tuple[Tensor, Tensor]]) -> list[list[tuple[Tensor, Tensor]]]:
    """Equal-shape matrices cut into Newton-Schulz batches: on the CPU one by one above
    :data:`CPU_NS_BATCH_MATRIX_MAX` elements, else at most :data:`CPU_NS_BATCH_MAX` elements
    a batch; whole elsewhere. Bitwise the same result either way (module docstring)."""
    matrix = batch[0][1]
    if matrix.device.type != "cpu":
        return [batch]
    if matrix.numel() > CPU_NS_BATCH_MATRIX_MAX:
        return [[one] for one in batch]
    chunks = bucket.by_size([m.numel() for _, m in batch], limit=CPU_NS_BATCH_MAX)
    return [[batch[i] for i in chunk] for chunk in chunks]


def _lr_scale(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    rows, cols = shape[0], math.prod(shape[1:])
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return math.sqrt(max(1, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))  # "match_rms_adamw"


class Muon(RuleOptimizer):
    """Muon with an AdamW fallback (see the module docstring); torch.optim.Muon's arguments.

    Args:
        params: parameters or param groups (a group may set ``use_muon`` True/False; by
            default parameters of rank >= 2 use Muon, the others AdamW).
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn:
            as ``torch.optim.Muon`` (defaults 1e-3, 0.1, 0.95, True, (3.4445, -4.775, 2.0315),
            1e-7, 5, None).
        ns_dtype: Newton-Schulz's precision: "bfloat16" (torch's; default), "float32",
            "float64", or None (the update's dtype).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW fallback's settings
            (defaults 1e-3, (0.9, 0.95), 1e-8, 0.1).
        skip_nonfinite, state_dtype, chain: see :class:`~optimist.optim.engine.RuleOptimizer`
            (``state_dtype`` stores the momentum buffer and the AdamW moments).
    """

    rule = ADAM  # the fallback's rule; Muon groups are stepped by _step_group below
    extra_state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: str | None = "bfloat16",
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.1,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        chain: ChainConfig | None = None,
    ) -> None:
        muon = dict(lr=lr, weight_decay=weight_decay, eps=eps)
        adamw = dict(lr=adamw_lr, weight_decay=adamw_weight_decay, eps=adamw_eps)
        groups = []
        given = list(params)
        if given and not isinstance(given[0], dict):
            given = [{"params": given}]
        for group in given:
            ps = list(group["params"])
            if "use_muon" in group:
                groups.append({**(muon if group["use_muon"] else adamw), **group, "params": ps})
                continue
            for use in (True, False):
                part = [p for p in ps if (p.ndim >= 2) == use]
                if part:
                    settings = muon if use else adamw
                    groups.append({**settings, **group, "params": part, "use_muon": use})
        defaults = dict(
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
            betas=adamw_betas,
            amsgrad=False,
            decoupled_weight_decay=True,
            maximize=False,
            foreach=None,
            fused=None,
            use_muon=False,
            **adamw,
        )
        super().__init__(
            groups, defaults, skip_nonfinite=skip_nonfinite, state_dtype=state_dtype, chain=chain
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        check_nonnegative("weight_decay", group["weight_decay"])
        check_nonnegative("eps", group["eps"])
        check_nonnegative("momentum", group["momentum"])
        check_flag("nesterov", group["nesterov"])
        check_flag("use_muon", group["use_muon"])
        if group["adjust_lr_fn"] not in (None, "original", "match_rms_adamw"):
            raise ValueError(
                f"Invalid adjust_lr_fn: {group['adjust_lr_fn']!r} "
                "(None, 'original' or 'match_rms_adamw')"
            )
        steps = group["ns_steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps < 100:
            raise ValueError(f"Invalid ns_steps: {steps!r} (an integer in [0, 100))")
        if group.get("ns_dtype", "bfloat16") not in (None, *_NS_DTYPES):
            raise ValueError(
                f"Invalid ns_dtype: {group['ns_dtype']!r} (None, 'bfloat16', 'float32' or "
                "'float64')"
            )
        if len(group["ns_coefficients"]) != 3:
            raise ValueError(f"Invalid ns_coefficients: {group['ns_coefficients']!r} (3 numbers)")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a torch.optim.Muon checkpoint has no ``use_muon``: its groups stay Muon groups
        own = [group["use_muon"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, saved, use in zip(
            self.param_groups, state_dict["param_groups"], own, strict=False
        ):
            if "use_muon" not in saved:
                group["use_muon"] = use

    # --- the matrix a parameter's update is orthogonalised as, and back ----------------------

    def _full_matrix(self, p: Tensor, update: Tensor) -> Tensor:
        """The whole ``(shape[0], -1)`` matrix of ``p``'s update (a DTensor's shards gathered)."""
        return full(update).reshape(update.shape[0], -1)

    def _local_update(self, p: Tensor, ortho: Tensor) -> Tensor:
        """The orthogonalised matrix as the tensor to add to ``p`` (a DTensor: its own rows)."""
        return like(p, shard_of(ortho.reshape(p.shape), p))

    @torch.no_grad()
    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        if not group["use_muon"]:
            return super()._step_group(group, grad_scale=grad_scale, lr_multiplier=lr_multiplier)
        lr = scalar(group["lr"]) * lr_multiplier
        wd, mu = scalar(group["weight_decay"]), scalar(group["momentum"])
        state_dtype = group.get("state_dtype")
        ns_dtype = group.get("ns_dtype", "bfloat16")
        seed = self._seed()
        batches: dict[tuple[Any, ...], list[tuple[Tensor, Tensor]]] = {}
        for index, p in enumerate(group["params"]):
            g = self._gradient(p)
            if g is None:
                continue
            if p.is_complex() or g.is_sparse:
                raise RuntimeError("Muon does not support complex parameters or sparse gradients")
            if grad_scale != 1.0:
                g = g * grad_scale
            if is_dtensor(p) and codecs.storage_dtype(state_dtype, p) != p.dtype:
                raise RuntimeError(
                    f"Muon's state_dtype={state_dtype!r} is not supported for DTensor (FSDP2) "
                    "parameters yet; use state_dtype=None there"
                )
            state = self.state[p]
            if "momentum_buffer" not in state:
                new_slot(p, state, "momentum_buffer", state_dtype)
            buf = read_slot(p, state, "momentum_buffer", state_dtype)
            g = g.to(buf.dtype)
            buf.lerp_(g, 1 - mu)
            write_slot(
                state,
                "momentum_buffer",
                buf,
                stochastic=state_dtype == "bfloat16",
                seed=codecs.slot_seed(seed, index, 0),
            )
            update = g.lerp(buf, mu) if group["nesterov"] else buf
            matrix = self._full_matrix(p, update)
            key = (matrix.shape, matrix.dtype, matrix.device)
            batches.setdefault(key, []).append((p, matrix))
        for whole_batch in batches.values():
            for batch in _ns_batches(whole_batch):
                self._orthogonalise_and_apply(group, batch, lr, wd, ns_dtype)
        return bool(batches)

    def _orthogonalise_and_apply(
        self,
        group: dict[str, Any],
        batch: list[tuple[Tensor, Tensor]],
        lr: float,
        wd: float,
        ns_dtype: str | None,
    ) -> None:
        """Newton-Schulz on the batch's stacked matrices, then each parameter's decay and
        update."""
        stacked = torch.stack([m for _, m in batch]) if len(batch) > 1 else batch[0][1]
        ortho = newton_schulz(
            stacked,
            group["ns_coefficients"],
            group["ns_steps"],
            group["eps"],
            None if ns_dtype is None else _NS_DTYPES[ns_dtype],
        )
        for k, (p, _) in enumerate(batch):
            p.mul_(1 - lr * wd)
            p.add_(
                self._local_update(p, ortho[k] if len(batch) > 1 else ortho),
                alpha=-lr * _lr_scale(group["adjust_lr_fn"], p.shape),
            )
