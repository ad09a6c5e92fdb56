"""compile / fit / evaluate / predict: the Keras API on arrays, tensors and DataLoaders."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import optimist
from optimist.layers import (
    LSTM,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    MaxPooling2D,
)
from optimist.training.callbacks import LambdaCallback
from optimist.utils import to_categorical


def classifier(n_in=4, n_out=3):
    return optimist.Sequential(
        [Dense(16, activation="relu", input_shape=(n_in,)), Dense(n_out, activation="softmax")]
    )


def test_keras_example_shape_of_results(blobs):
    x, labels = blobs
    y = to_categorical(labels, 3)
    model = classifier()
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=3, batch_size=32, validation_split=0.1, verbose=0)
    assert isinstance(history, optimist.training.History)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 3 for v in history.history.values())
    assert history.epoch == [0, 1, 2]
    assert history.params == {"epochs": 3, "steps": 9, "verbose": 0}  # 270 train samples
    assert model.history is history and model.epoch == 3
    loss, acc = model.evaluate(x, y, verbose=0)
    assert isinstance(loss, float) and 0 <= acc <= 1
    probs = model.predict(x, verbose=0)
    assert isinstance(probs, np.ndarray) and probs.shape == (300, 3)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    for _ in range(10):
        model.fit(x, y, epochs=3, verbose=0)
    assert model.evaluate(x, y, verbose=0)[1] > 0.95
    assert model.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def test_evaluate_without_metrics_returns_float(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("sgd", "mse")
    assert isinstance(model.evaluate(x, y, verbose=0), float)


def test_validation_split_takes_the_last_fraction(blobs):
    x, labels = blobs
    model_a = classifier()
    state = {k: v.clone() for k, v in model_a.state_dict().items()}
    model_a.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history_a = model_a.fit(x, labels, epochs=2, validation_split=0.2, verbose=0)

    model_b = classifier()
    model_b.load_state_dict(state)
    model_b.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history_b = model_b.fit(
        x[:240], labels[:240], epochs=2, validation_data=(x[240:], labels[240:]), verbose=0
    )
    assert history_a.history == history_b.history


def test_tensor_input_and_int_labels_as_floats(blobs):
    x, labels = blobs
    model = classifier()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(torch.from_numpy(x), torch.from_numpy(labels).float(), epochs=1, verbose=0)


def test_dataloader_input_matches_arrays(blobs):
    x, labels = blobs
    model_a = classifier()
    state = {k: v.clone() for k, v in model_a.state_dict().items()}
    model_a.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    h_a = model_a.fit(x, labels, batch_size=32, epochs=2, shuffle=False, verbose=0)

    model_b = classifier()
    model_b.load_state_dict(state)
    model_b.compile("sgd", "sparse_categorical_crossentropy", ["accuracy"])
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(labels)), batch_size=32)
    h_b = model_b.fit(loader, epochs=2, verbose=0, validation_data=loader)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)
    assert h_a.history["loss"] == h_b.history["loss"]
    assert "val_accuracy" in h_b.history
    assert model_b.evaluate(loader, verbose=0)[1] == pytest.approx(
        model_a.evaluate(x, labels, verbose=0)[1]
    )
    assert model_b.predict(loader, verbose=0).shape == (300, 3)


def test_dataset_input_lazy_model_and_steps_per_epoch(blobs):
    x, labels = blobs
    dataset = TensorDataset(torch.from_numpy(x), torch.from_numpy(labels))
    model = optimist.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    assert model.optimizer is None  # built (and given its optimizer) on the first batch
    history = model.fit(dataset, batch_size=50, epochs=2, validation_split=0.2, verbose=0)
    assert model.built and model.optimizer is not None
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    steps = []
    cb = LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
    model.fit(dataset, batch_size=50, epochs=2, steps_per_epoch=4, verbose=0, callbacks=[cb])
    assert steps == [0, 1, 2, 3] * 2
    steps.clear()
    model.fit(x, labels, batch_size=50, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[cb])
    assert steps == [0, 1]


def test_lazy_sequential_builds_from_arrays(blobs):
    x, labels = blobs
    model = optimist.Sequential([Dense(8, activation="relu"), Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=1, verbose=0)
    assert model.input_shape == (None, 4)
    # the optimizer holds Dense's (units, in) weights; Keras' view is (in, units)
    assert [p.shape for p in model.optimizer.param_groups[0]["params"]] == [
        (8, 4),
        (8,),
        (3, 8),
        (3,),
    ]
    assert [tuple(w.shape) for w in model.trainable_weights] == [(4, 8), (8,), (8, 3), (3,)]


def test_class_weight_and_sample_weight(blobs):
    x, labels = blobs
    frozen = functools.partial(torch.optim.SGD, lr=0.0)  # loss of the unchanged model
    model = classifier()
    model.compile(frozen, "sparse_categorical_crossentropy")
    weights = {0: 2.0, 1: 0.5}  # class 2 missing: weight 1
    loss_cw = model.fit(x, labels, batch_size=300, class_weight=weights, verbose=0).history["loss"]
    probs = torch.from_numpy(model.predict(x, verbose=0))
    per_sample = -torch.log(probs[torch.arange(300), torch.from_numpy(labels)])
    w = torch.tensor([weights.get(int(c), 1.0) for c in labels])
    assert loss_cw[0] == pytest.approx((per_sample * w).mean().item(), rel=1e-5)
    loss_sw = model.fit(x, labels, batch_size=300, sample_weight=w.numpy(), verbose=0)
    assert loss_sw.history["loss"][0] == pytest.approx(loss_cw[0], rel=1e-6)
    # one-hot targets pick the class by argmax
    model.compile(frozen, "categorical_crossentropy")
    onehot = to_categorical(labels, 3)
    loss_oh = model.fit(x, onehot, batch_size=300, class_weight=weights, verbose=0)
    assert loss_oh.history["loss"][0] == pytest.approx(loss_cw[0], rel=1e-5)


def test_verbose_modes(blobs, capfd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the summary must not be cut to the terminal's width
    x, labels = blobs
    model = classifier()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, labels, epochs=2, verbose=0)
    model.evaluate(x, labels, verbose=0)
    model.predict(x, verbose=0)
    out, err = capfd.readouterr()
    assert out == "" and err == ""

    model.fit(x, labels, epochs=2, verbose=1, validation_split=0.1)
    out, err = capfd.readouterr()
    assert "Epoch 1/2" in err and "Epoch 2/2" in err  # the bars
    summaries = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert len(summaries) == 2 and all(" 9/9 - " in line for line in summaries)  # 270 / 32
    for line in summaries:  # every metric in full, as Keras prints it
        assert re.search(
            r"loss: \d\.\d{4} - accuracy: \d\.\d{4} - val_loss: \d\.\d{4} - "
            r"val_accuracy: \d\.\d{4}$",
            line,
        ), line

    model.fit(x, labels, epochs=2, verbose=2)
    out, err = capfd.readouterr()
    lines = [line for line in out.splitlines() if "loss:" in line]
    assert len(lines) == 2 and "10/10" in lines[0] and "accuracy:" in lines[0]
    assert err == ""

    model.evaluate(x, labels)  # "auto": a bar, then the summary line, as Keras
    out, err = capfd.readouterr()
    assert "Evaluate" in err and re.search(r"Evaluate: 10/10 .* accuracy: \d\.\d{4}$", out)


def test_history_plot_writes_png(blobs, tmp_path):
    x, labels = blobs
    model = classifier()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(x, labels, epochs=3, validation_split=0.2, verbose=0)
    path = history.plot(tmp_path / "curves.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]  # no temp file left
    fig = history.plot()
    assert len(fig.axes) == 2  # loss and accuracy panels


def test_wrapped_torch_module_and_fit_function(blobs):
    x, labels = blobs
    net = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3), torch.nn.Softmax(dim=-1)
    )
    history = optimist.fit(
        net,
        x,
        labels,
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        epochs=20,
        verbose=0,
    )
    model = history.model
    assert isinstance(model, optimist.Model) and model.module is net
    assert model._fold == "softmax"
    assert history.history["accuracy"][-1] > 0.9
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    text = model.summary(print_fn=None)
    assert "0 (Linear)" in text and "(None, 16)" in text and "Total params: 131" in text


def test_subclassed_model():
    class Net(optimist.Model):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(2, 8)
            self.out = torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(x)))

    x = np.random.default_rng(0).uniform(-1, 1, (128, 2)).astype(np.float32)
    y = (x[:, :1] * x[:, 1:]).astype(np.float32)
    net = Net()
    net.compile(optimizer="adam", loss="mae", metrics=["mse"])
    history = net.fit(x, y, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "mse"}
    assert net.name == "net"


def test_eval_mode_in_evaluate_and_predict(blobs):
    x, labels = blobs
    model = optimist.Sequential(
        [
            Dense(16, activation="relu", input_shape=(4,)),
            BatchNormalization(),
            Dropout(0.5),
            Dense(3, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    assert not model.training  # Keras: inference mode outside fit
    model.fit(x, labels, epochs=1, verbose=0)
    assert not any(m.training for m in model.modules())  # fit ends in inference mode
    first = model.evaluate(x, labels, verbose=0)
    assert model.evaluate(x, labels, verbose=0) == first
    assert np.array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))
    assert torch.equal(model(x), model(x))  # Dropout off in model(x), as in Keras
    assert not torch.equal(model(x, training=True), model(x, training=True))
    assert not model.training  # training=True is for that call only
    model.train()  # a torch user's choice is kept by evaluate/predict
    model.evaluate(x, labels, verbose=0)
    model.predict(x, verbose=0)
    assert model.training


def test_conv_and_recurrent_models_train():
    rng = np.random.default_rng(0)
    images = rng.random((32, 8, 8, 1), dtype=np.float32)
    classes = rng.integers(0, 2, 32)
    conv = optimist.Sequential(
        [
            Conv2D(4, 3, activation="relu", padding="same", input_shape=(8, 8, 1)),
            MaxPooling2D(),
            Flatten(),
            Dense(2, activation="softmax"),
        ]
    )
    conv.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    conv.fit(images, classes, epochs=1, verbose=0)
    tokens = rng.integers(0, 20, (32, 6))
    rnn = optimist.Sequential(
        [Embedding(20, 8, input_shape=(6,)), LSTM(5), Dense(1, activation="sigmoid")]
    )
    rnn.compile("adam", "binary_crossentropy", ["accuracy"])
    history = rnn.fit(tokens, classes.astype(np.float32), epochs=2, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert rnn._fold == "sigmoid"


def test_initial_epoch_and_repeated_fit_continue(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile("adam", "mse")
    history = model.fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert history.epoch == [3, 4] and model.epoch == 5
    assert model.fit(x, y, epochs=5, initial_epoch=5, verbose=0).history == {}


def test_one_hot_targets_train_as_labels_with_the_same_results(blobs):
    x, labels = blobs
    y = to_categorical(labels, 3)
    runs, models = [], []
    for metrics in (["accuracy", "top_k_accuracy"], ["accuracy", "top_k_accuracy", "mse"]):
        torch.manual_seed(0)  # the second run keeps one-hot targets (mse reads them)
        model = classifier()
        model.compile("sgd", "categorical_crossentropy", metrics)
        runs.append(model.fit(x, y, epochs=2, verbose=0, validation_split=0.2).history)
        models.append(model)
    from optimist.training.data import ArrayData

    compact = models[0]._compact_targets(ArrayData(torch.from_numpy(x), torch.from_numpy(y), None))
    assert compact.y.dtype == torch.long and torch.equal(compact.y, torch.from_numpy(labels))
    kept = models[1]._compact_targets(ArrayData(torch.from_numpy(x), torch.from_numpy(y), None))
    assert kept.y.dtype == torch.float32
    soft = y * 0.9 + 0.1 / 3  # label smoothing: not one-hot, never converted
    assert models[0]._compact_targets(ArrayData(None, torch.from_numpy(soft), None)).y.dim() == 2
    for key in ("loss", "accuracy", "top_k_accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-6, err_msg=key)
