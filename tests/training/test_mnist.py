"""The classic Keras MNIST example, on real MNIST.

SGD with Keras' default learning rate (0.01) needs more than a 10k-sample subsample to pass 90%
in 5 epochs with this tiny 784-10-10 network (10k gives about 86%), so the test trains on the
first 40,000 training images and scores on the full 10,000-image test set. Full-data numbers
are in README.md (Training models the Keras way).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist.layers import Dense
from optimist.utils import to_categorical

N_TRAIN = 40_000


@pytest.fixture(scope="module")
def mnist_data():
    from optimist.datasets import DatasetNotAvailableError, mnist

    try:
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    except DatasetNotAvailableError as exc:
        pytest.skip(f"MNIST is not installed: {mnist.INSTALL_COMMAND} ({exc})")
    x_train = (x_train[:N_TRAIN].reshape(-1, 784) / 255.0).astype(np.float32)
    x_test = (x_test.reshape(-1, 784) / 255.0).astype(np.float32)
    return x_train, to_categorical(y_train[:N_TRAIN], 10), x_test, to_categorical(y_test, 10)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer,target", [("sgd", 0.90), ("adam", 0.92)])
def test_keras_mnist_example(mnist_data, optimizer, target):
    x_train, y_train, x_test, y_test = mnist_data
    torch.manual_seed(0)
    model = optimist.Sequential(
        [
            Dense(10, activation="relu", input_shape=(784,)),
            Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=5, batch_size=32, validation_split=0.1, verbose=0)
    assert len(history.history["val_accuracy"]) == 5
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert acc >= target, f"{optimizer}: test accuracy {acc:.4f} < {target}"
    probs = model.predict(x_test[:5], verbose=0)
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
