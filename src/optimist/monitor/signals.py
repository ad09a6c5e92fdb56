"""Training signals read through hooks, every ``every`` optimizer steps, without touching the run.

A :class:`SignalCollector` attaches to an optimizer (``register_step_pre_hook`` /
``register_step_post_hook``) and to the ReLU modules of a model (forward hooks). On a sampled step
it reads, before the update: the global and per-layer gradient norms and the share of non-finite
gradient entries, and keeps a copy of the weights; after the update: the per-layer update-to-weight
ratio ``||dw|| / ||w||``, the per-layer effective learning rate of adaptive methods (the mean of
``lr / (sqrt(v_hat) + eps)``), the momentum norm and the range of the second moment. Forward hooks
give the share of dead units (zero for the whole batch) of each ReLU layer. All values of one step
reach the host in one transfer. Nothing is written to parameters, gradients, optimizer state or
random generators, so a monitored run follows the same trajectory as an unmonitored one.

A *layer* is the module that owns the parameters (``fc1`` for ``fc1.weight`` and ``fc1.bias``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Record = dict[str, Any]

# second-moment state keys of torch/optimist optimizers, and first-moment (momentum) keys
_SECOND_MOMENT_KEYS = ("exp_avg_sq", "square_avg", "sum")
_MOMENTUM_KEYS = ("exp_avg", "momentum_buffer")


def _layer_names(model: nn.Module | None, params: list[torch.Tensor]) -> list[str]:
    names: dict[int, str] = {}
    if model is not None:
        for name, p in model.named_parameters():
            owner = name.rsplit(".", 1)[0] if "." in name else "(root)"
            names.setdefault(id(p), owner)
    return [names.get(id(p), f"param{i}") for i, p in enumerate(params)]


def _is_relu(module: nn.Module) -> bool:
    # torch's ReLU modules, and layers with a fused ``activation="relu"`` (optimist's Dense/Conv)
    return isinstance(module, nn.ReLU) or getattr(module, "activation_name", None) == "relu"


def _dead_share(out: torch.Tensor) -> torch.Tensor | None:
    """Share of units that are zero for the whole batch: features on dim 1 for NCHW, else last."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        return None
    alive = out.detach() > 0
    if out.dim() == 4:
        alive = alive.transpose(0, 1).flatten(1).T
    else:
        alive = alive.reshape(-1, out.shape[-1])
    return (~alive.any(dim=0)).float().mean()


class SignalCollector:
    """Reads the signals of every ``every``-th step of ``optimizer``; see the module docstring.

    ``emit(record)`` receives one flat record per sampled step: ``step``, ``grad_norm``,
    ``nonfinite``, ``grad_norm/<layer>``, ``update_ratio/<layer>``, ``eff_lr/<layer>`` (adaptive
    optimizers), ``momentum_norm``, ``v_min``/``v_max`` (second moment) and ``dead/<module>``.
    """

    def __init__(
        self,
        model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        emit: Callable[[Record], None],
        every: int = 10,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an integer >= 1. Received: every={every!r}")
        self.optimizer = optimizer
        self.every = every
        self.emit = emit
        self.step = 0  # optimizer steps completed
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.layers = _layer_names(model, self.params)
        self.layer_sizes: dict[str, int] = {}
        for name, p in zip(self.layers, self.params, strict=True):
            self.layer_sizes[name] = self.layer_sizes.get(name, 0) + p.numel()
        self._before: dict[str, Any] | None = None
        self._dead: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        if model is not None:
            for name, module in model.named_modules():
                if _is_relu(module):
                    self._handles.append(module.register_forward_hook(self._relu_hook(name)))

    @property
    def sampling(self) -> bool:
        """True while the coming optimizer step is one that is sampled."""
        return self.step % self.every == 0

    def close(self) -> None:
        """Removes every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- hooks ---------------------------------------------------------------------------------
    def _relu_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self.sampling and module.training and torch.is_grad_enabled():
                share = _dead_share(output)
                if share is not None:
                    self._dead[name or "(root)"] = share

        return hook

    @torch.no_grad()
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.sampling:
            return
        with_grad = [(i, p) for i, p in enumerate(self.params) if p.grad is not None]
        idx = [i for i, _ in with_grad]
        grads = [p.grad for _, p in with_grad]
        norms = torch._foreach_norm(grads) if grads else []
        self._before = {
            "idx": idx,
            "grad_norms": norms,
            "nonfinite": [(~torch.isfinite(g)).sum() for g in grads],
            "numel": sum(g.numel() for g in grads),
            "weights": [p.detach().clone() for _, p in with_grad],
        }

    @torch.no_grad()
    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step, before = self.step, self._before
        self.step += 1
        self._before = None
        if before is None:
            return
        idx = before["idx"]
        names: list[str] = []
        values: list[torch.Tensor] = []

        def add(name: str, value: torch.Tensor) -> None:
            names.append(name)
            values.append(value.detach().reshape(()).to(torch.float64).cpu())

        if idx:
            sq = torch.stack([n.double() ** 2 for n in before["grad_norms"]])
            add("grad_norm", sq.sum().sqrt())
            add(
                "nonfinite",
                torch.stack([c.double() for c in before["nonfinite"]]).sum() / before["numel"],
            )
            old = before["weights"]
            new = [self.params[i].detach() for i in idx]
            d_norms = torch._foreach_norm(torch._foreach_sub(new, old))
            w_norms = torch._foreach_norm(old)
            for layer in dict.fromkeys(self.layers[i] for i in idx):
                pos = [k for k, i in enumerate(idx) if self.layers[i] == layer]
                add(f"grad_norm/{layer}", sq[pos].sum().sqrt())
                dw = torch.stack([d_norms[k].double() ** 2 for k in pos]).sum().sqrt()
                w = torch.stack([w_norms[k].double() ** 2 for k in pos]).sum().sqrt()
                add(f"update_ratio/{layer}", dw / w.clamp_min(1e-30))
            self._state_signals(idx, add)
        for name, share in self._dead.items():
            add(f"dead/{name}", share)
        self._dead = {}
        if not names:
            return
        record: Record = {"step": step}
        record.update(zip(names, torch.stack(values).tolist(), strict=True))  # one host transfer
        self.emit(record)

    def _state_signals(self, idx: list[int], add: Callable[[str, torch.Tensor], None]) -> None:
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        momentum_sq: list[torch.Tensor] = []
        v_min: list[torch.Tensor] = []
        v_max: list[torch.Tensor] = []
        eff: dict[str, list[torch.Tensor]] = {}
        for i in idx:
            p = self.params[i]
            state = self.optimizer.state.get(p, {})
            group = group_of[id(p)]
            m = next((state[k] for k in _MOMENTUM_KEYS if k in state), None)
            if isinstance(m, torch.Tensor):
                momentum_sq.append(m.double().pow(2).sum())
            v = next((state[k] for k in _SECOND_MOMENT_KEYS if k in state), None)
            if not isinstance(v, torch.Tensor) or v.numel() == 0:
                continue
            v_min.append(v.min().double())
            v_max.append(v.max().double())
            lr, eps = group.get("lr"), group.get("eps", 1e-8)
            if not isinstance(lr, (int, float, torch.Tensor)):
                continue
            v_hat = v.double()
            betas = group.get("betas")
            t = state.get("step")
            if betas is not None and t is not None:
                v_hat = v_hat / (1.0 - float(betas[1]) ** max(float(t), 1.0))
            # entries that never had a gradient (v == 0) would report lr/eps: leave them out
            seen = v_hat > 0
            eff.setdefault(self.layers[i], []).append(
                torch.stack(
                    [(float(lr) / (v_hat[seen].sqrt() + float(eps))).sum(), seen.sum().double()]
                )
            )
        if momentum_sq:
            add("momentum_norm", torch.stack(momentum_sq).sum().sqrt())
        if v_min:
            add("v_min", torch.stack(v_min).min())
            add("v_max", torch.stack(v_max).max())
        for layer, sums in eff.items():
            total, count = torch.stack(sums).sum(dim=0)
            add(f"eff_lr/{layer}", total / count)  # NaN while no entry has a gradient yet


def sharpness(
    model: nn.Module, closure: Callable[[], torch.Tensor], iters: int = 5, seed: int = 0
) -> float:
    """Largest Hessian eigenvalue of ``closure()`` (the loss) by ``iters`` power-iteration steps.

    Uses Hessian-vector products through ``torch.autograd.grad`` (parameter ``.grad`` is not
    touched) and its own random generator. Costs about ``iters + 1`` forward/backward passes:
    opt-in, for an occasional reading. A model with dropout or batch norm sees one more forward.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    loss = closure()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vec = [torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params]
    eig = 0.0
    for k in range(iters):
        norm = torch.sqrt(sum((v * v).sum() for v in vec))
        vec = [v / norm for v in vec]
        hv = torch.autograd.grad(grads, params, grad_outputs=vec, retain_graph=k < iters - 1)
        eig = float(sum((h * v).sum() for h, v in zip(hv, vec, strict=True)))
        vec = [h.detach() for h in hv]
    return eig
