"""Keras 3 on its JAX backend as an oracle, in a process of its own (a process has one Keras
backend, and the tests' is torch): ``python keras_jax_fit.py data.npz`` with a JSON object
``{case: optimizer expression}`` on stdin fits, for each case, a Dense model from the weights in
``data.npz`` (``x``, ``y``, ``x_val``, ``y_val``, ``w0``, ``w1``) for ``steps`` full-batch epochs,
the optimizer being the expression evaluated with ``o`` = ``keras.optimizers`` and ``s`` = its
schedules; prints ``{case: {"loss": [...], "val_loss": [...], "weights": [...]}}``."""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def fit(data: dict[str, np.ndarray], expression: str) -> dict[str, list]:
    model = keras.Sequential([keras.Input((data["x"].shape[1],)), keras.layers.Dense(3)])
    model.set_weights([data["w0"], data["w1"]])
    optimizer = eval(expression, {"o": keras.optimizers, "s": keras.optimizers.schedules})
    model.compile(optimizer=optimizer, loss="mse")
    history = model.fit(
        data["x"],
        data["y"],
        batch_size=len(data["x"]),
        epochs=int(data["steps"]),
        shuffle=False,
        validation_data=(data["x_val"], data["y_val"]),
        verbose=0,
    )
    return {
        "loss": [float(v) for v in history.history["loss"]],
        "val_loss": [float(v) for v in history.history["val_loss"]],
        "weights": [np.asarray(w).tolist() for w in model.get_weights()],
    }


def main() -> None:
    data = dict(np.load(sys.argv[1]))
    cases = json.load(sys.stdin)
    json.dump({case: fit(data, expression) for case, expression in cases.items()}, sys.stdout)


if __name__ == "__main__":
    main()
