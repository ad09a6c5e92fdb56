"""Training signals read through hooks, every ``every`` optimizer steps, without touching the run.

A :class:`SignalCollector` attaches to an optimizer (``register_step_post_hook``, which counts the
steps: a counter and a compare on an unsampled step; ``register_step_pre_hook``, only for sampled
steps) and, for sampled steps only, to the ReLU modules of a model (forward hooks). When the
training loop reports each step's loss after the step (``Watch.log_loss``, once per step), those
calls count the steps instead and the post-step hook comes off between samples (it is *parked*),
so an unsampled step costs no hook at all; it is back on the step before each sample.

On a sampled step it reads, before the update: the global and per-layer gradient norms and the
weight norms, and keeps a copy of the weights; after the update: the share of non-finite gradient
entries (counted only when the global norm is not finite), the per-layer update-to-weight ratio
``||dw|| / ||w||``, the per-layer effective learning rate of adaptive methods (the mean of
``lr / (sqrt(v_hat) + eps)``), the momentum norm and the range of the second moment. Forward hooks
give the share of dead units (zero for the whole batch) of each ReLU layer. The sums of squares
come from one call of the engine's pass-0 kernel where it runs (optimist's optimizers on CPU), and
all values of one step reach the host in one transfer. Nothing is written to parameters,
gradients, optimizer state or random generators, so a monitored run follows the same trajectory
as an unmonitored one.

A *layer* is the module that owns the parameters (``fc1`` for ``fc1.weight`` and ``fc1.bias``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from optimist.optim import engine
from optimist.optim.engine import RuleOptimizer

Record = dict[str, Any]

AUTO_START = 10  # every="auto": the first interval, doubled while the monitor costs too much
AUTO_MAX = 1000
AUTO_BUDGET = 0.01  # every="auto": the interval doubles while a reading costs more than this share
PARK_AFTER = 3  # steps in a row with one loss report each before the post-step hook is parked

clock = time.thread_time
"""The clock of the monitor's own time and of the auto interval's budget: CPU time of the training
thread, so time the OS gives to other processes (a shared machine) counts for neither side."""

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


def _unit_peaks(out: Any) -> torch.Tensor | None:
    """Per unit (feature: dim 1 for NCHW, else the last dim), its largest output over the batch
    (left on the device): a unit is alive when that is > 0. One op (``amax``), where
    ``(out > 0).any(dims)`` would be two."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or not out.is_floating_point():
        return None
    if out.numel() == 0:
        return None
    dims = (0, 2, 3) if out.dim() == 4 else tuple(range(out.dim() - 1))
    return out.detach().amax(dim=dims)


def _copies(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the weights before a sampled step (never views: :func:`_deltas` overwrites
    them). One clone per tensor is fewer and cheaper ops than one flat buffer (a cat to fill it,
    a cat, a subtraction and a split to read it)."""
    return [t.detach().clone() for t in tensors]


def _deltas(old: list[torch.Tensor], new: list[torch.Tensor]) -> list[torch.Tensor]:
    """``old - new`` per tensor, in place in the copies ``old`` (one multi-tensor op)."""
    torch._foreach_sub_(old, [t.detach() for t in new])
    return old


def _host_values(tensors: list[torch.Tensor]) -> list[float]:
    """The values of 1-D tensors, in order, as one list: one device-to-host transfer when they
    share a non-CPU device (CPU tensors are read in place)."""
    devices = {t.device for t in tensors}
    if len(devices) == 1 and not tensors[0].is_cpu:
        tensors = [torch.cat(tensors).cpu()]
    return [v for t in tensors for v in t.tolist()]


class SignalCollector:
    """Reads the signals of every ``every``-th step of ``optimizer``; see the module docstring.

    ``emit(record)`` receives one flat record per sampled step: ``step``, ``grad_norm``,
    ``nonfinite``, ``grad_norm/<layer>``, ``update_ratio/<layer>``, ``dead/<module>`` and, with
    ``full`` (else left out: no verdict reads them), ``eff_lr/<layer>`` (adaptive optimizers),
    ``momentum_norm`` and ``v_min``/``v_max`` (second moment).

    The step pre-hook and the ReLU forward hooks are registered just for sampled steps. The
    post-hook counts the steps, unless :meth:`on_loss` does: when the loop reported one loss per
    step, after the step (its first report came after a step), for :data:`PARK_AFTER` steps in a
    row, the post-hook is parked (removed) until the step before the next sample, and each report
    counts one step. A loop that reports before ``step()``, or not once per step, keeps the hook.
    """

    def __init__(
        self,
        model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        emit: Callable[[Record], None],
        every: int | str = 10,
        budget: float = AUTO_BUDGET,
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
        self._keys = {n: (f"grad_norm/{n}", f"update_ratio/{n}") for n in self.layer_sizes}
        # the engine's pass-0 kernel is used only where the optimizer loads the engine anyway
        self._engine = isinstance(optimizer, RuleOptimizer)
        self._before: dict[str, Any] | None = None
        self._dead: dict[str, torch.Tensor] = {}
        self._cost = 0.0  # seconds spent on the latest sample
        self.spent = 0.0  # seconds spent on all readings so far (the monitor's own time)
        self.samples = 0  # readings so far
        self._since = clock()  # start of the latest sample
        self._post_handle: Any = optimizer.register_step_post_hook(self._post_step)
        self._parked = False  # the post-hook is off: on_loss counts the steps
        self._reports = 0  # on_loss calls since the latest post-hook call
        self._regular = 0  # post-hook calls in a row with exactly one report before each
        self._after: bool | None = None  # whether the first report came after a step
        self._pre_handle: Any = None
        self._relus = [
            (name or "(root)", module)
            for name, module in (model.named_modules() if model is not None else [])
            if _is_relu(module)
        ]
        self._relu_handles: list[Any] = []
        self._arm()

    def _arm(self) -> None:
        """The coming step is sampled: on with the pre-step hook and the ReLU forward hooks."""
        if self._pre_handle is None:
            self._pre_handle = self.optimizer.register_step_pre_hook(self._pre_step)
            self._relu_handles = [
                module.register_forward_hook(self._relu_hook(name)) for name, module in self._relus
            ]

    def _disarm(self) -> None:
        if self._pre_handle is not None:
            self._pre_handle.remove()
            self._pre_handle = None
        for h in self._relu_handles:
            h.remove()
        self._relu_handles = []

    @property
    def sampling(self) -> bool:
        """True while the coming optimizer step is one that is sampled."""
        return self.step == self.next_sample

    def close(self) -> None:
        """Removes every hook (idempotent)."""
        self._parked = False
        if self._post_handle is not None:
            self._post_handle.remove()
            self._post_handle = None
        self._disarm()

    def on_loss(self) -> None:
        """The loop reported one step's loss (``Watch.log_loss``): while parked this counts the
        step; else it may park the post-hook (see the class docstring)."""
        if self._parked:
            self.step += 1
            if self.step >= self.next_sample - 1:  # the coming step's post-hook arms the sample
                start = clock()
                self._parked = False
                self._post_handle = self.optimizer.register_step_post_hook(self._post_step)
                self._reports = 1  # this report, before the post-hook's next call
                self._cost += clock() - start
            return
        reports = self._reports
        self._reports = reports + 1
        if self._after is None:
            self._after = self.step > 0
        if (
            reports == 0  # the first report since the latest step: the count is exact here
            and self._after
            and self._regular >= PARK_AFTER
            and self.next_sample - self.step > 2
            and self._post_handle is not None
            and self._pre_handle is None
        ):
            start = clock()
            self._post_handle.remove()
            self._post_handle = None
            self._parked = True
            self._cost += clock() - start

    # ---- hooks ---------------------------------------------------------------------------------
    def _relu_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if module.training and torch.is_grad_enabled():
                start = clock()
                peaks = _unit_peaks(output)
                if peaks is not None:
                    self._dead[name] = peaks
                self._cost += clock() - start

        return hook

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        with torch.no_grad():
            self._read_before()

    def _read_before(self) -> None:
        start = clock()
        idx = [i for i, p in enumerate(self.params) if p.grad is not None]
        self._before = {"idx": idx}
        if idx:
            weights = [self.params[i] for i in idx]
            grads = [self.params[i].grad for i in idx]
            self._before["sums"] = self._sums_of_squares(grads + weights)  # ||g||^2, ||w||^2
            self._before["old"] = _copies(weights)
        self._cost += clock() - start

    def _sums_of_squares(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Per-tensor sums of squares, float64: one C++ call for CPU tensors (the engine's
        pass 0), torch's multi-tensor norm elsewhere (left on the device)."""
        if self._engine and tensors[0].is_cpu:  # (grad_stats falls back where it cannot run)
            return engine.grad_stats(tensors)[0]
        return torch.stack(torch._foreach_norm(tensors)).double().square()

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step = self.step
        self.step = step + 1
        self._regular = self._regular + 1 if self._reports == 1 else 0
        self._reports = 0
        if step != self.next_sample:  # an unsampled step: all it costs
            if step + 1 == self.next_sample:  # the next one is: its hooks count as its cost
                start = clock()
                self._arm()
                self._cost += clock() - start
            return
        before, self._before = self._before, None
        if before is None:  # a sampled step without gradients: sample the next one
            self.next_sample += 1
            return
        with torch.no_grad():
            self._read_after(step, before)

    def _read_after(self, step: int, before: dict[str, Any]) -> None:
        start = clock()
        idx = before["idx"]
        # 1-D tensors, read in one go: ||g||^2, ||w||^2, ||dw||^2 per tensor, the optimizer-state
        # signals (`extra`), then per ReLU module whether each unit was alive
        pending: list[torch.Tensor] = []
        if idx:
            deltas = _deltas(before["old"], [self.params[i] for i in idx])
            pending += [before["sums"], self._sums_of_squares(deltas)]
        names: list[str] = []
        extra: list[torch.Tensor] = []  # 0-d tensors, names in that order

        def add(name: str, value: torch.Tensor) -> None:
            names.append(name)
            extra.append(value)

        if idx and self.full:
            self._state_signals(idx, add)
        alive = list(self._dead.items())
        self._dead = {}
        if extra:
            pending.append(torch.stack(extra))
        pending += [peaks for _, peaks in alive]
        if pending:
            values = _host_values(pending)
            record: Record = {"step": step}
            n = len(idx)
            if n:
                g2, w2, d2 = values[:n], values[n : 2 * n], values[2 * n : 3 * n]
                per_layer: dict[str, list[float]] = {}
                for i, g, d, w in zip(idx, g2, d2, w2, strict=True):
                    sums = per_layer.setdefault(self.layers[i], [0.0, 0.0, 0.0])
                    sums[0] += g
                    sums[1] += d
                    sums[2] += w
                record["grad_norm"] = math.sqrt(sum(g2))
                for layer, (g, d, w) in per_layer.items():
                    grad_key, ratio_key = self._keys[layer]
                    record[grad_key] = math.sqrt(g)
                    record[ratio_key] = math.sqrt(d) / max(math.sqrt(w), 1e-30)
            at = 3 * n
            record.update(zip(names, values[at : at + len(names)], strict=True))
            at += len(names)
            for name, peaks in alive:  # the share of units never > 0 in the batch
                n_units = len(peaks)
                # a ReLU's output is >= 0: a unit is dead when its peak is 0 (count: C speed)
                record[f"dead/{name}"] = values[at : at + n_units].count(0.0) / n_units
                at += n_units
            if n:
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
        time exceeds ``budget`` of the time since the previous sample (both by :data:`clock`).
        The first sample does not count: nothing came before it to compare with, and it pays
        one-time costs."""
        now = clock()
        self._cost += now - start
        self.samples += 1
        if self.auto and self.samples > 1:
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
        self._cost = clock() - now  # (dis)arming the hooks: counted with the next reading

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
