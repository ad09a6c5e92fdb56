"""Well-known Keras programs, run with only their imports and data loading changed.

Each test is the program as published (keras-io ``mnist_convnet``, the classic ``mnist_mlp`` and
``mnist_cnn``, keras-io's LSTM character-level text generation, the TensorFlow beginner
quickstart, "Deep Learning with Python" ch. 4 regression, and the two snippets of Keras'
optimizers page), with ``import optimist as keras`` (or ``from optimist... import``) for the
Keras imports, and a data subset loaded so that each runs in a few batches. Where a program's
loop counts (epochs, characters generated) would take minutes they are shortened, and so said.
Each asserts what the program prints or relies on; the optimizer snippets are also compared
number for number with Keras 3 where it is installed.
"""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from helpers import KERAS_NUMPY2

N_TRAIN, N_TEST = 512, 256


@pytest.fixture(scope="module")
def mnist_subset():
    """(x_train, y_train), (x_test, y_test) as ``mnist.load_data()`` gives them, subset."""
    from optimist.datasets import DatasetNotAvailableError, mnist

    try:
        (x_train, y_train), (x_test, y_test) = mnist.load_data()
    except DatasetNotAvailableError as exc:
        pytest.skip(f"MNIST is not installed ({exc})")
    return (x_train[:N_TRAIN], y_train[:N_TRAIN]), (x_test[:N_TEST], y_test[:N_TEST])


@pytest.mark.slow
def test_keras_io_mnist_convnet(mnist_subset, capsys):
    import optimist as keras
    from optimist import layers

    num_classes = 10
    input_shape = (28, 28, 1)
    (x_train, y_train), (x_test, y_test) = mnist_subset  # data loading: a subset
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255
    x_train = np.expand_dims(x_train, -1)
    x_test = np.expand_dims(x_test, -1)
    y_train = keras.utils.to_categorical(y_train, num_classes)
    y_test = keras.utils.to_categorical(y_test, num_classes)
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.summary()
    batch_size = 128
    epochs = 3  # 15 in the program
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1)
    score = model.evaluate(x_test, y_test, verbose=0)
    print("Test loss:", score[0])
    print("Test accuracy:", score[1])

    out = capsys.readouterr().out
    assert "Total params: 34,826" in out  # the program's printed summary
    assert "val_accuracy:" in out.splitlines()[-3]  # the last epoch's line, in full
    assert score[0] < 2.3 and score[1] > 0.2  # learning (chance: 0.1)


def test_mnist_mlp(mnist_subset):
    from optimist import utils
    from optimist.layers import Dense, Dropout
    from optimist.models import Sequential
    from optimist.optimizers import RMSprop

    batch_size = 128
    num_classes = 10
    epochs = 3  # 20 in the program
    (x_train, y_train), (x_test, y_test) = mnist_subset
    x_train = x_train.reshape(-1, 784)  # data loading: (60000, 784) in the program
    x_test = x_test.reshape(-1, 784)
    x_train = x_train.astype("float32")
    x_test = x_test.astype("float32")
    x_train /= 255
    x_test /= 255
    y_train = utils.to_categorical(y_train, num_classes)
    y_test = utils.to_categorical(y_test, num_classes)

    model = Sequential()
    model.add(Dense(512, activation="relu", input_shape=(784,)))
    model.add(Dropout(0.2))
    model.add(Dense(512, activation="relu"))
    model.add(Dropout(0.2))
    model.add(Dense(num_classes, activation="softmax"))
    model.summary(print_fn=None)
    model.compile(loss="categorical_crossentropy", optimizer=RMSprop(), metrics=["accuracy"])
    history = model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        validation_data=(x_test, y_test),
    )
    score = model.evaluate(x_test, y_test, verbose=0)
    assert model.count_params() == 669_706
    assert score[1] == pytest.approx(history.history["val_accuracy"][-1])
    assert score[1] > 0.75  # Keras' RMSprop defaults (torch's would be lr 0.01, eps 1e-8)


@pytest.mark.slow
def test_mnist_cnn(mnist_subset):
    import optimist as keras
    from optimist import backend as K
    from optimist.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from optimist.models import Sequential

    batch_size = 128
    num_classes = 10
    epochs = 2  # 12 in the program
    img_rows, img_cols = 28, 28
    (x_train, y_train), (x_test, y_test) = mnist_subset
    if K.image_data_format() == "channels_first":
        x_train = x_train.reshape(x_train.shape[0], 1, img_rows, img_cols)
        x_test = x_test.reshape(x_test.shape[0], 1, img_rows, img_cols)
        input_shape = (1, img_rows, img_cols)
    else:
        x_train = x_train.reshape(x_train.shape[0], img_rows, img_cols, 1)
        x_test = x_test.reshape(x_test.shape[0], img_rows, img_cols, 1)
        input_shape = (img_rows, img_cols, 1)
    x_train = x_train.astype("float32")
    x_test = x_test.astype("float32")
    x_train /= 255
    x_test /= 255
    y_train = keras.utils.to_categorical(y_train, num_classes)
    y_test = keras.utils.to_categorical(y_test, num_classes)

    model = Sequential()
    model.add(Conv2D(32, kernel_size=(3, 3), activation="relu", input_shape=input_shape))
    model.add(Conv2D(64, (3, 3), activation="relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(128, activation="relu"))
    model.add(Dropout(0.5))
    model.add(Dense(num_classes, activation="softmax"))
    model.compile(
        loss=keras.losses.categorical_crossentropy,
        optimizer=keras.optimizers.Adadelta(),
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        y_train,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        validation_data=(x_test, y_test),
    )
    score = model.evaluate(x_test, y_test, verbose=0)
    assert model.loss.name == "categorical_crossentropy" and model._fold == "softmax"
    assert np.isfinite(score[0]) and 0.0 <= score[1] <= 1.0
    assert len(score) == 2


@pytest.mark.slow
def test_keras_io_lstm_text_generation():
    import optimist as keras
    from optimist import layers
    from optimist.datasets import DatasetNotAvailableError, shakespeare

    try:  # data loading: Shakespeare instead of keras.utils.get_file("nietzsche.txt")
        text = shakespeare.load_text()[:3000].lower()
    except DatasetNotAvailableError as exc:
        pytest.skip(f"Shakespeare is not installed ({exc})")
    with io.StringIO(text) as f:
        text = f.read().lower()
    text = text.replace("\n", " ")
    chars = sorted(list(set(text)))
    char_indices = dict((c, i) for i, c in enumerate(chars))
    indices_char = dict((i, c) for i, c in enumerate(chars))
    maxlen = 40
    step = 3
    sentences = []
    next_chars = []
    for i in range(0, len(text) - maxlen, step):
        sentences.append(text[i : i + maxlen])
        next_chars.append(text[i + maxlen])
    x = np.zeros((len(sentences), maxlen, len(chars)), dtype="bool")
    y = np.zeros((len(sentences), len(chars)), dtype="bool")
    for i, sentence in enumerate(sentences):
        for t, char in enumerate(sentence):
            x[i, t, char_indices[char]] = 1
        y[i, char_indices[next_chars[i]]] = 1

    model = keras.Sequential(
        [
            keras.Input(shape=(maxlen, len(chars))),
            layers.LSTM(128),
            layers.Dense(len(chars), activation="softmax"),
        ]
    )
    optimizer = keras.optimizers.RMSprop(learning_rate=0.01)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer)

    def sample(preds, temperature=1.0):
        preds = np.asarray(preds).astype("float64")
        preds = np.log(preds) / temperature
        exp_preds = np.exp(preds)
        preds = exp_preds / np.sum(exp_preds)
        probas = np.random.multinomial(1, preds, 1)
        return np.argmax(probas)

    epochs = 2  # 40 in the program
    batch_size = 128
    losses = []
    for _epoch in range(epochs):
        losses.append(model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0))
        start_index = random.randint(0, len(text) - maxlen - 1)
        for diversity in [0.2, 0.5, 1.0, 1.2]:
            generated = ""
            sentence = text[start_index : start_index + maxlen]
            for _i in range(10):  # 400 characters in the program
                x_pred = np.zeros((1, maxlen, len(chars)))
                for t, char in enumerate(sentence):
                    x_pred[0, t, char_indices[char]] = 1.0
                preds = model.predict(x_pred, verbose=0)[0]
                next_index = sample(preds, diversity)
                next_char = indices_char[next_index]
                sentence = sentence[1:] + next_char
                generated += next_char
            assert len(generated) == 10 and set(generated) <= set(chars)
    assert losses[-1].history["loss"][0] < losses[0].history["loss"][0]


def test_tensorflow_beginner_quickstart(mnist_subset):
    import optimist as tf_keras  # for tf.keras

    mnist = tf_keras.datasets.mnist
    (x_train, y_train), (x_test, y_test) = mnist_subset  # mnist.load_data(), subset
    assert mnist.load_data is not None
    x_train, x_test = x_train / 255.0, x_test / 255.0

    model = tf_keras.models.Sequential(
        [
            tf_keras.layers.Flatten(input_shape=(28, 28)),
            tf_keras.layers.Dense(128, activation="relu"),
            tf_keras.layers.Dropout(0.2),
            tf_keras.layers.Dense(10),
        ]
    )
    predictions = model(x_train[:1]).numpy()
    # tf.nn.softmax(predictions).numpy() -- TensorFlow, not Keras: torch's softmax here
    probabilities = torch.softmax(torch.from_numpy(predictions), -1).numpy()
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    initial = loss_fn(y_train[:1], predictions).numpy()
    assert initial == pytest.approx(-np.log(probabilities[0, y_train[0]]), rel=1e-5)
    model.compile(optimizer="adam", loss=loss_fn, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=5, verbose=0)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=2)
    probability_model = tf_keras.Sequential([model, tf_keras.layers.Softmax()])
    probs = probability_model(x_test[:5])
    assert torch.equal(probs, probability_model(x_test[:5]))  # inference: no dropout noise
    np.testing.assert_allclose(probs.detach().sum(-1).numpy(), 1.0, rtol=1e-5)
    assert accuracy > 0.7 and loss < initial


@pytest.mark.slow
def test_deep_learning_with_python_ch4_regression():
    from sklearn.datasets import load_diabetes

    import optimist as keras
    from optimist import layers

    # data loading: scikit-learn's diabetes set for boston_housing.load_data(), targets in
    # tens (Boston's prices are in thousands of dollars, 5 to 50)
    data = load_diabetes()
    train_data, train_targets = data.data[:300].copy(), data.target[:300] / 10
    test_data, test_targets = data.data[300:].copy(), data.target[300:] / 10
    mean = train_data.mean(axis=0)
    train_data -= mean
    std = train_data.std(axis=0)
    train_data /= std
    test_data -= mean
    test_data /= std

    def build_model():
        model = keras.Sequential(
            [
                layers.Dense(64, activation="relu"),
                layers.Dense(64, activation="relu"),
                layers.Dense(1),
            ]
        )
        model.compile(optimizer="rmsprop", loss="mse", metrics=["mae"])
        return model

    k = 4
    num_val_samples = len(train_data) // k
    num_epochs = 5  # 100 / 500 in the book
    all_mae_histories = []
    for i in range(k):
        val_data = train_data[i * num_val_samples : (i + 1) * num_val_samples]
        val_targets = train_targets[i * num_val_samples : (i + 1) * num_val_samples]
        partial_train_data = np.concatenate(
            [train_data[: i * num_val_samples], train_data[(i + 1) * num_val_samples :]], axis=0
        )
        partial_train_targets = np.concatenate(
            [train_targets[: i * num_val_samples], train_targets[(i + 1) * num_val_samples :]],
            axis=0,
        )
        model = build_model()
        history = model.fit(
            partial_train_data,
            partial_train_targets,
            validation_data=(val_data, val_targets),
            epochs=num_epochs,
            batch_size=16,
            verbose=0,
        )
        mae_history = history.history["val_mae"]
        all_mae_histories.append(mae_history)
    average_mae_history = [np.mean([x[i] for x in all_mae_histories]) for i in range(num_epochs)]
    assert average_mae_history[-1] < average_mae_history[0]

    model = build_model()
    model.fit(train_data, train_targets, epochs=20, batch_size=16, verbose=0)  # 130 in the book
    test_mse_score, test_mae_score = model.evaluate(test_data, test_targets)
    predictions = model.predict(test_data)
    assert predictions.shape == (len(test_data), 1)
    assert test_mse_score == pytest.approx(
        float(np.mean((predictions[:, 0] - test_targets) ** 2)), rel=1e-4
    )
    assert test_mae_score < np.mean(np.abs(test_targets - test_targets.mean()))  # beats the mean


def _optimizers_page_snippet_1(keras, layers, x, y, weights=None):
    model = keras.Sequential()
    model.add(layers.Dense(64, kernel_initializer="uniform", input_shape=(10,)))
    model.add(layers.Activation("softmax"))
    if weights is not None:
        model.set_weights(weights)
    opt = keras.optimizers.Adam(learning_rate=0.01)
    model.compile(loss="categorical_crossentropy", optimizer=opt)
    return model, model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)


def _optimizers_page_snippet_2(keras, layers, x, y, weights=None):
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate=1e-2, decay_steps=10000, decay_rate=0.9
    )
    optimizer = keras.optimizers.SGD(learning_rate=lr_schedule)
    model = keras.Sequential([keras.Input((10,)), layers.Dense(64, activation="softmax")])
    if weights is not None:
        model.set_weights(weights)
    model.compile(loss="categorical_crossentropy", optimizer=optimizer)
    return model, model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)


@pytest.mark.filterwarnings(
    KERAS_NUMPY2,
    "ignore:Do not pass an `input_shape`:UserWarning:keras",  # snippet 1, as Keras's page has it
)
@pytest.mark.parametrize("snippet", [_optimizers_page_snippet_1, _optimizers_page_snippet_2])
def test_keras_optimizers_page_snippets(snippet, request):
    import optimist as keras
    from optimist import layers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 10)).astype(np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 64, 96), 64)
    model, history = snippet(keras, layers, x, y)
    assert history.history["loss"][-1] < history.history["loss"][0]

    try:  # the same numbers as Keras 3 from the same initial weights
        real = request.getfixturevalue("keras")
    except pytest.skip.Exception:
        return
    weights = [rng.uniform(-0.05, 0.05, (10, 64)).astype(np.float32), np.zeros(64, np.float32)]
    _, expected = snippet(real, real.layers, x, y, weights=weights)
    _, history = snippet(keras, layers, x, y, weights=weights)
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
