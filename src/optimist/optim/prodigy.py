r"""Prodigy: Adam whose step size :math:`d` estimates the distance to the solution.

With :math:`d_k` the current estimate, :math:`\eta_k = d_k\,\gamma_k` (times Adam's bias
correction with ``use_bias_correction``) and :math:`x_0` the initial weights, one step is

.. math::

    m_{k+1} &= \beta_1 m_k + (1 - \beta_1)\, d_k g_k \\
    v_{k+1} &= \beta_2 v_k + (1 - \beta_2)\, d_k^2 g_k^2 \\
    r_{k+1} &= \beta_3 r_k + \tfrac{d_k}{d_0}\eta_k \langle g_k, x_0 - x_k\rangle
        \quad\text{(a scalar, summed over every parameter)} \\
    s_{k+1} &= \beta_3 s_k + \tfrac{d_k}{d_0}\eta_k\, g_k \\
    \hat d_{k+1} &= \frac{c\, r_{k+1}}{\lVert s_{k+1}\rVert_1}, \qquad
    d_{k+1} = \min\bigl(\max(d_k, \hat d_{k+1}), \; d_k \cdot \text{growth\_rate}\bigr) \\
    x_{k+1} &= x_k - \eta_k \frac{m_{k+1}}{\sqrt{v_{k+1}} + d_{k+1}\epsilon}

Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner" (ICML 2024),
the Adam version of Prodigy (Algorithm 3, with the :math:`\beta_3`-weighted sums :math:`r, s`
above), with the conventions of the authors' ``prodigyopt`` 1.1.2, which the tests compare
against: :math:`\beta_3 = \sqrt{\beta_2}` by default; :math:`d` never decreases (``d_max``);
epsilon is scaled by the *new* :math:`d` while :math:`\eta` uses the old one; ``safeguard_warmup``
drops :math:`\gamma` from the :math:`s` weight; decoupled decay (``decouple=True``, the default)
multiplies :math:`x` by :math:`1 - \lambda\eta_k`, else :math:`\lambda x` is added to :math:`g`;
``betas[0] == 0`` steps with :math:`d_{k+1} g / (\sqrt{v} + d_{k+1}\epsilon)`. Every parameter
group shares one :math:`d` (the first group's ``betas``, ``d_coef``, ``growth_rate``,
``use_bias_correction``); groups may set ``lr`` only to the common value or 0 (frozen).

**Passes** (the engine's one-pass loop cannot finish the step before :math:`d_{k+1}` is known):

1. the global pass, before the rule: :math:`s \leftarrow \beta_3 s + w \hat g` (written, as
   ``prodigyopt``'s first loop), :math:`\langle \hat g, x_0 - x\rangle` and
   :math:`\lVert s\rVert_1` for every parameter, on the same prepared gradient
   :math:`\hat g` the rule sees (clipping, accumulation, maximize, L2 decay), summed on the host
   in float64, giving :math:`d_{k+1}`. It is one read of :math:`g, x, x_0, s` and one write of
   :math:`s` in the C++ engine (chunked sums independent of the thread count, each tensor's
   added in tensor order) where the group runs there, torch ops on the eager path
   (:meth:`Prodigy._torch_sums`: one host read per step; per tensor as prodigyopt on the CPU,
   all tensors at once on accelerators, :func:`_total_sums`).
   In the common case (state made, no int8) it runs on the engine's plan of the rule's step
   (``prodigy_plan_stats``), which the step then executes: each tensor is looked at once per
   step; otherwise over its own lists (``prodigy_stats``);
2. the rule (the C++ engine, one read of :math:`g` and one read and write of :math:`x, m, v`):
   the moments and the step with the known :math:`d_k, d_{k+1}`.

So :math:`g, x` are read twice per step (48 bytes per float32 parameter; Adam: 28).
``state_dtype`` applies to ``exp_avg``, ``exp_avg_sq`` and ``s``; with the default (None) they
are in the parameter's dtype, except float32 for float16 parameters: :math:`v \sim d^2 g^2` and
:math:`s \sim d\,\eta\, g` start near 1e-15 and 1e-12 (:math:`d_0 = 10^{-6}`), far below
float16's smallest subnormal (6e-8), so float16 state holds zeros, :math:`\lVert s\rVert_1`
loses the past steps and :math:`d` jumps (``prodigyopt`` keeps float16 state: it drifts).
:math:`\lVert s\rVert_1` is taken before :math:`s` is rounded to its storage format. ``x0``
(state key ``p0``, as ``prodigyopt``) stays in the parameter's dtype. Under
``torch.distributed`` the sums are per process (no all-reduce yet). ``prodigyopt``'s ``slice_p``
(statistics on every p-th element) and ``fsdp_in_use`` are not offered.

State keys as ``prodigyopt``: ``step``, ``exp_avg``, ``exp_avg_sq``, ``s``, ``p0``; per group
``d``, ``d0``, ``d_max``, ``d_hat``, ``d_numerator``, ``d_denom``, ``k``, so checkpoints move both
ways.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim import bucket, codecs, engine
from optimist.optim.base import (
    ParamsT,
    as_real,
    check_nonnegative,
    check_unit_interval,
    init_arguments,
    scalar,
)
from optimist.optim.distributed import global_sums, layout_key, local, local_grad
from optimist.optim.eager import prepare_gradient
from optimist.optim.engine import RuleOptimizer
from optimist.optim.gather import EMPTY_SCALE, PLAIN_TYPES, overflows_low_precision
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["PRODIGY", "Prodigy"]

_PLAIN_TYPES = frozenset(PLAIN_TYPES)
_STEP_KEY = "_prodigy_step"  # the step's global scalars, in the group copy the rule sees
_STATISTICS = frozenset({"d", "d_max", "d_hat", "d_numerator", "d_denom", "k"})


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2, beta3, d, d_new, dlr, s_weight = group[_STEP_KEY]
    wd = scalar(group["weight_decay"]) if group["decouple"] else 0.0
    return (
        beta1,
        d * (1 - beta1),
        beta2,
        d * d * (1 - beta2),
        beta3,
        s_weight,
        d_new * group["eps"],
        -dlr,
        -wd * dlr,
        -dlr * d_new,
    )


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    beta1, w1, beta2, w2, beta3, s_weight, d_eps, neg_dlr, neg_decay, neg_dlr_d = h
    m, v, _ = s  # s: updated by the global pass (Prodigy._statistics)
    if m is not None:
        m.mul_(beta1).add_(g, alpha=w1)
    v.mul_(beta2).addcmul_(g, g, value=w2)
    denom = v.sqrt().add_(d_eps)
    if neg_decay != 0.0:
        p.add_(p, alpha=neg_decay)
    if m is not None:
        p.addcdiv_(m, denom, value=neg_dlr)
    else:
        p.addcdiv_(g, denom, value=neg_dlr_d)


def _flat_sums(params: list[Tensor], ss: list[Tensor]) -> bool:
    """Whether :func:`_total_sums` gives the global pass's sums: on accelerators (where a
    ``dot`` and a ``sum`` per tensor are two launches each), for ``s`` stored in the
    parameters' dtype; the CPU keeps prodigyopt's per-tensor sums (bit for bit the authors')."""
    return (
        bool(params)
        and not params[0].is_cpu
        and all(s.dtype == x.dtype for x, s in zip(params, ss, strict=True))
    )


def _total_sums(
    params: list[Tensor],
    gs: list[Tensor],
    p0s: list[Tensor],
    ss: list[Tensor],
    beta3: float,
    weight: float,
    coef: float,
) -> tuple[float, float]:
    """``coef * sum <g, x0 - x>`` and ``sum |s'|_1`` (``s' = beta3 s + weight g`` written)
    over all the tensors in a few multi-tensor ops whatever their number, totals in float64,
    and one host read: the same sums as prodigyopt's per-tensor ones, added in another order
    (they agree to float32 rounding)."""
    products = torch._foreach_sub(p0s, params)
    torch._foreach_mul_(products, gs)
    dot = torch.cat([t.reshape(-1) for t in products]).sum(dtype=torch.float64)
    torch._foreach_mul_(ss, beta3)
    torch._foreach_add_(ss, gs, alpha=weight)  # as prodigyopt
    l1 = torch.stack(torch._foreach_norm(ss, 1)).sum(dtype=torch.float64)
    delta, norm = torch.stack([dot, l1]).tolist()
    return coef * delta, norm


def _by_layout(group: dict[str, Any]) -> list[tuple[tuple | None, dict[str, Any]]]:
    """``group`` split by how its parameters are laid out over the ranks (plain, or each
    DTensor mesh and placements): one group view each, all of them in the usual case."""
    if set(map(type, group["params"])) <= _PLAIN_TYPES:  # the usual case, in one C loop
        return [(None, group)]
    keys = [layout_key(p) for p in group["params"]]
    if len(set(keys)) <= 1:
        return [(keys[0] if keys else None, group)]
    split: dict[tuple | None, list[Tensor]] = {}
    for key, p in zip(keys, group["params"], strict=True):
        split.setdefault(key, []).append(p)
    return [(key, {**group, "params": params}) for key, params in split.items()]


def _s_weight(group: dict[str, Any], d: float, dlr: float) -> float:
    """The weight of the gradient in :math:`s` (``d / d0`` keeps it away from underflow)."""
    return (d / group["d0"]) * (d if group["safeguard_warmup"] else dlr)


PRODIGY = Rule(
    name="prodigy",
    slots=(
        Slot("exp_avg", when=lambda g: scalar(g["betas"][0]) > 0),
        Slot("exp_avg_sq"),
        Slot("s"),
    ),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (scalar(g["betas"][0]) > 0,),
    engine_decay=lambda g: not g["decouple"],  # decoupled decay is scaled by d*lr: in the rule
    group_statistics=tuple(sorted(_STATISTICS)),  # d_numerator outgrows float16's range
)


class Prodigy(RuleOptimizer):
    """Prodigy (Mishchenko & Defazio 2023), learning-rate free; see the module docstring.

    Args:
        params: parameters or param groups.
        lr: a multiplier of the estimated step size (default 1.0; leave it unless unstable).
        betas: :math:`(\\beta_1, \\beta_2)` of the Adam moments.
        beta3: decay of the :math:`d` statistics (None: :math:`\\sqrt{\\beta_2}`).
        eps: :math:`\\epsilon`, added to :math:`\\sqrt{v}` after scaling by :math:`d`.
        weight_decay: :math:`\\lambda`; decoupled (scaled by :math:`d\\gamma`) or an L2 penalty.
        decouple: AdamW-style decay (default True).
        use_bias_correction: Adam's bias correction in the step size (default False).
        safeguard_warmup: leave :math:`\\gamma` out of the :math:`s` weight (for LR warmups).
        d0: initial estimate :math:`d_0` (default 1e-6).
        d_coef: :math:`c`, multiplies the estimate (the preferred knob: 0.5-2).
        growth_rate: :math:`d` grows at most by this factor per step (default inf).
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer` (a chain's ``add_decayed_weights`` is
            refused: use ``weight_decay``).

    Example:
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = Prodigy(model.parameters())  # no learning rate to tune
    """

    extra_state = ("p0",)  # x0, the starting point (functional lists: p0s)
    rule = PRODIGY
    nonnegative = ("eps", "weight_decay", "d_coef")

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        if chain is not None and (chain.decay_before or chain.decay_after):
            raise ValueError(
                "Prodigy scales its decay by the estimated step size: pass weight_decay= "
                "(decouple=True/False) instead of add_decayed_weights in the chain"
            )
        check_nonnegative("d0", d0)
        if not d0 > 0:
            raise ValueError(f"Invalid d0: {d0} (d0 must be > 0)")
        self._step_scalars: tuple[float, ...] | None = None
        # d0 starts the step-size estimate d, its running max and d_hat; the sums start at 0
        super().__init__(
            **init_arguments(locals(), d=d0, d_max=d0, d_hat=d0, d_numerator=0.0, d_denom=0.0, k=0)
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)  # lr, betas, nonnegative, the bool flags
        if group["beta3"] is not None:
            check_unit_interval("beta3", group["beta3"])
        if not scalar(group["growth_rate"]) >= 1.0:
            raise ValueError(f"Invalid growth_rate: {group['growth_rate']} (must be >= 1)")

    def _slot_dtype(self, p: Tensor, group: dict[str, Any]) -> torch.dtype:
        """As every rule, except float32 (not float16) for float16 parameters by default: the
        moments scale with d and d^2 (v ~ d^2 g^2 ~ 1e-15 at d0 = 1e-6), below float16's
        smallest value (6e-8), so float16 state flushes them to 0."""
        if group.get("state_dtype") is None and p.dtype == torch.float16:
            return torch.float32
        return super()._slot_dtype(p, group)

    def _init_state(self, p: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        super()._init_state(p, state, group)
        if "p0" not in state:
            state["p0"] = p.detach().clone(memory_format=torch.preserve_format)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # prodigyopt stores s and p0 flattened
            for p in group["params"]:
                state = self.state.get(p, {})
                for key in ("s", "p0"):
                    value = state.get(key)
                    if key == "p0" and value is not None and value.dim() == 0:
                        value = state[key] = value.expand_as(p).clone()  # prodigyopt's zero p0
                    if value is not None and value.shape != p.shape:
                        if value.numel() != p.numel():
                            raise ValueError(
                                f"Prodigy: state {key!r} has {value.numel()} elements, the "
                                f"parameter {p.numel()} (a prodigyopt slice_p > 1 checkpoint?)"
                            )
                        state[key] = value.reshape(p.shape)

    def _prepared(self, g: Tensor, p: Tensor, grad_scale: float, group: dict[str, Any]) -> Tensor:
        """The gradient as the rule will see it (the engine's prologue, in torch ops)."""
        chain = self.chain
        l2 = 0.0 if group["decouple"] else scalar(group["weight_decay"])
        clip = chain.clip_value or 0.0
        maximize = bool(group.get("maximize"))
        return prepare_gradient(g, p, grad_scale, clip, chain.clip_first, maximize, l2)

    @torch.no_grad()
    def _global_pass(self, grad_scale: float, lr_multiplier: float) -> bool:
        self._gathered: dict[int, tuple] = {}  # this step's, for _present_states
        first = self.param_groups[0]
        beta1, beta2 = (float(scalar(b)) for b in first["betas"])
        beta3 = math.sqrt(beta2) if first["beta3"] is None else float(scalar(first["beta3"]))
        k, d, d_max, d0 = first["k"], first["d"], first["d_max"], first["d0"]
        lr = max(scalar(group["lr"]) for group in self.param_groups) * lr_multiplier
        bias_correction = 1.0
        if first["use_bias_correction"]:
            bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
        dlr = d * lr * bias_correction
        numerator = first["d_numerator"] * beta3
        parts: dict[tuple | None, tuple[Tensor, list[float]]] = {}
        for group in self.param_groups:
            group_lr = scalar(group["lr"]) * lr_multiplier
            if group_lr not in (lr, 0.0):
                raise RuntimeError(
                    "Prodigy: every param group's lr must be the common lr or 0 (frozen); got "
                    f"{[scalar(g['lr']) for g in self.param_groups]}"
                )
            if group_lr == 0.0:
                continue
            weight = _s_weight(group, d, dlr)
            coef = (d / group["d0"]) * dlr
            fast = self._statistics_fast(group, grad_scale, beta3, weight)
            if fast is not None:  # the engine's plan took every tensor: plain ones, one layout
                layouts = [(None, group, (coef * fast[0], fast[1]))]
            else:
                layouts = [
                    (key, sub, self._statistics(sub, grad_scale, beta3, weight, coef))
                    for key, sub in _by_layout(group)
                ]
            for key, subgroup, sums in layouts:
                _, (dot, norm) = parts.get(key, (None, (0.0, 0.0)))
                parts[key] = (subgroup["params"][0], [dot + sums[0], norm + sums[1]])
        delta, denom = global_sums(parts, 2)  # summed over the ranks that hold parts
        if denom == 0.0:  # no gradient yet (or all zero): nothing moves, as prodigyopt
            self._step_scalars = None
            return False
        numerator += delta
        d_hat = d
        if lr > 0.0:
            d_hat = first["d_coef"] * numerator / denom
            if d == d0:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * first["growth_rate"])
        self._step_scalars = (beta1, beta2, beta3, first["d"], d, dlr)
        for group in self.param_groups:
            group.update(d_numerator=numerator, d_denom=denom, d=d, d_max=d_max, d_hat=d_hat)
            group["k"] += 1
        return True

    def _statistics(
        self, group: dict[str, Any], grad_scale: float, beta3: float, weight: float, coef: float
    ) -> tuple[float, float]:
        """Over the group's parameters with a gradient: the sums of ``coef <g, x0 - x>`` and of
        ``|s'|_1`` with ``s' = beta3 s + weight g`` written to ``s`` (as prodigyopt's first loop;
        the rule leaves ``s`` alone), on the gradient the rule will see; in the C++ engine where
        the group runs there, else in torch ops (in prodigyopt's order of operations). (The
        common case, :meth:`_statistics_fast`, is tried first by the caller.)"""
        params, grads, p0s, ss, scales = [], [], [], [], []
        states = self.state
        for p in group["params"]:
            grad = self._gradient(p)
            if grad is None:
                continue
            if grad.is_sparse:
                self._check_sparse(grad, type(self).__name__)
            state = states[p]
            if "p0" not in state or "step" not in state:
                self._init_state(p, state, group)
            params.append(p)
            grads.append(grad)
            p0s.append(state["p0"])
            ss.append(state["s"])
            scales.append(state.get("s_absmax"))
        if not params:
            return 0.0, 0.0
        if layout_key(params[0]) is not None:  # DTensors (one layout): their local shards
            grads = [local_grad(g, p) for g, p in zip(grads, params, strict=True)]
            params, p0s, ss = ([local(t) for t in ts] for ts in (params, p0s, ss))
        if any(p.is_complex() for p in params):
            params, grads, p0s, ss = ([as_real(t) for t in ts] for ts in (params, grads, p0s, ss))
        stochastic = group.get("state_dtype") == "bfloat16"
        plain = all(type(p) in PLAIN_TYPES for p in params)
        if plain and self._implementation(group, params) == "fused":
            any_int8 = any(sc is not None for sc in scales)
            int8_scales = [EMPTY_SCALE if sc is None else sc for sc in scales] if any_int8 else []
            sums = self._engine_sums(
                group, params, grads, p0s, ss, int8_scales, grad_scale, beta3, weight
            )
            if sums is not None:
                return coef * sums[0], sums[1]
        gs = [self._prepared(g, x, grad_scale, group) for g, x in zip(grads, params, strict=True)]
        return self._torch_sums(params, gs, p0s, ss, scales, beta3, weight, coef, stochastic)

    def _torch_sums(
        self,
        params: list[Tensor],
        gs: list[Tensor],
        p0s: list[Tensor],
        ss: list[Tensor],
        scales: list[Tensor | None],
        beta3: float,
        weight: float,
        coef: float,
        stochastic: bool,
    ) -> tuple[float, float]:
        """:meth:`_statistics`' sums in torch ops, on the prepared gradients ``gs``: each
        tensor's ``<g, x0 - x>`` and ``|s'|_1`` as prodigyopt computes them (one ``torch.dot``
        and one ``sum`` per tensor, so the sums stay bit for bit the authors'), the rest over
        the lists (``torch._foreach_*``: ``s' = beta3 s + weight g`` for the slots stored in
        the parameter's dtype) and **one** read by the host for all the tensors' values,
        summed there in tensor order as prodigyopt's loop (which reads each twice). On
        accelerators :func:`_total_sums` instead (:func:`_flat_sums`)."""
        if _flat_sums(params, ss):
            return _total_sums(params, gs, p0s, ss, beta3, weight, coef)
        diffs = torch._foreach_sub(p0s, params)
        dots = [torch.dot(g.flatten(), d.flatten()) for g, d in zip(gs, diffs, strict=True)]
        same = [i for i, (x, s) in enumerate(zip(params, ss, strict=True)) if s.dtype == x.dtype]
        norms: list[Tensor | None] = [None] * len(params)
        if same:
            mine = [ss[i] for i in same]
            torch._foreach_mul_(mine, beta3)
            torch._foreach_add_(mine, [gs[i] for i in same], alpha=weight)  # as prodigyopt
            for i, a in zip(same, torch._foreach_abs(mine), strict=True):
                norms[i] = a.sum()
        for i, (x, g, s, scale) in enumerate(zip(params, gs, ss, scales, strict=True)):
            if norms[i] is not None:
                continue
            compute = torch.float64 if x.dtype == torch.float64 else torch.float32
            value = codecs.decode(s, scale, compute).reshape(x.shape).mul_(beta3)
            norms[i] = value.add_(g.to(compute), alpha=weight).abs().sum()
            seed = codecs.slot_seed(self._seed(), i, 2)  # the engine's (its rule's slot 2)
            codecs.encode(value, s, scale, stochastic=stochastic, seed=seed)
        values = bucket.host_values([*dots, *norms])
        delta = norm = 0.0
        for dot, l1 in zip(values[: len(dots)], values[len(dots) :], strict=True):
            delta += coef * dot
            norm += l1
        return delta, norm

    def _statistics_fast(
        self, group: dict[str, Any], grad_scale: float, beta3: float, weight: float
    ) -> tuple[float, float] | None:
        """:meth:`_statistics`' sums (``<g, x0 - x>`` unscaled) in the common case: the engine's
        plan of the rule's step (:meth:`_gather_fast`: tensors the C++ engine takes, state made,
        no int8 state) feeds the pass, and is handed to the step of the same group, so each
        tensor is gathered, converted and checked once per step. None otherwise: the general
        loop then runs."""
        gathered = self._gather_fast(group, self._slots(group))
        if gathered is None:
            return None
        states, plan = gathered[3], gathered[-1]
        try:
            p0s = [s["p0"] for s in states]
        except KeyError:  # state to make: the general loop
            return None
        sums = engine.load().prodigy_plan_stats(
            plan, p0s, beta3, weight, grad_scale, *self._prologue(group), self._seed()
        )
        self._gathered[id(group["params"])] = (group["params"], gathered)
        return sums

    def _prologue(self, group: dict[str, Any]) -> tuple[float, bool, bool, float]:
        """The engine's prologue of the global pass: clip value, clip first, maximize, L2."""
        l2 = 0.0 if group["decouple"] else float(scalar(group["weight_decay"]))
        chain = self.chain
        return chain.clip_value or 0.0, chain.clip_first, bool(group.get("maximize")), l2

    def _engine_sums(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        p0s: list[Tensor],
        ss: list[Tensor],
        scales: list[Tensor],
        grad_scale: float,
        beta3: float,
        weight: float,
    ) -> tuple[float, float] | None:
        """``prodigy_stats`` in the C++ engine: the sums of ``<g, x0 - x>`` (unscaled) and of
        ``|s'|_1``, writing ``s'`` to ``s``; None where the engine refuses the tensors (it checks
        layouts, dtypes and subclasses such as DTensor before it writes anything)."""
        try:
            return engine.load().prodigy_stats(
                params, grads, p0s, ss, scales, beta3, weight, grad_scale,
                *self._prologue(group), group.get("state_dtype") == "bfloat16", self._seed(),
            )  # fmt: skip
        except RuntimeError:
            return None

    def _gather_fast(self, group: dict[str, Any], slots: list[tuple[int, str, str]]) -> Any:
        """The step's gather: the one the global pass made and planned (the group's d and
        statistics changed since, so the float16 range check runs again), else anew."""
        handed = self.__dict__.get("_gathered", {}).pop(id(group["params"]), None)
        if handed is not None and handed[0] is group["params"]:
            originals = handed[1][0]
            if not overflows_low_precision(group, originals, self.rule.group_statistics):
                return handed[1]
        return super()._gather_fast(group, slots)

    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        if self._step_scalars is None or scalar(group["lr"]) == 0.0:
            return False
        beta1, beta2, beta3, d, d_new, dlr = self._step_scalars
        weight = _s_weight(group, d, dlr)
        # the rule reads the step's scalars from _STEP_KEY
        view = {**group, _STEP_KEY: (beta1, beta2, beta3, d, d_new, dlr, weight)}
        return super()._step_group(view, grad_scale=grad_scale, lr_multiplier=lr_multiplier)
