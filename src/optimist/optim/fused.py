"""Single-pass fused CPU kernels for optimist's optimizers.

The kernels live in one C++ source (``csrc/kernels.cpp``) that is compiled on first use
with :func:`torch.utils.cpp_extension.load` (``-O3 -march=native``) and cached under
``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) by
:func:`optimist.optim._build.load_extension`: keyed by content (not path), loaded without any
lock once built, every build announced on stderr, and a build lock held by another process
waited on for a bounded time only. The first build takes about a minute on two cores; later
processes load the cached library in well under a second.

Each function below updates lists of tensors in place with exactly the per-element math
of torch's ``torch.optim._single_tensor_<name>`` (non-capturable, non-differentiable),
reading param, grad and state once and writing param and state once, with the loop over
tensors in C++ (one Python -> C++ call per optimizer step) and large tensors split over
``torch.get_num_threads()`` threads.

Precision: float32 and float64 tensors are computed in their own precision with the same
operation order and scalar casts as torch (results agree to rounding: the compiler may fuse
``a * b + c`` into one multiply-add). bfloat16 and float16 tensors are computed in float32
and rounded once when stored, which is *more* accurate than torch (torch rounds to the low
precision after every intermediate op), so results there are close to, not identical with,
torch's.

Contract for callers (the optimizer classes check :func:`supports` first):

* every list has one entry per parameter (pass ``[]`` for state that is not used:
  ``momentum_buffers`` when momentum is 0, ``grad_avgs`` when not centered,
  ``max_exp_avg_sqs`` when not amsgrad);
* param, grad and state tensors of one parameter are CPU, contiguous, of one dtype among
  float32, float64, bfloat16, float16 (the dtype may differ between parameters), and do not
  overlap. Complex64/complex128 tensors are also accepted as they are (each rule is
  elementwise over real and imaginary parts, as torch applies it to ``view_as_real`` views),
  so passing ``torch.view_as_real`` views is optional;
* ``steps`` (and NAdam's ``mu_products``) are torch's one-element float32/float64 state
  tensors; each is updated in place exactly as torch does (``step += 1`` before use).

Set ``OPTIMIST_DISABLE_FUSED=1`` to make :func:`available` return False (the optimizers
then use their per-tensor PyTorch path).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from optimist.optim import _build

__all__ = [
    "available",
    "load",
    "supports",
    "unsupported_indices",
    "sgd",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamax",
    "nadam",
    "radam",
]

SOURCE = Path(__file__).resolve().parent / "csrc" / "kernels.cpp"
NAME_PREFIX = "optimist_kernels"
CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
SUPPORTED_DTYPES = frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16})

_module: ModuleType | None = None
_failure: str | None = None
_lock = threading.Lock()


def _disabled() -> bool:
    value = os.environ.get("OPTIMIST_DISABLE_FUSED", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def extension_name() -> str:
    """Name of the compiled module: changes with the source, flags, torch and the CPU."""
    return _build.extension_name(NAME_PREFIX, [SOURCE], CFLAGS, LDFLAGS)


def load() -> ModuleType:
    """Return the compiled kernel module, building it on first use.

    Raises RuntimeError with the reason (no compiler, no ninja, compile error and the path
    of the build log) if it cannot be built; the failure is remembered for this process.
    """
    global _module, _failure
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        if _failure is not None:
            raise RuntimeError(_failure)
        try:
            _module = _build.load_extension(
                NAME_PREFIX, [SOURCE], CFLAGS, LDFLAGS, description="fused CPU kernels"
            )
        except Exception as exc:
            _failure = str(exc) if isinstance(exc, RuntimeError) else f"{type(exc).__name__}: {exc}"
            raise RuntimeError(_failure) from exc
        return _module


def available() -> bool:
    """True if the fused kernels can be used (builds them on first call; never raises).

    False when ``OPTIMIST_DISABLE_FUSED=1`` or when the build failed; in the latter case one
    warning says why, and the per-tensor PyTorch fallback is used.
    """
    if _disabled():
        return False
    if _module is not None:
        return True
    if _failure is not None:
        return False
    try:
        load()
    except Exception as exc:
        reason = str(exc).removeprefix("optimist: ")
        warnings.warn(
            f"optimist: fused CPU kernels unavailable, using the per-tensor PyTorch "
            f"fallback: {reason}",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def supports(t: Tensor) -> bool:
    """Whether the fused kernels can update tensor ``t`` (and its grad/state of its dtype)."""
    # Cheapest checks first: this runs for every tensor of every step (~0.3 us).
    return (
        t.is_cpu
        and t.dtype in SUPPORTED_DTYPES
        and t.layout == torch.strided
        and t.is_contiguous()
        and not t.is_inference()
    )


def unsupported_indices(*lists: list[Tensor]) -> list[int]:
    """Indices ``i`` at which the kernels cannot take the tensors, checked in one C++ call.

    ``lists`` are index-aligned tensor lists, params first, then grads and state tensors
    (empty lists, for unused state, are ignored). Index ``i`` is unsupported when its param
    has a dtype outside float32/float64/bfloat16/float16/complex64/complex128, or any of its
    tensors is not on the CPU, not contiguous, has another dtype or shape than the param, is
    an inference tensor, or has a lazy conj/neg bit. When the memory of any two params
    overlaps (views of one storage, a param listed twice), every index is returned, so that
    the caller updates them one by one in order, as torch does (the overlap test is cached
    per set of param addresses). An optimizer can send everything to the kernel when this is
    empty, and otherwise route the listed indices to its per-tensor path. Costs about
    0.1 us per tensor (versus a few us for the same checks in Python).
    """
    if not lists or not lists[0]:
        return []
    return _mod().unsupported_indices(list(lists))


def _mod() -> ModuleType:
    return _module if _module is not None else load()


def sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    is_new_buffer: list[bool],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """SGD step. ``is_new_buffer[i]``: the buffer was just allocated and is set to the
    (weight-decayed) gradient, like torch's ``clone(grad)`` on the first step."""
    _mod().sgd(
        params,
        grads,
        momentum_buffers,
        [bool(b) for b in is_new_buffer],
        float(lr),
        float(weight_decay),
        float(momentum),
        float(dampening),
        bool(nesterov),
        bool(maximize),
    )


def adagrad(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """Adagrad step (dense gradients)."""
    _mod().adagrad(
        params,
        grads,
        state_sums,
        steps,
        float(lr),
        float(weight_decay),
        float(lr_decay),
        float(eps),
        bool(maximize),
    )


def rmsprop(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    """RMSprop step."""
    _mod().rmsprop(
        params,
        grads,
        square_avgs,
        grad_avgs,
        momentum_buffers,
        steps,
        float(lr),
        float(alpha),
        float(eps),
        float(weight_decay),
        float(momentum),
        bool(centered),
        bool(maximize),
    )


def adadelta(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    acc_deltas: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adadelta step."""
    _mod().adadelta(
        params,
        grads,
        square_avgs,
        acc_deltas,
        steps,
        float(lr),
        float(rho),
        float(eps),
        float(weight_decay),
        bool(maximize),
    )


def adam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """Adam step; AdamW is ``decoupled_weight_decay=True``."""
    _mod().adam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        steps,
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(amsgrad),
        bool(maximize),
        bool(decoupled_weight_decay),
    )


def adamax(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_infs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """Adamax step."""
    _mod().adamax(
        params,
        grads,
        exp_avgs,
        exp_infs,
        steps,
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(maximize),
    )


def nadam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    mu_products: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    momentum_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """NAdam step; updates ``mu_products`` in place like torch."""
    _mod().nadam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        mu_products,
        steps,
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        float(momentum_decay),
        bool(decoupled_weight_decay),
        bool(maximize),
    )


def radam(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
) -> None:
    """RAdam step."""
    _mod().radam(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        steps,
        float(lr),
        float(beta1),
        float(beta2),
        float(eps),
        float(weight_decay),
        bool(decoupled_weight_decay),
        bool(maximize),
    )
