"""Curvature refreshes inside the training loop, for optimizers with ``update_hessian()``.

SophiaG (Liu et al. 2023, Algorithm 3) keeps a diagonal curvature estimate ``h`` that its
steps divide by; the optimizer never refreshes it by itself. Every ``k`` steps (the optimizer's
``hessian_interval``, 10 as the authors) the loop refreshes it with the Gauss-Newton-Bartlett
estimator (Algorithm 2), as the authors' training script does right after that step:

1. forward the current batch again (train mode, the updated weights),
2. sample labels ``y_hat`` from the model's own output distribution (``softmax`` for the
   categorical cross-entropies, Bernoulli for the binary one),
3. ``backward`` of the mean loss on ``y_hat`` (no sample or class weights, no regularizers),
4. set every group's ``bs`` to the number of terms in that mean (the ``B`` of the estimate
   ``B * g_hat**2``; the authors pass it to every ``step``), ``update_hessian()``,
   ``zero_grad()``.

Other losses have no output distribution to sample from: the loop warns once and the estimate
stays at its start (then SophiaG's update is its clipped sign momentum).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from optimist.training import losses as _losses

DEFAULT_INTERVAL = 10
_WARNED = "_optimist_curvature_warned"


class CurvatureRefresh:
    """Refreshes ``optimizer``'s curvature estimate every ``every`` steps of the loop."""

    def __init__(self, optimizer: Any, loss: _losses.Loss, fold: str | None, every: int) -> None:
        self.optimizer = optimizer
        self.every = every
        self.sigmoid = isinstance(loss, _losses.BinaryCrossentropy)
        self.logits = bool(fold) or loss.from_logits

    @classmethod
    def for_optimizer(
        cls, optimizer: Any, loss: _losses.Loss | None, fold: str | None
    ) -> CurvatureRefresh | None:
        """The refresh for an optimizer with ``update_hessian()``, else ``None``."""
        if optimizer is None or not callable(getattr(optimizer, "update_hessian", None)):
            return None
        every = getattr(optimizer, "hessian_interval", DEFAULT_INTERVAL)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"`hessian_interval` must be an int >= 1 (steps between curvature refreshes). "
                f"Received: hessian_interval={every!r}"
            )
        softmax = (_losses.CategoricalCrossentropy, _losses.SparseCategoricalCrossentropy)
        if type(loss) in (*softmax, _losses.BinaryCrossentropy):
            return cls(optimizer, loss, fold, every)
        if not optimizer.__dict__.get(_WARNED):
            optimizer.__dict__[_WARNED] = True
            warnings.warn(
                f"{type(optimizer).__name__}.update_hessian() needs labels sampled from the "
                f"model's output distribution, which only the cross-entropy losses have "
                f"(categorical, sparse categorical, binary); with {loss!r} fit does not refresh "
                f"it and the curvature estimate stays at its start",
                RuntimeWarning,
                stacklevel=4,
            )
        return None

    def after_step(self, forward: Callable[..., torch.Tensor], xb: Any) -> None:
        """Called after each update with the batch it used; refreshes after every
        ``every``-th update of the optimizer (counted over epochs and fits: ``iterations``)."""
        if int(self.optimizer.iterations) % self.every:
            return
        opt = self.optimizer
        opt.zero_grad()
        out = forward(*xb) if isinstance(xb, tuple) else forward(xb)
        if self.sigmoid:
            dist = torch.distributions.Bernoulli(
                logits=out.detach() if self.logits else None,
                probs=None if self.logits else out.detach().clamp(0.0, 1.0),
            )
            y_hat = dist.sample()
            loss = _losses.BinaryCrossentropy()(y_hat, out, None, self.logits)
            terms = out.numel()
        else:
            dist = torch.distributions.Categorical(
                logits=out.detach() if self.logits else None,
                probs=None if self.logits else out.detach(),
            )
            y_hat = dist.sample()
            loss = _losses.SparseCategoricalCrossentropy()(y_hat, out, None, self.logits)
            terms = y_hat.numel()
        loss.backward()
        for group in opt.param_groups:
            if "bs" in group:
                group["bs"] = terms
        opt.update_hessian()
        opt.zero_grad()
