"""The compiled C++ engine: its sources, building and loading it once per process, availability.

:func:`load` builds ``csrc/`` (``engine.cpp`` and the headers it includes) on first use through
:mod:`optimist.optim._build`; :func:`available` says whether the engine can be used (False under
``OPTIMIST_DISABLE_FUSED=1`` or when it cannot be built, with one warning). :func:`grad_stats` is
pass 0 over a list of gradients, through the engine on CPU and torch's ops elsewhere. The
optimizer machinery that drives the engine is :mod:`optimist.optim.engine`.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from optimist.optim import _build
from optimist.optim.base import as_real

__all__ = ["available", "grad_stats", "load"]

CSRC = Path(__file__).resolve().parent / "csrc"
# every file the build reads (engine.cpp includes the headers), so that the cache key changes
# with any of them
SOURCES = sorted([*CSRC.glob("*.h"), *CSRC.glob("*.cpp")])
CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]

_module: ModuleType | None = None
_failure: str | None = None
_lock = threading.Lock()


# --- building and loading the C++ engine --------------------------------------------------------


NAME_PREFIX = "optimist_engine"


def _disabled() -> bool:
    value = os.environ.get("OPTIMIST_DISABLE_FUSED", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def extension_name() -> str:
    """Name of the compiled engine: changes with the source, flags, torch, Python and the CPU."""
    return _build.extension_name(NAME_PREFIX, SOURCES, CFLAGS, LDFLAGS)


def _load_module() -> ModuleType:
    return _build.load_extension(
        NAME_PREFIX, SOURCES, CFLAGS, LDFLAGS, description="C++ optimizer engine"
    )


def load() -> ModuleType:
    """The compiled engine, built on first use (RuntimeError with the reason if it cannot be)."""
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            if _failure is not None:
                raise RuntimeError(_failure)
            try:
                _module = _load_module()
            except Exception as exc:
                _failure = str(exc)
                raise RuntimeError(_failure) from exc
    return _module


def available() -> bool:
    """True if the C++ engine can be used (builds it on first call; warns once if it cannot)."""
    if _disabled():
        return False
    if _module is not None:
        return True
    if _failure is not None:
        return False
    try:
        load()
    except Exception as exc:
        warnings.warn(
            "optimist: the C++ optimizer engine is unavailable, using the per-tensor PyTorch "
            f"path: {str(exc).removeprefix('optimist: ')}",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def grad_stats(grads: Sequence[Tensor], clip_value: float = 0.0) -> tuple[Tensor, bool]:
    """Pass 0: per-tensor sums of squares (float64) and whether all gradients are finite.

    One read of each gradient. CPU tensors go through the C++ engine (each value widened to
    float64 and summed in vectorized lanes, at memory speed); elsewhere torch's multi-tensor norm
    (in the gradients' precision). "Finite" is judged from the sums, as
    ``torch.nn.utils.clip_grad_norm_(error_if_nonfinite=True)`` judges it from the norm (a NaN
    or inf element makes the sum NaN or inf). With ``clip_value > 0`` the gradients are clamped
    to ``±clip_value`` first, and finiteness is that of the unclamped elements.
    """
    if not grads:
        return torch.zeros(0, dtype=torch.float64), True
    if all(g.is_cpu for g in grads) and available():
        mod = load()
        if not mod.unsupported_indices([list(grads), list(grads)]):
            return mod.grad_stats(list(grads), float(clip_value))
    if clip_value <= 0:
        norms = torch._foreach_norm([as_real(g) for g in grads])
        try:  # one op when the norms share a dtype and device (the usual case)
            sums = torch.stack(norms).double().cpu() ** 2
        except RuntimeError:
            sums = torch.stack([n.double().cpu() for n in norms]) ** 2
        return sums, bool(torch.isfinite(sums).all())
    sums, finite = [], []
    for g in grads:  # on the gradients' devices; one host transfer at the end
        r = as_real(g).clamp(-clip_value, clip_value)
        sums.append(r.double().square().sum())
        finite.append(torch.isfinite(as_real(g)).all())
    by_device: dict[torch.device, list[int]] = {}
    for i, s in enumerate(sums):
        by_device.setdefault(s.device, []).append(i)
    out = torch.zeros(len(grads), dtype=torch.float64)
    all_finite = True
    for idx in by_device.values():
        out[idx] = torch.stack([sums[i] for i in idx]).cpu()
        all_finite &= bool(torch.stack([finite[i] for i in idx]).all())
    return out, all_finite
