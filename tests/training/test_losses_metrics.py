"""Losses (values vs hand formulas / torch), stable logits path, and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense
from optimist.training import losses, metrics

EPS = 1e-7


@pytest.fixture
def probs_and_targets():
    torch.manual_seed(3)
    logits = torch.randn(8, 4)
    labels = torch.randint(0, 4, (8,))
    return logits, torch.softmax(logits, -1), labels, F.one_hot(labels, 4).float()


def test_categorical_crossentropy(probs_and_targets):
    logits, probs, labels, onehot = probs_and_targets
    loss = losses.get("categorical_crossentropy")
    expected = -(onehot * probs.clamp(EPS, 1 - EPS).log()).sum(-1).mean()
    torch.testing.assert_close(loss(onehot, probs), expected)
    torch.testing.assert_close(
        loss(onehot, logits, from_logits=True), F.cross_entropy(logits, labels)
    )
    w = torch.arange(8.0)
    per = -(onehot * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(loss(onehot, logits, w, from_logits=True), (per * w).sum() / 8)


def test_sparse_categorical_crossentropy(probs_and_targets):
    logits, probs, labels, _ = probs_and_targets
    loss = losses.get("sparse_categorical_crossentropy")
    expected = -probs.clamp(EPS, 1 - EPS).log()[torch.arange(8), labels].mean()
    torch.testing.assert_close(loss(labels, probs), expected)
    torch.testing.assert_close(loss(labels.view(-1, 1), probs), expected)  # (N, 1) labels
    torch.testing.assert_close(
        loss(labels, logits, from_logits=True), F.cross_entropy(logits, labels)
    )
    seq_logits = torch.randn(2, 3, 4)
    seq_labels = torch.randint(0, 4, (2, 3))
    torch.testing.assert_close(
        loss(seq_labels, seq_logits, from_logits=True),
        F.cross_entropy(seq_logits.reshape(-1, 4), seq_labels.reshape(-1)),
    )


def test_binary_crossentropy():
    torch.manual_seed(4)
    logits = torch.randn(10, 1)
    p = torch.sigmoid(logits)
    y = torch.randint(0, 2, (10, 1)).float()
    loss = losses.get("binary_crossentropy")
    pc = p.clamp(EPS, 1 - EPS)
    expected = -(y * pc.log() + (1 - y) * (1 - pc).log()).mean()
    torch.testing.assert_close(loss(y, p), expected)
    torch.testing.assert_close(loss(y.view(-1), p), expected)  # (N,) targets align to (N, 1)
    torch.testing.assert_close(
        loss(y, logits, from_logits=True), F.binary_cross_entropy_with_logits(logits, y)
    )


def test_regression_losses():
    torch.manual_seed(5)
    pred, true = torch.randn(6, 3) * 2, torch.randn(6, 3) * 2
    d = pred - true
    torch.testing.assert_close(losses.get("mse")(true, pred), d.square().mean())
    torch.testing.assert_close(losses.get("mean_squared_error")(true, pred), d.square().mean())
    torch.testing.assert_close(losses.get("mae")(true, pred), d.abs().mean())
    huber = torch.where(d.abs() <= 1, 0.5 * d.square(), d.abs() - 0.5).mean()
    torch.testing.assert_close(losses.get("huber")(true, pred), huber)
    torch.testing.assert_close(losses.get("log_cosh")(true, pred), torch.log(torch.cosh(d)).mean())
    p, t = torch.rand(6, 3) + 0.1, torch.rand(6, 3)
    torch.testing.assert_close(losses.get("poisson")(t, p), (p - t * torch.log(p + EPS)).mean())
    tk, pk = t.clamp(EPS, 1), p.clamp(EPS, 1)
    torch.testing.assert_close(losses.get("kld")(t, p), (tk * (tk / pk).log()).sum(-1).mean())
    # per-sample weights: mean over the last axis, weighted, divided by the batch size
    w = torch.tensor([1.0, 0, 2, 0, 1, 0])
    torch.testing.assert_close(
        losses.get("mse")(true, pred, w), (d.square().mean(-1) * w).sum() / 6
    )


def test_unknown_loss_and_custom_losses():
    with pytest.raises(ValueError, match=r"Unknown loss 'mse2'.*binary_crossentropy.*huber.*mse"):
        losses.get("mse2")
    y, p = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(losses.get(torch.nn.L1Loss())(y, p), (p - y).abs().mean())
    keras_style = losses.get(lambda y_true, y_pred: (y_pred - y_true) ** 3)
    torch.testing.assert_close(keras_style(y, p), ((p - y) ** 3).mean())


def test_softmax_model_at_extreme_logits_stays_finite():
    model = optimist.Sequential([Dense(3, activation="softmax", input_shape=(2,))])
    with torch.no_grad():
        model[0].kernel.copy_(torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]]))
    model.compile(optimizer="sgd", loss="categorical_crossentropy", metrics=["accuracy"])
    assert model._fold == "softmax"
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[[1, 0, 2]]  # every prediction confidently wrong
    history = model.fit(x, y, epochs=1, batch_size=3, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss) and loss > 1e3  # exact log-softmax, not clipped probabilities
    assert all(torch.isfinite(p).all() for p in model.parameters())
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    sparse = optimist.Sequential([Dense(3, activation="softmax", input_shape=(2,))])
    with torch.no_grad():
        sparse[0].kernel.fill_(1e4)
    sparse.compile("sgd", "sparse_categorical_crossentropy")
    assert np.isfinite(sparse.evaluate(x, np.array([0, 1, 2]), verbose=0))


def test_sigmoid_model_binary_crossentropy_uses_logits():
    model = optimist.Sequential([Dense(1, activation="sigmoid", input_shape=(1,))])
    with torch.no_grad():
        model[0].kernel.fill_(1e4)
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    assert model._fold == "sigmoid"
    loss, acc = model.evaluate(np.array([[1.0], [-1.0]]), np.array([0.0, 1.0]), verbose=0)
    assert loss == pytest.approx(1e4, rel=1e-3) and acc == 0.0


def test_accuracy_resolution():
    y_pred = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = torch.tensor([1, 1, 1])
    acc = metrics.get("accuracy", loss_name="sparse_categorical_crossentropy")
    acc.update(labels, y_pred)
    assert acc.result() == pytest.approx(2 / 3)
    acc = metrics.get("accuracy")  # by shapes: one-hot targets -> categorical
    acc.update(F.one_hot(labels, 2).float(), y_pred)
    assert isinstance(acc.kind, metrics.CategoricalAccuracy) and acc.result() == pytest.approx(
        2 / 3
    )
    acc = metrics.get("acc")  # (N, 1) predictions -> binary
    acc.update(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.7], [0.6]]))
    assert isinstance(acc.kind, metrics.BinaryAccuracy) and acc.result() == 0.5
    acc.reset()
    acc.update(torch.tensor([1.0, 0.0]), torch.tensor([[3.0], [-2.0]]), "sigmoid")  # logits
    assert acc.result() == 1.0
    assert acc.name == "acc"


def test_top_k_and_regression_metrics():
    torch.manual_seed(6)
    y_pred = torch.randn(50, 10)
    labels = torch.randint(0, 10, (50,))
    top = metrics.get("top_k_accuracy")
    top.update(labels, y_pred)
    expected = (y_pred.topk(5, -1).indices == labels[:, None]).any(-1).float().mean().item()
    assert top.result() == pytest.approx(expected)
    top2 = metrics.TopKAccuracy(k=2)
    top2.update(F.one_hot(labels, 10).float(), y_pred)  # one-hot targets work too
    expected2 = (y_pred.topk(2, -1).indices == labels[:, None]).any(-1).float().mean().item()
    assert top2.result() == pytest.approx(expected2)
    y_true = torch.randn(50, 10)
    mae, mse = metrics.get("mae"), metrics.get("mse")
    for batch in range(0, 50, 20):  # accumulates across batches of unequal size
        mae.update(y_true[batch : batch + 20], y_pred[batch : batch + 20])
        mse.update(y_true[batch : batch + 20], y_pred[batch : batch + 20])
    assert mae.result() == pytest.approx((y_pred - y_true).abs().mean().item(), rel=1e-6)
    assert mse.result() == pytest.approx((y_pred - y_true).square().mean().item(), rel=1e-6)


def test_callable_metric_and_unknown_name():
    def max_error(y_true, y_pred):
        return (y_true - y_pred).abs().amax(-1)

    m = metrics.get(max_error)
    assert m.name == "max_error"
    m.update(torch.zeros(2, 2), torch.tensor([[1.0, 3.0], [2.0, 0.0]]))
    assert m.result() == pytest.approx(2.5)
    with pytest.raises(ValueError, match=r"Unknown metric 'acuracy'.*accuracy.*top_k_accuracy"):
        metrics.get("acuracy")


def test_metrics_in_evaluate_match_manual(blobs):
    x, labels = blobs
    model = optimist.Sequential([Dense(3, activation="softmax", input_shape=(4,))])
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy", "top_k_accuracy"])
    result = model.evaluate(x, labels, batch_size=64, return_dict=True, verbose=0)
    assert list(result) == ["loss", "accuracy", "top_k_accuracy"]
    probs = model.predict(x, verbose=0)
    assert result["accuracy"] == pytest.approx((probs.argmax(1) == labels).mean())
    assert result["top_k_accuracy"] == 1.0  # k=5 >= 3 classes
    expected_loss = F.nll_loss(torch.log(torch.from_numpy(probs)), torch.from_numpy(labels))
    assert result["loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
