"""Count what one ``step()`` asks of an accelerator: the aten ops it dispatches and its host reads.

On a GPU a step of many small tensors is bound by kernel launches and host synchronisations, not
by memory. Both can be counted on the CPU, with the accelerator path forced (``foreach=True``,
which takes the bucketed / multi-tensor path on any device): a proxy that needs no GPU.

- **ops**: the aten ops dispatched by the step (a ``TorchDispatchMode`` sees each top-level op
  once: a ``torch._foreach_*`` op counts 1, as it is one or a few launches on CUDA), leaving out
  views (no kernel) and ops whose tensors all live on the host by design on an accelerator (the
  ``step`` counts, 0-dim CPU tensors as in torch.optim; tensors made from no tensor, such as
  ``torch.tensor(python_values)``, which the CPU cannot tell from ``torch.zeros(n,
  device=p.device)``; and what is computed from these alone). So an op that reads only such a
  made tensor is missed; any op that mixes it with a parameter, gradient or state is counted.
- **syncs**: reads of a device tensor's value by the host: ``.item()``, ``float()``, ``bool()``
  (``aten::_local_scalar_dense``), ``.tolist()`` and ``.cpu()``, each a device-to-host copy
  that waits for every queued kernel on CUDA. Reads of the host-resident step counts are free
  there and are not counted.

Parameters: ``n`` tensors alternately 10x10 matrices and 100-element vectors (so that Adafactor
has factored and unfactored ones), gradients drawn once; counted on the third step (after the
state is made). torch's own optimizers with ``foreach=True`` are the yardstick.

    python benchmarks/launch_count.py                          # every row, 10/100/1000 tensors
    python benchmarks/launch_count.py --optimizers lamb,adafactor --tensors 10,1000
    python benchmarks/launch_count.py --device cuda            # on a GPU: torch's own sync count
    python benchmarks/launch_count.py --optimizers prodigy --prodigy-device-sums
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

SYNC_OPS = frozenset({"aten::_local_scalar_dense"})
FREE_OPS = frozenset(
    {"aten::lift_fresh", "aten::empty.memory_format", "aten::empty_strided", "aten::_unsafe_view"}
)
"""Ops that launch no kernel (allocations, and ``_unsafe_view``: a view the schema calls new)."""


def _is_view(func: Any) -> bool:
    """An op that returns an alias of its input without writing (a view: no kernel)."""
    returns = func._schema.returns
    return bool(returns) and all(
        r.alias_info is not None and not r.alias_info.is_write for r in returns
    )


class LaunchCounter(TorchDispatchMode):
    """Counts device ops and host syncs (module docstring) while active; ``host`` seeds the
    tensors that live on the host by design (the optimizer's step counts)."""

    def __init__(self, host: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.ops: dict[str, int] = {}
        self.syncs = 0
        self.host = WeakIdKeyDictionary()
        for t in host:
            self.host[t] = True

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    def _on_host(self, tensors: list[torch.Tensor]) -> bool:
        return bool(tensors) and all(t in self.host for t in tensors)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        name = func._schema.name
        if not inputs or self._on_host(inputs):
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self.host[t] = True
        elif name in SYNC_OPS:
            self.syncs += 1
        elif not _is_view(func) and name not in FREE_OPS and not name.startswith("profiler::"):
            key = name.removeprefix("aten::")
            self.ops[key] = self.ops.get(key, 0) + 1
        return out

    def __enter__(self) -> LaunchCounter:
        counter = self
        self._saved = {k: getattr(torch.Tensor, k) for k in ("tolist", "cpu")}

        def reading(method: Callable[..., Any]) -> Callable[..., Any]:
            def read(t: torch.Tensor, *a: Any, **k: Any) -> Any:
                if t not in counter.host and t.numel():
                    counter.syncs += 1
                return method(t, *a, **k)

            return read

        for key, method in self._saved.items():
            setattr(torch.Tensor, key, reading(method))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        for key, method in self._saved.items():
            setattr(torch.Tensor, key, method)
        super().__exit__(*exc)


def make_params(n: int, device: str = "cpu", seed: int = 0) -> list[torch.nn.Parameter]:
    """``n`` tensors, alternately 10x10 and 100 elements, with fixed gradients."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for i in range(n):
        shape = (10, 10) if i % 2 == 0 else (100,)
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-2).to(device)
        params.append(p)
    return params


def _optimist(name: str, foreach: bool | None = True, **kwargs: Any) -> Callable[[list], Any]:
    """optimist's ``name`` (``foreach`` passed unless None: SOAP has one path)."""
    if foreach is not None:
        kwargs["foreach"] = foreach

    def build(params: list) -> torch.optim.Optimizer:
        import optimist.optim as oo

        return getattr(oo, name)(params, **kwargs)

    return build


def _torch(name: str, **kwargs: Any) -> Callable[[list], Any]:
    return lambda params: getattr(torch.optim, name)(params, foreach=True, **kwargs)


ROWS: dict[str, dict[str, Callable[[list], Any]]] = {
    "adam": {"optimist": _optimist("Adam"), "torch foreach": _torch("Adam")},
    "lion": {"optimist": _optimist("Lion"), "per tensor": _optimist("Lion", False)},
    "lamb": {
        "optimist": _optimist("LAMB", weight_decay=0.01),
        "per tensor": _optimist("LAMB", False, weight_decay=0.01),
    },
    "lars": {
        "optimist": _optimist("LARS", weight_decay=0.01),
        "per tensor": _optimist("LARS", False, weight_decay=0.01),
    },
    "prodigy": {"optimist": _optimist("Prodigy"), "per tensor": _optimist("Prodigy", False)},
    # the counted third step does not refresh the eigenbases (every 10th step does)
    "soap": {"optimist": _optimist("SOAP", None, precondition_frequency=10)},
    "adafactor": {
        "optimist": _optimist("Adafactor"),
        "per tensor": _optimist("Adafactor", False),
        "torch foreach": _torch("Adafactor"),
    },
}
"""optimizer: {who: builder}: optimist with the accelerator path forced (``foreach=True``), its
per-tensor eager path (``foreach=False``: what accelerators ran before the buckets), and torch's
``foreach=True`` twin where torch has the rule."""


def _host_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The step counts: 0-dim CPU tensors on an accelerator too (torch.optim's and optimist's)."""
    return [s["step"] for s in opt.state.values() if isinstance(s.get("step"), torch.Tensor)]


def count(
    build: Callable[[list], Any], n: int, warmup: int = 2, device: str = "cpu"
) -> LaunchCounter:
    """The counter of one ``step()`` of ``build(params)`` over ``n`` tensors on ``device``,
    after ``warmup`` steps. On CUDA ``counter.cuda_syncs`` also holds the synchronisations
    torch itself reports (``torch.cuda.set_sync_debug_mode``: device-to-host reads and
    blocking host-to-device copies), the check of the CPU proxy; None elsewhere."""
    opt = build(make_params(n, device))
    cuda = torch.device(device).type == "cuda"
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        for _ in range(warmup):
            opt.step()
        if cuda:
            torch.cuda.synchronize()
            warnings.simplefilter("always")
            caught.clear()
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with LaunchCounter(_host_tensors(opt)) as counter:
                opt.step()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    counter.cuda_syncs = sum("synchroniz" in str(w.message) for w in caught) if cuda else None
    return counter


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default=",".join(ROWS), help=f"of {list(ROWS)}")
    ap.add_argument("--tensors", default="10,100,1000", help="tensor counts")
    ap.add_argument("--top", type=int, default=0, help="also list the N most frequent ops")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: real syncs counted too")
    ap.add_argument(
        "--prodigy-device-sums",
        action="store_true",
        help="Prodigy's global pass as off the CPU (prodigy._total_sums), on the CPU too",
    )
    args = ap.parse_args(argv)
    names = [s.strip().lower() for s in args.optimizers.split(",") if s.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown optimizers {unknown}; choose from {list(ROWS)}")
    try:
        sizes = [int(s) for s in args.tensors.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--tensors takes comma-separated integers, got {args.tensors!r}")
    if not sizes or min(sizes) < 1:
        ap.error("--tensors needs counts >= 1")
    cuda = torch.device(args.device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda, but torch.cuda.is_available() is False here")
    if args.prodigy_device_sums:
        from optimist.optim import prodigy

        prodigy._flat_sums = lambda params, ss: True
    torch.set_num_threads(1)
    head = ["optimizer", "who"] + [f"ops@{n}" for n in sizes] + [f"syncs@{n}" for n in sizes]
    if cuda:
        head += [f"cuda syncs@{n}" for n in sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in names:
        for who, build in ROWS[name].items():
            counters = [count(build, n, device=args.device) for n in sizes]
            cells = [name, who] + [str(c.total) for c in counters]
            cells += [str(c.syncs) for c in counters]
            if cuda:
                cells += [str(c.cuda_syncs) for c in counters]
            print("| " + " | ".join(cells) + " |", flush=True)
            if args.top:
                top = sorted(counters[-1].ops.items(), key=lambda kv: -kv[1])[: args.top]
                print("|  | top ops | " + ", ".join(f"{k} {v}" for k, v in top) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
