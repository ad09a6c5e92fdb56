"""Saving and loading: ``Model.save`` / ``save_weights`` / ``load_weights``, the resume of
:class:`~optimist.callbacks.BackupAndRestore`, and :func:`load_model`.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from optimist.training import checkpoint as _ckpt
from optimist.training import losses as _losses
from optimist.training import metrics as _metrics
from optimist.training import optimizers as _keras_opt
from optimist.training import schedules as _keras_schedules
from optimist.training.layers import Dense

if TYPE_CHECKING:  # load_model imports it when called (model.py imports this module)
    from optimist.training.model import Model


class SavingMixin:
    """Checkpoints of :class:`Model`."""

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save architecture (Sequential), weights, optimizer, compile settings, epochs done and
        random states to ``path``, atomically. See :func:`load_model`."""
        config = self._config()
        compile_config = None
        if self.compiled:
            compile_config = dict(self._compile_config or {})
            opt = self.optimizer
            keras_opt = self._keras_optimizer()
            if keras_opt is not None:
                compile_config["optimizer"] = {
                    "keras": _keras_opt.serialize(keras_opt),
                    "iterations": keras_opt.iterations,
                }
            elif opt is not None:
                compile_config["optimizer"] = {
                    **_ckpt.optimizer_config(opt, self._optimizer_name),
                    **_schedule_config(opt),
                }
            elif self._optimizer_name is not None:
                compile_config["optimizer"] = {"name": self._optimizer_name}
            else:
                compile_config["optimizer"] = None
            if isinstance(self._lr_schedule, (str, dict)):  # compile(lr_schedule=name) before fit
                compile_config["lr_schedule"] = self._lr_schedule
        net = self._network()
        payload = {
            "format": _ckpt.FORMAT,
            "version": _ckpt.VERSION,
            "kind": "sequential" if config is not None else "module",
            "config": None if config is None else _ckpt.dumps(config),
            "module_class": f"{type(net).__module__}.{type(net).__qualname__}",
            "state_dict": net.state_dict(),
            "compile": None if compile_config is None else _ckpt.dumps(compile_config),
            "optimizer_state": None if self.optimizer is None else self.optimizer.state_dict(),
            "epoch": int(self.epoch),
            "rng": _ckpt.rng_state(self._shuffle_generator),
            "torch_version": str(torch.__version__),
        }
        _ckpt.atomic_torch_save(payload, path)

    def _resume(self, path: str | os.PathLike[str]) -> int:
        """Load in place what :meth:`save` wrote (weights, optimizer state, random states);
        returns the epochs it had completed (for :class:`BackupAndRestore`)."""
        path = os.fspath(path)
        ckpt = _ckpt.read_checkpoint(path)
        if not self._is_built():
            raise ValueError(
                f"cannot restore the backup {path!r} into an unbuilt model: build it "
                "(input_shape= or model.build(...)) before fit"
            )
        _load_state(self._network(), ckpt["state_dict"], path)
        state = ckpt.get("optimizer_state")
        if state is not None:
            try:
                optimizer = self._ensure_optimizer()
                optimizer.load_state_dict(_upgrade_optimizer_state(self, optimizer, state, ckpt))
            except (ValueError, KeyError, RuntimeError) as exc:
                raise ValueError(
                    f"{path!r}: the saved optimizer state does not fit: {exc}"
                ) from None
        keras_opt = self._keras_optimizer()
        saved = json.loads(ckpt.get("compile") or "{}").get("optimizer") or {}
        if keras_opt is not None:
            keras_opt.restored(int(saved.get("iterations", 0)))
        elif self.optimizer is not None:  # the schedule is this model's own; the step is saved
            self.optimizer.restore_schedule(None, int(saved.get("iterations", 0)))
        if ckpt["rng"].get("shuffle") is not None:
            self._shuffle_generator.set_state(ckpt["rng"]["shuffle"])
        _ckpt.restore_rng(ckpt["rng"])
        self.epoch = int(ckpt["epoch"])
        return self.epoch

    def save_weights(self, path: str | os.PathLike[str]) -> None:
        """Save only the weights (``state_dict``), atomically."""
        payload = {
            "format": _ckpt.WEIGHTS_FORMAT,
            "version": _ckpt.VERSION,
            "state_dict": self._network().state_dict(),
        }
        _ckpt.atomic_torch_save(payload, path)

    def load_weights(self, path: str | os.PathLike[str], *, weights_only: bool = True) -> None:
        """Load weights from :meth:`save_weights`, :meth:`save` or a bare ``state_dict`` file."""
        state = _ckpt.read_weights(path, weights_only=weights_only)
        if not self._is_built():
            raise ValueError(
                "build the model (input_shape= or model.build) before loading weights into it"
            )
        _load_state(self._network(), state, os.fspath(path))


def _load_state(net: nn.Module, state: dict[str, Any], path: str) -> None:
    mine = net.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in mine.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if wrong:
            parts.append(f"shape mismatch {wrong}")
        raise ValueError(f"the weights in {path!r} do not fit this model: {'; '.join(parts)}")
    net.load_state_dict(state)


def load_model(
    path: str | os.PathLike[str],
    module: nn.Module | None = None,
    *,
    custom_objects: dict[str, Any] | None = None,
    compile: bool = True,  # noqa: A002 - Keras' name
    optimizer: Any = None,
    restore_rng: bool = True,
    weights_only: bool = True,
) -> Model:
    """Load a model saved with ``model.save(path)``.

    A :class:`~optimist.Sequential` is rebuilt from its saved config. Any other model needs the
    module to load into: ``load_model(path, module=MyNet())`` (a plain module is wrapped in
    :class:`Model`). With ``compile`` the optimizer (rebuilt by name, or by class for
    ``torch.optim``/``optimist.optim`` instances; else pass ``optimizer=``), its state, the loss
    and metrics are restored, and ``model.epoch`` tells the epochs completed, so
    ``model.fit(..., initial_epoch=model.epoch, epochs=N)`` resumes. With ``restore_rng`` torch's
    global random state is set back to the saved one (needed for bit-identical resumption with
    dropout); the shuffle generator's state is always restored. ``custom_objects`` maps names
    of custom layers, activations or initializers in a Sequential config to objects.

    Raises ``ValueError`` naming the file for truncated, corrupt or foreign files.
    """
    from optimist.training.model import Model
    from optimist.training.sequential import Sequential

    path = os.fspath(path)
    ckpt = _ckpt.read_checkpoint(path, weights_only=weights_only)
    if ckpt["kind"] == "sequential":
        if module is not None:
            raise ValueError(f"{path!r} holds a Sequential model; do not pass module=")
        try:
            config = json.loads(ckpt["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path!r}: the model config is not valid JSON ({exc})") from None
        with torch.random.fork_rng(devices=[]):
            model: Model = Sequential.from_config(config, custom_objects=custom_objects)
    else:
        if module is None:
            raise ValueError(
                f"{path!r} holds a {ckpt.get('module_class', 'custom')} model, whose code is not "
                f"saved: pass the module to load into, load_model(path, module=MyNet())"
            )
        model = module if isinstance(module, Model) else Model(module)
    _load_state(model._network(), ckpt["state_dict"], path)

    compile_config = ckpt.get("compile")
    if compile and compile_config:
        _compile_from_checkpoint(model, json.loads(compile_config), ckpt, optimizer, path)
    model.epoch = int(ckpt["epoch"])
    if restore_rng:
        _ckpt.restore_rng(ckpt["rng"])
    return model


def _schedule_config(optimizer: Any) -> dict[str, Any]:
    """What a torch-style optimizer holds beyond its ``state_dict``: the steps taken and the
    learning-rate schedule set on it (built-in schedules; a custom callable is not saved)."""
    config: dict[str, Any] = {"iterations": int(optimizer.iterations)}
    schedule = optimizer.lr_schedule
    if schedule is not None:
        try:
            config["schedule"] = _keras_schedules.serialize(schedule)
        except ValueError:
            warnings.warn(
                f"the learning-rate schedule {schedule!r} is a custom callable and is not saved; "
                f"after load_model set it again: model.optimizer.learning_rate = schedule",
                RuntimeWarning,
                stacklevel=4,
            )
    return config


def _upgrade_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: Any, ckpt: dict[str, Any]
) -> Any:
    """The optimizer state of a checkpoint older than :data:`~.checkpoint.DENSE_WEIGHT_VERSION`
    in this version's layout: a ``Dense`` weight is now stored ``(units, in)``, so its
    parameter-shaped state (moments, momentum) saved as ``(in, units)`` is transposed. State of
    another shape (a factored second moment) cannot be mapped: ``ValueError``."""
    version = ckpt.get("version", _ckpt.VERSION)
    if version >= _ckpt.DENSE_WEIGHT_VERSION or not isinstance(state, dict):
        return state
    dense = {id(m.weight) for m in model.modules() if isinstance(m, Dense) and m.weight is not None}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    indices = [i for group in state.get("param_groups", []) for i in group.get("params", [])]
    saved = state.get("state")
    if not dense or not isinstance(saved, dict) or len(params) != len(indices):
        return state  # nothing to convert; load_state_dict reports a mismatch itself
    upgraded = dict(saved)
    for index, param in zip(indices, params, strict=True):
        if id(param) not in dense or not isinstance(saved.get(index), dict):
            continue
        old_shape = (param.shape[1], param.shape[0])
        entry = {}
        for key, value in saved[index].items():
            if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == old_shape:
                value = value.t().contiguous()
            elif isinstance(value, torch.Tensor) and value.numel() > 1:
                raise ValueError(
                    f"the checkpoint (format version {version}) holds optimizer state of a Dense "
                    f"kernel in the old (in, units) layout that cannot be converted ({key!r} of "
                    f"shape {tuple(value.shape)}): load it with compile=False and compile again "
                    f"(a fresh optimizer state)"
                )
            entry[key] = value
        upgraded[index] = entry
    return {**state, "state": upgraded}


def _compile_from_checkpoint(
    model: Model, cc: dict[str, Any], ckpt: dict[str, Any], optimizer: Any, path: str
) -> None:
    loss = _loss_from_config(cc.get("loss"))
    metric_configs = cc.get("metrics", [])
    metrics = [m for m in map(_metric_from_config, metric_configs) if m is not None]
    if loss is None:
        warnings.warn(
            f"{path!r}: the model was compiled with a custom loss, which is not saved; call "
            f"compile() again before fit/evaluate",
            RuntimeWarning,
            stacklevel=3,
        )
    if len(metrics) != len(metric_configs):
        warnings.warn(
            f"{path!r}: custom metrics are not saved and were left out",
            RuntimeWarning,
            stacklevel=3,
        )
    opt_cfg = cc.get("optimizer") or {}
    spec: Any = optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if spec is None and opt_cfg.get("keras"):
        spec = _keras_opt.deserialize(opt_cfg["keras"])
    elif spec is None and opt_cfg.get("name"):
        spec = opt_cfg["name"]
    elif spec is None and opt_cfg.get("class") and params:
        spec = _ckpt.rebuild_optimizer(opt_cfg, params)
        if spec is None:
            warnings.warn(
                f"{path!r}: optimizer {opt_cfg['class']} cannot be rebuilt from the file; pass "
                f"optimizer= to load_model",
                RuntimeWarning,
                stacklevel=3,
            )
    model.compile(
        optimizer=spec if spec is not None else "rmsprop",
        loss=loss,
        metrics=metrics,
        lr_schedule=cc.get("lr_schedule"),
    )
    if spec is None:
        model.optimizer = None
        model._optimizer_spec = None
        model._optimizer_name = None
    state = ckpt.get("optimizer_state")
    if state is not None and model.optimizer is not None:
        try:
            model.optimizer.load_state_dict(
                _upgrade_optimizer_state(model, model.optimizer, state, ckpt)
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            if optimizer is None:
                raise ValueError(
                    f"{path!r}: the saved optimizer state does not fit: {exc}"
                ) from None
            warnings.warn(
                f"{path!r}: the saved optimizer state does not fit the optimizer passed in and "
                f"was not loaded ({exc})",
                RuntimeWarning,
                stacklevel=3,
            )
    keras_opt = model._keras_optimizer()
    if keras_opt is not None and optimizer is None:
        keras_opt.restored(int(opt_cfg.get("iterations", 0)))
    elif keras_opt is None and model.optimizer is not None:
        schedule = opt_cfg.get("schedule")
        model.optimizer.restore_schedule(
            None if schedule is None else _keras_schedules.deserialize(schedule),
            int(opt_cfg.get("iterations", 0)),
        )
    shuffle_state = ckpt["rng"].get("shuffle")
    if shuffle_state is not None:
        model._shuffle_generator.set_state(shuffle_state)


def _loss_from_config(config: Any) -> Any:
    if config is None or isinstance(config, str):
        return config
    cls = {c.__name__: c for c in _losses.LOSSES.values()}.get(config.get("class"))
    return None if cls is None else cls(**config.get("config", {}))


def _metric_from_config(config: Any) -> Any:
    if config is None or isinstance(config, str):
        return config
    if config.get("class") == "TopKAccuracy":
        return _metrics.TopKAccuracy(k=config["k"], name=config.get("name"))
    return None
