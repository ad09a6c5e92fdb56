"""Keras 3's ``Muon`` on the Keras-style surface: ``optimist.optimizers.Muon(...)``.

Keras' Muon steps each weight matrix by Muon (momentum orthogonalised by Newton-Schulz) and
every other variable by its own AdamW; it runs here on ``optimist.optim.Muon`` (torch's Muon
with an AdamW fallback in the same optimizer), one param group per branch, with hooks where
Keras' rule differs from torch's:

================  ==============================================================================
Keras             how ``optim.Muon`` is driven
================  ==============================================================================
which branch      Keras' ``_should_use_adamw`` on the parameter's Keras path (below): rank != 2,
                  ``"embedding"`` in the lowercased path (``exclude_embeddings``), or a regex of
                  ``exclude_layers`` found in the path (``re.search``) -> an AdamW group
                  (``use_muon=False``); any other matrix -> a Muon group. So convolutions
                  (rank 3+) take AdamW, as in Keras (torch's Muon would flatten them).
momentum          Keras ``m = momentum*m + g`` (Nesterov: ``g + momentum*m``), torch
                  ``b = lerp(b, g, 1 - momentum)``: torch's buffer and Nesterov update are
                  ``(1 - momentum)`` times Keras'. Newton-Schulz normalises its input, so only
                  the normalisation's epsilon sees the factor (next row); hence momentum < 1.
normalisation     Keras ``x / (||x||_F + 1e-7)``, torch ``x / max(||x||_F, eps)``:
                  :meth:`_MuonForKeras._full_matrix` divides torch's matrix by
                  ``||x||_F + (1 - momentum)*1e-7`` (Keras' exact quotient) and torch's ``eps``
                  is 1, so torch's own division (by ``max(norm < 1, 1)``) leaves it as it is.
Newton-Schulz     the same quintic on the matrix made wide (``ns_dtype=None``: float32, as
                  Keras; torch's default is bfloat16), coefficients ``(muon_a, muon_b,
                  muon_c)``. optimist's Dense stores torch's ``(out, in)`` weight, Keras the
                  ``(in, out)`` kernel: both become the same wide matrix, so the update is
                  Keras' transposed, as the weight is.
rms_rate          Keras scales by ``rms_rate*sqrt(max(n, m))``, torch's
                  ``adjust_lr_fn="match_rms_adamw"`` by ``0.2*sqrt(max(n, m))`` (symmetric in
                  the transpose): a Muon group's step takes ``lr * rms_rate / 0.2``
                  (``rms_rate=None``: ``lr / (0.2*sqrt(max(n, m)))``, one group per size).
AdamW branch      torch's Adam rule: Keras adds epsilon to ``sqrt(v)`` before bias correction,
                  so torch's ``eps`` is set each step to ``epsilon / sqrt(1 - adam_beta_2^t)``
                  (as :class:`~optimist.training.optimizers.Adam`); the group's step takes
                  ``lr * adam_lr_ratio``.
weight decay      Keras' own ``_apply_weight_decay``: ``p -= lr*weight_decay*p`` on the Muon
                  branch, ``p -= lr*adam_weight_decay*p`` on the AdamW branch (``lr`` not
                  scaled by ``adam_lr_ratio``; ``None`` skips a branch), before the update;
                  torch's ``weight_decay`` stays 0.
================  ==============================================================================

Keras' variable path of a parameter: its ``named_parameters()`` name with dots as slashes and
Dense's ``weight`` called ``kernel`` (its state-dict key; Keras' name): ``"dense_1/kernel"``,
``"embedding/embeddings"``, ``"lstm/recurrent_kernel"`` (Keras: ``"lstm/lstm_cell/..."``). So
``exclude_layers=["output_dense"]``, Keras' usual use, excludes the same layers in both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from optimist import optim
from optimist.training.optimizer_base import (
    Optimizer,
    _number,
    _optional,
    keras_adam_eps,
    keras_path,
)

__all__ = ["Muon"]

#: torch's ``adjust_lr_fn="match_rms_adamw"`` scale ``0.2*sqrt(max(n, m))``
_TORCH_RMS_RATE = 0.2


class _MuonForKeras(optim.Muon):
    """``optim.Muon`` with Keras' normalisation before Newton-Schulz and a learning-rate ratio
    per group (see the module docstring's table).

    Args:
        params: the parameters, in the order of ``branches``.
        lr: the learning rate of every group (a group's step takes ``lr * lr_ratio``).
        branches: per parameter, ``(use_muon, lr_ratio)``; parameters with equal pairs share
            a group.
        **kwargs: the rest of :class:`optimist.optim.Muon`'s arguments.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        *,
        branches: Sequence[tuple[bool, float]],
        **kwargs: Any,
    ) -> None:
        grouped: dict[tuple[bool, float], list[Tensor]] = {}
        for p, branch in zip(params, branches, strict=True):
            grouped.setdefault(branch, []).append(p)
        groups = [
            {"params": ps, "use_muon": use, "lr_ratio": ratio}
            for (use, ratio), ps in grouped.items()
        ]
        super().__init__(groups, lr=lr, adamw_lr=lr, **kwargs)
        # Keras' 1e-7 in the units of torch's buffer, (1 - momentum) times Keras' momentum
        self._norm_eps = (1.0 - float(self.defaults["momentum"])) * 1e-7

    def _full_matrix(self, p: Tensor, update: Tensor) -> Tensor:
        x = super()._full_matrix(p, update)
        return x / (torch.linalg.matrix_norm(x) + self._norm_eps)

    def _step_group(
        self, group: dict[str, Any], *, grad_scale: float = 1.0, lr_multiplier: float = 1.0
    ) -> bool:
        ratio = float(group.get("lr_ratio", 1.0))
        return super()._step_group(
            group, grad_scale=grad_scale, lr_multiplier=lr_multiplier * ratio
        )


class Muon(Optimizer):
    """Keras 3's Muon: ``learning_rate=0.001, adam_beta_1=0.9, adam_beta_2=0.999,
    adam_weight_decay=0.004, epsilon=1e-7, weight_decay=0.004, exclude_layers=None,
    exclude_embeddings=True, muon_a=3.4445, muon_b=-4.7750, muon_c=2.0315, adam_lr_ratio=1,
    momentum=0.95, ns_steps=5, nesterov=True, rms_rate=0.2`` (Keras' argument order).

    Weight matrices take Muon's step, the other parameters (rank != 2, embeddings,
    ``exclude_layers``) AdamW's (the module docstring says how each is decided and computed).
    Beyond Keras' own checks, ``momentum`` must be in [0, 1) and ``ns_steps`` an integer in
    [0, 100): the torch rule cannot give Keras' numbers outside them.
    """

    keras_name = "muon"
    torch_class = _MuonForKeras

    def __init__(
        self,
        learning_rate: float | Callable[[int], float] = 0.001,
        adam_beta_1: float = 0.9,
        adam_beta_2: float = 0.999,
        adam_weight_decay: float | None = 0.004,
        epsilon: float = 1e-7,
        weight_decay: float | None = 0.004,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
        use_ema: bool = False,
        ema_momentum: float = 0.99,
        ema_overwrite_frequency: int | None = None,
        loss_scale_factor: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str | None = None,
        exclude_layers: Sequence[str] | None = None,
        exclude_embeddings: bool = True,
        muon_a: float = 3.4445,
        muon_b: float = -4.7750,
        muon_c: float = 2.0315,
        adam_lr_ratio: float = 1,
        momentum: float = 0.95,
        ns_steps: int = 5,
        nesterov: bool = True,
        rms_rate: float | None = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.adam_beta_1 = _number("adam_beta_1", adam_beta_1, high=1.0)
        self.adam_beta_2 = _number("adam_beta_2", adam_beta_2, high=1.0)
        self.epsilon = _number("epsilon", epsilon)
        self.muon_a = _number("muon_a", muon_a, low=-math.inf)
        self.muon_b = _number("muon_b", muon_b, low=-math.inf)
        self.muon_c = _number("muon_c", muon_c, low=-math.inf)
        self.adam_lr_ratio = _number("adam_lr_ratio", adam_lr_ratio)
        self.momentum = _number("momentum", momentum)
        if not self.momentum < 1.0:
            raise ValueError(
                "`momentum` must be in [0, 1) (optimist's Muon keeps torch's buffer, "
                f"(1 - momentum) times Keras'). Received: momentum={momentum}"
            )
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 0 <= ns_steps < 100:
            raise ValueError(f"`ns_steps` must be an integer in [0, 100). Received: {ns_steps!r}")
        self.ns_steps = ns_steps
        self.nesterov = bool(nesterov)
        self.exclude_embeddings = bool(exclude_embeddings)
        # one regex as a string is one pattern (Keras would take each of its letters as one)
        if isinstance(exclude_layers, str):
            exclude_layers = [exclude_layers]
        self.exclude_layers = list(exclude_layers or [])
        for keyword in self.exclude_layers:
            try:
                re.compile(keyword)
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"`exclude_layers` must be regular expressions. Received {keyword!r}: {exc}"
                ) from None
        self.adam_weight_decay = _optional("adam_weight_decay", adam_weight_decay)
        self.rms_rate = _optional("rms_rate", rms_rate)
        self._use_adamw: list[bool] = []  # per parameter, made by build

    # -- which branch --------------------------------------------------------------------------
    def _should_use_adamw(self, param: Tensor, name: str) -> bool:
        """Keras' rule: AdamW for rank != 2, embeddings, and paths an ``exclude_layers``
        regex matches."""
        if param.dim() != 2:
            return True
        path = keras_path(name)
        if self.exclude_embeddings and "embedding" in path.lower():
            return True
        return any(re.search(keyword, path) for keyword in self.exclude_layers)

    def _lr_ratio(self, param: Tensor) -> float:
        """A Muon parameter's step over torch's ``match_rms_adamw`` step at the same rate."""
        if self.rms_rate is None:
            return 1.0 / (_TORCH_RMS_RATE * math.sqrt(max(param.shape)))
        return self.rms_rate / _TORCH_RMS_RATE

    # -- the Optimizer hooks -------------------------------------------------------------------
    def _rule_config(self) -> dict[str, Any]:
        return {
            "adam_beta_1": self.adam_beta_1,
            "adam_beta_2": self.adam_beta_2,
            "epsilon": self.epsilon,
            "exclude_layers": list(self.exclude_layers),
            "muon_a": self.muon_a,
            "muon_b": self.muon_b,
            "muon_c": self.muon_c,
            "adam_lr_ratio": self.adam_lr_ratio,
            "momentum": self.momentum,
            "ns_steps": self.ns_steps,
            "nesterov": self.nesterov,
            "exclude_embeddings": self.exclude_embeddings,
            "adam_weight_decay": self.adam_weight_decay,
            "rms_rate": self.rms_rate,
        }

    def _torch_kwargs(self) -> dict[str, Any]:
        # (called by build, once the parameters and their names are known)
        self._use_adamw = [
            self._should_use_adamw(p, n) for p, n in zip(self._params, self._names, strict=True)
        ]
        branches = [
            (False, self.adam_lr_ratio) if adamw else (True, self._lr_ratio(p))
            for p, adamw in zip(self._params, self._use_adamw, strict=True)
        ]
        return {
            "branches": branches,
            "weight_decay": 0.0,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "ns_coefficients": (self.muon_a, self.muon_b, self.muon_c),
            "eps": 1.0,  # the matrix arrives normalised (see _MuonForKeras._full_matrix)
            "ns_steps": self.ns_steps,
            "adjust_lr_fn": "match_rms_adamw",
            "ns_dtype": None,
            "adamw_betas": (self.adam_beta_1, self.adam_beta_2),
            "adamw_eps": self.epsilon,
            "adamw_weight_decay": 0.0,
        }

    def _apply_weight_decay(self, lr: float) -> None:
        # Keras' Muon: each branch its own rate, both times the unscaled learning rate
        for adamw, rate in ((False, self.weight_decay), (True, self.adam_weight_decay)):
            self._decay(lr, rate, [use == adamw for use in self._use_adamw])

    def _adjust(self, opt: torch.optim.Optimizer, step: int) -> None:
        # Keras' AdamW branch: sqrt(v) + eps before bias correction (as Adam's _adjust)
        eps = keras_adam_eps(self.epsilon, self.adam_beta_2, step)
        for group in opt.param_groups:
            if not group["use_muon"]:
                group["eps"] = eps
