"""Checkpoint files: ``model.save(path)`` / ``optimist.load_model(path)``.

A checkpoint is a ``torch.save`` file holding only plain data (dicts, lists, strings, numbers,
tensors), so it loads with ``torch.load(weights_only=True)``:

``format``/``version``
    ``"optimist.checkpoint"`` and the format version.
``kind``, ``config``
    ``"sequential"`` with the model's JSON config (layer class names and constructor arguments,
    so it is rebuilt without pickled code), or ``"module"`` for any other model (the caller
    passes the module to load into).
``state_dict``
    the weights (and buffers such as batch-norm statistics).
``compile``, ``optimizer_state``
    JSON of the optimizer name or class, loss and metric names; the optimizer's ``state_dict``.
``epoch``, ``rng``
    epochs completed, and the random states (torch's global generator, the model's shuffle
    generator, CUDA's) so that resuming ``fit`` continues exactly where it stopped.

Files are written atomically: to a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "optimist.checkpoint"
WEIGHTS_FORMAT = "optimist.weights"
VERSION = 2
#: From this version a ``Dense`` layer's optimizer state is stored ``(units, in)`` like its weight
#: (``nn.Linear``'s layout); older files are converted on load. The weights themselves are
#: saved as Keras' ``(in, units)`` kernel in every version.
DENSE_WEIGHT_VERSION = 2

_OPTIMIZER_MODULES = ("torch.optim", "optimist.optim")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def read_file(path: str | os.PathLike[str], *, weights_only: bool = True) -> Any:
    """``torch.load`` with every failure turned into a ``ValueError`` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint file at {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a checkpoint file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path!r} is empty (0 bytes): not a checkpoint (interrupted write?)")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(16)
        raise ValueError(
            f"{path!r} is not a readable checkpoint: it is not a PyTorch zip archive (the file is "
            f"truncated, corrupt or of another format; it starts with {head!r})"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # noqa: BLE001 - every reader error means the same thing here
        message = str(exc)
        if weights_only and (
            isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in message
        ):
            # torch words this refusal several ways ("Unsupported global: GLOBAL x.y ...",
            # "Trying to load unsupported GLOBAL x.y whose module x is blocked", "Unsupported
            # operand ..."): all mean the safe unpickler declined to run code from the file.
            named = re.search(r"GLOBAL (\S+?)\.?(?:\s|$)", message)
            what = f"a Python object ({named.group(1)})" if named else "pickled Python code"
            raise ValueError(
                f"{path!r} was refused for safety: it holds {what} that loading would have to "
                f"execute, and torch.load(weights_only=True) refuses to unpickle it. Only if you "
                f"trust where the file comes from, load it with weights_only=False."
            ) from None
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        text = lines[-1] if lines else type(exc).__name__
        raise ValueError(
            f"{path!r} is not a readable checkpoint: the file is truncated, corrupt or not a "
            f"PyTorch file ({type(exc).__name__}: {text})"
        ) from None


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:5])) + (", ..." if len(obj) > 5 else "")
        return f"a dict with keys [{keys}]"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


def read_checkpoint(path: str | os.PathLike[str], *, weights_only: bool = True) -> dict[str, Any]:
    """Load and validate an optimist checkpoint (``ValueError`` for anything else)."""
    obj = read_file(path, weights_only=weights_only)
    path = os.fspath(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = ""
        if isinstance(obj, dict) and obj.get("format") == WEIGHTS_FORMAT:
            hint = " It is a weights-only file: use model.load_weights(path)."
        elif (
            isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            hint = " It looks like a bare state_dict: use model.load_weights(path)."
        raise ValueError(
            f"{path!r} is a PyTorch file but not an optimist checkpoint: it contains "
            f"{_describe(obj)}.{hint}"
        )
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ValueError(
            f"{path!r} is an optimist checkpoint of version {version!r}, newer than this "
            f"optimist reads ({VERSION}); upgrade optimist"
        )
    missing = [k for k in ("kind", "state_dict", "epoch", "rng") if k not in obj]
    if missing:
        raise ValueError(f"{path!r} is an incomplete optimist checkpoint: missing {missing}")
    if obj["kind"] not in ("sequential", "module"):
        raise ValueError(f"{path!r}: unknown model kind {obj['kind']!r}")
    return obj


def read_weights(path: str | os.PathLike[str], *, weights_only: bool = True) -> dict[str, Any]:
    """The state_dict from a weights file, a full checkpoint or a bare ``state_dict`` file."""
    obj = read_file(path, weights_only=weights_only)
    if isinstance(obj, dict) and obj.get("format") in (FORMAT, WEIGHTS_FORMAT):
        state = obj.get("state_dict")
        if isinstance(state, dict):
            return state
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ValueError(
        f"{os.fspath(path)!r} holds no model weights: it contains {_describe(obj)} (expected an "
        f"optimist weights file, checkpoint or a state_dict)"
    )


# -- rng ------------------------------------------------------------------------------------------
def rng_state(shuffle_generator: torch.Generator | None) -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "shuffle": None if shuffle_generator is None else shuffle_generator.get_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- optimizer ------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (bool, int, float, str)) or v is None for v in value
    ):
        return list(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError


def optimizer_config(optimizer: torch.optim.Optimizer, name: str | None) -> dict[str, Any]:
    cls = type(optimizer)
    defaults: dict[str, Any] = {}
    for key, value in optimizer.defaults.items():
        try:
            defaults[key] = _jsonable(value)
        except TypeError:
            continue
    return {"name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "defaults": defaults}


def rebuild_optimizer(config: dict[str, Any], params: list[torch.nn.Parameter]) -> Any:
    """An optimizer like the saved one (its state is loaded afterwards), or ``None``."""
    from optimist import optim

    if config.get("name"):
        return optim.optimizer(config["name"], params)
    module_name, _, cls_name = str(config.get("class", "")).rpartition(".")
    roots = [m for m in _OPTIMIZER_MODULES if module_name == m or module_name.startswith(m + ".")]
    if not roots:
        return None
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError):
        # a class that moved to another module of its package (LAMB and LARS left
        # optimist.optim.trust_ratio) keeps its public name at the package's top
        cls = getattr(importlib.import_module(roots[0]), cls_name, None)
        if not isinstance(cls, type):
            return None
    try:
        return cls(params, **config.get("defaults", {}))
    except TypeError:
        try:
            return cls(params)
        except TypeError:
            return None


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)
