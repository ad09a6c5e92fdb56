"""Training signals read through hooks, every ``every`` optimizer steps, without touching the run.

A :class:`SignalCollector` attaches to an optimizer (``register_step_pre_hook`` /
``register_step_post_hook``) and to the ReLU modules of a model (forward hooks). On a sampled step
it reads, before the update: the global and per-layer gradient norms, and keeps a copy of the
weights; after the update: the share of non-finite gradient entries (counted only when the global
norm is not finite), the per-layer update-to-weight
ratio ``||dw|| / ||w||``, the per-layer effective learning rate of adaptive methods (the mean of
``lr / (sqrt(v_hat) + eps)``), the momentum norm and the range of the second moment. Forward hooks
give the share of dead units (zero for the whole batch) of each ReLU layer. All values of one step
reach the host in one transfer. Nothing is written to parameters, gradients, optimizer state or
random generators, so a monitored run follows the same trajectory as an unmonitored one.

A *layer* is the module that owns the parameters (``fc1`` for ``fc1.weight`` and ``fc1.bias``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

Record = dict[str, Any]

AUTO_START = 10  # every="auto": the first interval, doubled while the monitor costs too much
AUTO_MAX = 1000

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
    ``nonfinite``, ``grad_norm/<layer>``, ``update_ratio/<layer>``, ``dead/<module>`` and, with
    ``full`` (else left out: no verdict reads them), ``eff_lr/<layer>`` (adaptive optimizers),
    ``momentum_norm`` and ``v_min``/``v_max`` (second moment).
    """

    def __init__(
        self,
        model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        emit: Callable[[Record], None],
        every: int | str = 10,
        budget: float = 0.02,
        full: bool = True,
    ) -> None:
        auto = every == "auto"
        if not auto and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(
                f"`every` must be an integer >= 1 or 'auto'. Received: every={every!r}"
            )
        self.optimizer = optimizer
        self.full = full
        self.every: int = AUTO_START if auto else int(every)
        self.auto = auto
        self.budget = budget
        self.emit = emit
        self.step = 0  # optimizer steps completed
        self.next_sample = 0
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.layers = _layer_names(model, self.params)
        self.layer_sizes: dict[str, int] = {}
        for name, p in zip(self.layers, self.params, strict=True):
            self.layer_sizes[name] = self.layer_sizes.get(name, 0) + p.numel()
        self._layer_ids = {name: i for i, name in enumerate(self.layer_sizes)}
        self._before: dict[str, Any] | None = None
        self._dead: dict[str, torch.Tensor] = {}
        self._cost = 0.0  # seconds spent on the latest sample
        self.spent = 0.0  # seconds spent on all readings so far (the monitor's own time)
        self._since = time.perf_counter()  # start of the latest sample
        self._handles: list[Any] = [
            optimizer.register_step_pre_hook(self._pre_step),
            optimizer.register_step_post_hook(self._post_step),
        ]
        # forward hooks slow every module call down, so they are on only for sampled steps
        self._relus = [
            (name, module)
            for name, module in (model.named_modules() if model is not None else [])
            if _is_relu(module)
        ]
        self._relu_handles: list[Any] = []
        self._arm()

    def _arm(self) -> None:
        if not self._relu_handles:
            self._relu_handles = [
                module.register_forward_hook(self._relu_hook(name)) for name, module in self._relus
            ]

    def _disarm(self) -> None:
        for h in self._relu_handles:
            h.remove()
        self._relu_handles = []

    def charge(self, seconds: float) -> None:
        """Counts ``seconds`` of other monitor work (a loss reading) in the auto interval's
        budget."""
        self._cost += seconds

    @property
    def sampling(self) -> bool:
        """True while the coming optimizer step is one that is sampled."""
        return self.step == self.next_sample

    def close(self) -> None:
        """Removes every hook (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._disarm()

    # ---- hooks ---------------------------------------------------------------------------------
    def _relu_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self.sampling and module.training and torch.is_grad_enabled():
                start = time.perf_counter()
                share = _dead_share(output)
                if share is not None:
                    self._dead[name or "(root)"] = share
                self._cost += time.perf_counter() - start

        return hook

    # the hooks run on every step: the cheap checks come before any torch.no_grad() context
    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.sampling:
            with torch.no_grad():
                self._read_before()

    def _read_before(self) -> None:
        start = time.perf_counter()
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        grads = [self.params[i].grad for i in idx]
        self._before = {
            "idx": idx,
            "grad_norms": torch.stack(torch._foreach_norm(grads)).double() if grads else None,
            "weights": [self.params[i].detach().clone() for i in idx],
        }
        self._cost += time.perf_counter() - start

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step, before = self.step, self._before
        self.step += 1
        self._before = None
        if before is None:
            if step == self.next_sample:  # a step without gradients: sample the next one
                self.next_sample += 1
            if self.sampling:
                self._arm()
            return
        with torch.no_grad():
            self._read_after(step, before)

    def _read_after(self, step: int, before: dict[str, Any]) -> None:
        start = time.perf_counter()
        names: list[str] = []
        blocks: list[torch.Tensor] = []  # 1-D float64 blocks of values, names in that order

        def add(name: str, value: torch.Tensor) -> None:
            names.append(name)
            blocks.append(value.detach().reshape(1).to(torch.float64))

        idx = before["idx"]
        if idx:
            layer_names = list(dict.fromkeys(self.layers[i] for i in idx))
            where = {name: k for k, name in enumerate(layer_names)}
            index = torch.tensor([where[self.layers[i]] for i in idx])
            old = before["weights"]
            new = [self.params[i].detach() for i in idx]
            g2 = before["grad_norms"] ** 2
            d2 = torch.stack(torch._foreach_norm(torch._foreach_sub(new, old))).double() ** 2
            w2 = torch.stack(torch._foreach_norm(old)).double() ** 2
            per_layer = torch.zeros(3, len(layer_names), dtype=torch.float64, device=g2.device)
            per_layer.index_add_(1, index.to(g2.device), torch.stack([g2, d2, w2]))
            per_layer = per_layer.sqrt()
            # grad_norm, then per layer: grad_norm/<layer>, update_ratio/<layer>
            names.append("grad_norm")
            for layer in layer_names:
                names += [f"grad_norm/{layer}", f"update_ratio/{layer}"]
            ratio = per_layer[1] / per_layer[2].clamp_min(1e-30)
            blocks.append(g2.sum().sqrt().reshape(1))
            blocks.append(torch.stack([per_layer[0], ratio], dim=1).reshape(-1))
            if self.full:
                self._state_signals(idx, add)
        for name, share in self._dead.items():
            add(f"dead/{name}", share)
        self._dead = {}
        if names:
            record: Record = {"step": step}
            # one host transfer
            record.update(zip(names, torch.cat(blocks).cpu().tolist(), strict=True))
            if "grad_norm" in record:
                record["nonfinite"] = self._nonfinite_share(idx, record["grad_norm"])
            self.emit(record)
        self._schedule(start, step)

    def _nonfinite_share(self, idx: list[int], grad_norm: float) -> float:
        # a finite global norm means every entry is finite: count only when it is not
        if math.isfinite(grad_norm):
            return 0.0
        grads = [self.params[i].grad for i in idx if self.params[i].grad is not None]
        bad = sum(int((~torch.isfinite(g)).sum()) for g in grads)
        return bad / max(sum(g.numel() for g in grads), 1)

    def _schedule(self, start: float, step: int) -> None:
        """Sets the next sampled step; in auto mode doubles the interval while the monitor's own
        time exceeds ``budget`` of the wall time since the previous sample."""
        now = time.perf_counter()
        self._cost += now - start
        if self.auto:
            elapsed = now - self._since
            if self._cost > self.budget * elapsed and self.every < AUTO_MAX:
                self.every = min(self.every * 2, AUTO_MAX)
        self._since = now
        self.spent += self._cost
        self._cost = 0.0
        self.next_sample = step + self.every
        if self.sampling:
            self._arm()
        else:
            self._disarm()

    def _state_signals(self, idx: list[int], add: Callable[[str, torch.Tensor], None]) -> None:
        group_of = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        momenta: list[torch.Tensor] = []
        v_min: list[torch.Tensor] = []
        v_max: list[torch.Tensor] = []
        eff: dict[str, list[torch.Tensor]] = {}
        for i in idx:
            p = self.params[i]
            state = self.optimizer.state.get(p, {})
            m = next((state[k] for k in _MOMENTUM_KEYS if k in state), None)
            if isinstance(m, torch.Tensor) and m.numel():
                momenta.append(m)
            v = next((state[k] for k in _SECOND_MOMENT_KEYS if k in state), None)
            if not isinstance(v, torch.Tensor) or v.numel() == 0 or v.is_complex():
                continue
            lo, hi = torch.aminmax(v)
            v_min.append(lo)
            v_max.append(hi)
            group = group_of[id(p)]
            lr, eps = group.get("lr"), float(group.get("eps", 1e-8))
            if not isinstance(lr, (int, float, torch.Tensor)):
                continue
            # lr / (sqrt(v / bc) + eps) = lr sqrt(bc) / (sqrt(v) + eps sqrt(bc)), bc: Adam's bias
            # correction of v; entries that never had a gradient (v == 0) are left out
            betas, t = group.get("betas"), state.get("step")
            root_bc = 1.0
            if betas is not None and t is not None:
                root_bc = math.sqrt(1.0 - float(betas[1]) ** max(float(t), 1.0))
            rate = (float(lr) * root_bc) / v.sqrt().add_(eps * root_bc)
            seen = v > 0
            eff.setdefault(self.layers[i], []).append(
                torch.stack([rate.mul_(seen).sum().double(), seen.sum().double()])
            )
        if momenta:
            add("momentum_norm", torch.stack(torch._foreach_norm(momenta)).double().norm())
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
