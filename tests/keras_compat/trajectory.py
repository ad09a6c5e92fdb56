"""One check shared by the Keras-compatibility tests of optimizers: the same model from the same
weights, trained by Keras 3 and by optimist with the optimizer one expression builds in each,
follows the same trajectory (losses to 1e-5 relative, weights to float32 rounding)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import optimist
from optimist import optimizers
from optimist.layers import Dense

STEPS = 10
RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 5)).astype(np.float32)
Y = RNG.standard_normal((64, 3)).astype(np.float32)
WEIGHTS = [
    (0.5 * RNG.standard_normal((5, 3))).astype(np.float32),
    (0.1 * RNG.standard_normal(3)).astype(np.float32),
]

#: (optimizers module, its schedules module) -> an optimizer or a name
MakeOptimizer = Callable[[Any, Any], Any]


def assert_same_trajectory(
    keras: Any,
    make: MakeOptimizer,
    steps: int = STEPS,
    *,
    must_train: bool = True,
    configure: Callable[[Any, Any], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Train a Dense(5 -> 3) on the same batch for ``steps`` full-batch epochs in Keras and in
    optimist; assert the losses and final weights agree. ``configure(optimizer, model)`` runs in
    each library before ``compile`` (e.g. ``exclude_from_weight_decay``). Returns (optimist's,
    Keras') losses."""

    def compiled(model: Any, module: Any) -> Any:
        model.set_weights(WEIGHTS)
        optimizer = make(module, module.schedules)
        if configure is not None:
            configure(optimizer, model)
        model.compile(optimizer=optimizer, loss="mse")
        return model

    reference = compiled(
        keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)]), keras.optimizers
    )
    expected = reference.fit(X, Y, batch_size=64, epochs=steps, shuffle=False, verbose=0)

    model = compiled(optimist.Sequential([Dense(3, input_shape=(5,))]), optimizers)
    got = model.fit(X, Y, batch_size=None, epochs=steps, shuffle=False, verbose=0)

    np.testing.assert_allclose(got.history["loss"], expected.history["loss"], rtol=1e-5)
    for mine, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)  # float32 rounding
    if must_train:
        assert got.history["loss"][-1] < got.history["loss"][0]  # it trained
    return got.history["loss"], expected.history["loss"]
