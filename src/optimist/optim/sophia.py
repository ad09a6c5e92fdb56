r"""Sophia (SophiaG): sign momentum clipped by a diagonal Gauss-Newton curvature estimate.

.. math::

    \theta_t &\leftarrow \theta_{t-1}(1 - \eta\lambda) \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
    h_t &\leftarrow \beta_2 h_{t-k} + (1 - \beta_2)\, \hat g \odot \hat g
        \quad\text{(every } k \text{ steps, :meth:`SophiaG.update_hessian`)} \\
    \theta_t &\leftarrow \theta_t - \eta\,\operatorname{sign}(m_t)
        \min\Bigl(\frac{|m_t|}{D_t}, 1\Bigr), \quad
        D_t = \rho\, B\, h_t + \epsilon \text{ (``add'') or } \max(\rho\, B\, h_t, \epsilon)
        \text{ (``max'')}

Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
Model Pre-training" (ICLR 2024), Algorithm 3 with the Gauss-Newton-Bartlett estimator of
Algorithm 2: :math:`\hat g` is the gradient of the loss on labels *sampled from the model's own
output distribution*, and :math:`B\,\hat g\odot\hat g` estimates the diagonal of the Gauss-Newton
matrix (B: the batch size, ``bs``).

**Why SophiaG, not SophiaH.** The GNB estimate needs one extra ordinary backward pass, no
Hessian-vector product (Hutchinson's estimator, SophiaH and Optax's ``contrib.sophia``, needs
``create_graph=True`` and a second differentiation, which many models and fused kernels do not
support), it is the variant the paper recommends and reports best, and the authors' code
(``sophia-opt`` 0.2.2, which the tests compare against) is SophiaG. The Hessian step reads the
gradients like any step, so it runs on the engine with its codecs and ``state_dtype``.

Conventions follow the authors' code: :math:`\rho` multiplies :math:`B h` (their ``rho=0.04``,
``bs=5120``; the paper's :math:`\gamma` is :math:`\rho B`); decoupled weight decay before the
update (default 0.1); ``lr=1e-4, betas=(0.965, 0.99)``.

**Where epsilon sits** (``eps_form``). The paper and the authors' code disagree:

* ``eps_form="add"`` (the default; the authors' code, ``sophia-opt``):
  :math:`\operatorname{sign}(m)\min(|m|/(\rho B h + \epsilon), 1)`, :math:`\epsilon = 10^{-15}`
  added to the denominator;
* ``eps_form="max"`` (the paper, Algorithm 3's update
  :math:`\theta \leftarrow \theta - \eta_t\operatorname{clip}(m_t/\max(\gamma h_t, \epsilon), 1)`;
  also Optax's ``optax.contrib.sophia``): :math:`\operatorname{sign}(m)\min(|m|/\max(\rho B h,
  \epsilon), 1)`, :math:`\epsilon` a floor of the denominator.

The two differ by a relative :math:`\epsilon/(\rho B h)`, so visibly only where :math:`\rho B h`
is near :math:`\epsilon` or below it (at the default ``eps=1e-15``, hardly ever; Optax's default
``eps`` is ``1e-8``, a floor).

Usage, as theirs::

    for step, (x, y) in enumerate(loader):
        loss = loss_fn(model(x), y); loss.backward()
        opt.step(); opt.zero_grad()
        if step % k == k - 1:  # k = 10 in the paper
            logits = model(x)
            y_hat = torch.distributions.Categorical(logits=logits).sample()
            loss_fn(logits, y_hat).backward()  # mean over the batch, as the paper
            opt.update_hessian(); opt.zero_grad()

State keys as theirs: ``exp_avg``, ``hessian`` (no ``step``: the rule does not use it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from optimist.optim.base import ParamsT, check_choice, init_arguments, scalar
from optimist.optim.engine import RuleOptimizer
from optimist.optim.rule import Rule, ScalarState, Slot
from optimist.optim.transforms import ChainConfig

__all__ = ["EPS_FORMS", "SOPHIA_G", "SophiaG"]

_HESSIAN = "_sophia_hessian_step"  # set in the group view of an update_hessian() call
_RHO_BS = "_sophia_rho_bs"  # rho * bs, in the group view the rule sees
#: The accepted ``eps_form`` values: epsilon added to the denominator (the authors' code) or the
#: denominator's floor (the paper's Algorithm 3, Optax).
EPS_FORMS = ("add", "max")


def _scalars(group: Any, t: float, _: ScalarState) -> tuple[float, ...]:
    beta1, beta2 = (scalar(b) for b in group["betas"])
    if group.get(_HESSIAN):
        return (beta2, 1 - beta2)
    return (beta1, 1 - beta1, group[_RHO_BS], group["eps"], -scalar(group["lr"]))


def _eager(p: Tensor, g: Tensor, s: list, h: Sequence[float], flags: Sequence[bool]) -> None:
    m, hess = s
    if flags[0]:  # update_hessian(): h = b2 h + (1 - b2) g^2
        beta2, one_minus_beta2 = h
        hess.mul_(beta2).addcmul_(g, g, value=one_minus_beta2)
        return
    beta1, one_minus_beta1, rho_bs, eps, neg_lr = h
    m.mul_(beta1).add_(g, alpha=one_minus_beta1)
    scaled = rho_bs * hess
    denominator = scaled.clamp_(min=eps) if flags[1] else scaled.add_(eps)  # "max" / "add"
    ratio = (m.abs() / denominator).clamp(None, 1)
    p.addcmul_(m.sign(), ratio, value=neg_lr)


SOPHIA_G = Rule(
    name="sophia_g",
    slots=(Slot("exp_avg"), Slot("hessian")),
    scalars=_scalars,
    eager=_eager,
    flags=lambda g: (bool(g.get(_HESSIAN)), g.get("eps_form", "add") == "max"),
    decoupled=lambda g: True,
    has_step=False,
    group_statistics=("bs",),  # a batch size above 65504 is not one torch would refuse
)


class SophiaG(RuleOptimizer):
    """SophiaG (Liu et al. 2023), with the authors' API; see the module docstring.

    Args:
        params: parameters or param groups.
        lr: learning rate :math:`\\eta` (default 1e-4).
        betas: :math:`(\\beta_1, \\beta_2)`: momentum and curvature EMA decays.
        rho: :math:`\\rho`, the clipping scale (default 0.04).
        weight_decay: :math:`\\lambda`, decoupled (scaled by ``lr``; default 0.1).
        bs: :math:`B`, the batch size the GNB estimate is scaled by (default 5120, theirs;
            their ``step(bs=...)`` argument).
        eps: :math:`\\epsilon` (default 1e-15): added to the denominator, or its floor with
            ``eps_form="max"``.
        eps_form: where :math:`\\epsilon` sits: ``"add"`` (default, the authors' code)
            :math:`\\rho B h + \\epsilon`, or ``"max"`` (the paper's Algorithm 3, Optax)
            :math:`\\max(\\rho B h, \\epsilon)`; see the module docstring.
        maximize, foreach, fused, skip_nonfinite, state_dtype, stochastic_params, chain: see
            :class:`~optimist.optim.engine.RuleOptimizer`.
    """

    rule = SOPHIA_G
    nonnegative = ("rho", "weight_decay", "eps")
    examples = ({}, {"lr": 0.01, "eps": 1e-3, "eps_form": "max"})
    #: Steps between two :meth:`update_hessian` calls (``k``, 10 in the paper). ``Model.fit``
    #: (and so ``optimist compare``) refreshes the estimate on this interval; set it on the
    #: instance (``opt.hessian_interval = 5``) to change it.
    hessian_interval: int = 10

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.965, 0.99),
        rho: float = 0.04,
        weight_decay: float = 0.1,
        bs: int = 5120,
        eps: float = 1e-15,
        *,
        eps_form: str = "add",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = False,
        state_dtype: str | None = None,
        stochastic_params: bool = False,
        chain: ChainConfig | None = None,
    ) -> None:
        super().__init__(**init_arguments(locals()))

    def _check_group(self, group: dict[str, Any]) -> None:
        self._check_common(group)
        if not scalar(group["bs"]) > 0:
            raise ValueError(f"Invalid bs: {group['bs']} (bs, the batch size, must be > 0)")
        why = (
            ": eps added to rho * bs * h, the authors' code, or max(rho * bs * h, eps), the "
            "paper's Algorithm 3"
        )
        check_choice("eps_form", group.get("eps_form", "add"), EPS_FORMS, why)

    @torch.no_grad()
    def update_hessian(self) -> None:
        """Fold the current gradients into the curvature EMA: :math:`h \\leftarrow \\beta_2 h
        + (1 - \\beta_2) g \\odot g` (Algorithm 2's GNB estimate when the gradients come from
        sampled labels; see the module docstring). Parameters, momentum and the chain's
        transforms (clipping, accumulation, EMA) are left alone: the raw ``p.grad`` is read.
        With ``skip_nonfinite``, gradients holding a NaN or inf (on any rank) leave the
        estimate as it is (not counted in :attr:`skipped_steps`, which counts steps).
        """
        chain = self.chain
        self.chain = ChainConfig()
        try:
            if self.skip_nonfinite and not self._pass0()[1]:
                return
            for group in self.param_groups:
                self._step_group({**group, _HESSIAN: True, "weight_decay": 0.0})
        finally:
            self.chain = chain

    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        view = {**group, _RHO_BS: scalar(group["rho"]) * scalar(group["bs"])}  # the rule's input
        return super()._step_group(view, grad_scale=grad_scale, lr_multiplier=lr_multiplier)
