"""Bad input gives a clear error before any training step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optimist
from optimist.layers import Dense, Embedding, Flatten


def compiled(loss="sparse_categorical_crossentropy", n_in=4, n_out=10, metrics=("accuracy",)):
    model = optimist.Sequential(
        [Dense(8, activation="relu", input_shape=(n_in,)), Dense(n_out, activation="softmax")]
    )
    model.compile("sgd", loss, list(metrics))
    return model


X = np.zeros((20, 4), dtype=np.float32)
LABELS = np.arange(20) % 10


def test_mismatched_lengths():
    with pytest.raises(ValueError, match=r"x has 20 samples, y has 19"):
        compiled().fit(X, LABELS[:19], verbose=0)
    with pytest.raises(ValueError, match=r"validation x has 5 samples, validation y has 4"):
        compiled().fit(X, LABELS, validation_data=(X[:5], LABELS[:4]), verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight has 3 entries but x has 20"):
        compiled().fit(X, LABELS, sample_weight=np.ones(3), verbose=0)


def test_wrong_feature_count():
    with pytest.raises(
        ValueError,
        match=r"expects input shape \(None, 4\): expected 4 features "
        r"per sample, got 7",
    ):
        compiled().fit(np.zeros((20, 7), np.float32), LABELS, verbose=0)
    with pytest.raises(ValueError, match=r"expected 4 features per sample, got 3"):
        compiled().predict(np.zeros((2, 3)), verbose=0)
    with pytest.raises(ValueError, match=r"expected per-sample shape \(4,\), got \(2, 2\)"):
        compiled().evaluate(np.zeros((20, 2, 2)), LABELS, verbose=0)


def test_labels_out_of_range():
    model = compiled()
    before = [p.detach().clone() for p in model.parameters()]
    bad = LABELS.copy()
    bad[3] = 10
    with pytest.raises(
        ValueError,
        match=r"labels must be in \[0, 10\) for a model with 10 "
        r"outputs; got labels from 0 to 10",
    ):
        model.fit(X, bad, verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match=r"got labels from -1 to 9"):
        model.evaluate(X, LABELS - (LABELS == 0), verbose=0)
    with pytest.raises(ValueError, match=r"whole numbers"):
        model.fit(X, LABELS + 0.5, verbose=0)
    with pytest.raises(
        ValueError,
        match=r"one-hot targets shaped like the model output "
        r"\(None, 10\), got targets of shape \(None,\).*"
        r"sparse_categorical_crossentropy",
    ):
        compiled("categorical_crossentropy").fit(X, LABELS, verbose=0)
    with pytest.raises(ValueError, match=r"binary_crossentropy targets must lie in \[0, 1\]"):
        compiled("binary_crossentropy", n_out=1).fit(X, LABELS.astype(np.float32), verbose=0)
    with pytest.raises(
        ValueError,
        match=r"targets of shape \(None, 3\) do not match the model "
        r"output shape \(None, 1\)",
    ):
        compiled("mse", n_out=1, metrics=()).fit(X, np.zeros((20, 3)), verbose=0)


def test_embedding_index_out_of_range():
    model = optimist.Sequential([Embedding(5, 2, input_shape=(3,)), Flatten(), Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(
        ValueError,
        match=r"indices from 0 to 7, but the embedding has "
        r"input_dim=5",
    ):
        model.fit(np.array([[0, 1, 7]]), np.zeros((1, 1)), verbose=0)


def test_nan_and_inf_in_inputs():
    x = X.copy()
    x[0, 0] = np.nan
    x[1, 1] = np.nan
    x[2, 2] = np.inf
    with pytest.raises(ValueError, match=r"^x contains 2 NaN and 1 inf values \(out of 80\)"):
        compiled().fit(x, LABELS, verbose=0)
    with pytest.raises(ValueError, match=r"^validation x contains 1 NaN value"):
        compiled().fit(X, LABELS, validation_data=(x[:1], LABELS[:1]), verbose=0)
    y = np.zeros((20, 1), np.float32)
    y[4] = -np.inf
    with pytest.raises(ValueError, match=r"^y contains 1 inf value"):
        compiled("mse", n_out=1, metrics=()).fit(X, y, verbose=0)


def test_unknown_names():
    model = compiled()
    with pytest.raises(
        ValueError,
        match=r"Unknown loss 'cross_entropy'\. Valid names: "
        r".*categorical_crossentropy",
    ):
        model.compile("sgd", "cross_entropy")
    with pytest.raises(ValueError, match=r"Unknown metric 'accurracy'\. Valid names: .*accuracy"):
        model.compile("sgd", "mse", ["accurracy"])
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adma'.*adam"):
        model.compile("adma", "mse")
    with pytest.raises(ValueError, match=r"Unknown activation 'softmx'.*softmax"):
        Dense(3, activation="softmx")
    with pytest.raises(ValueError, match=r"Unknown initializer 'glorot'.*glorot_uniform"):
        Dense(3, kernel_initializer="glorot")


def test_use_before_compile():
    model = optimist.Sequential([Dense(1, input_shape=(4,))])
    for call in (lambda: model.fit(X, LABELS), lambda: model.evaluate(X, LABELS)):
        with pytest.raises(RuntimeError, match=r"must compile the model.*model\.compile\("):
            call()
    assert model.predict(X, verbose=0).shape == (20, 1)  # predict needs no compile


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
        ({"batch_size": -3}, r"batch_size must be an int >= 1, got -3"),
        ({"batch_size": 2.5}, r"batch_size must be an int >= 1"),
        ({"epochs": -1}, r"epochs must be an int >= 0, got -1"),
        ({"validation_split": 1.0}, r"validation_split must be in \[0, 1\), got 1\.0"),
        ({"validation_split": -0.1}, r"validation_split must be in \[0, 1\)"),
        ({"verbose": 3}, r"verbose must be 0, 1, 2 or 'auto'"),
        ({"class_weight": {-1: 2.0}}, r"class_weight keys must be class indices"),
    ],
)
def test_bad_fit_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compiled().fit(X, LABELS, **kwargs)


def test_other_misuse():
    with pytest.raises(
        ValueError, match=r"validation_split=0.99 leaves no training samples out of 20"
    ):
        compiled().fit(X, LABELS, validation_split=0.99, verbose=0)
    lazy = optimist.Sequential([Dense(3)])
    with pytest.raises(ValueError, match=r"optimizer instance cannot hold them"):
        lazy.compile(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), "mse")
    with pytest.raises(ValueError, match=r"the optimizer holds none of this model's parameters"):
        compiled().compile(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), "mse")
    with pytest.raises(ValueError, match=r"x is required"):
        compiled().fit(None, LABELS)
    with pytest.raises(ValueError, match=r"y is required"):
        compiled().fit(X, None)
    with pytest.raises(ValueError, match=r"must be numeric"):
        compiled().fit(np.array([["a"] * 4] * 20), LABELS)


def test_empty_arrays_raise_instead_of_nan():
    model = compiled()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"x is empty \(0 samples\)"):
        model.fit(X[:0], LABELS[:0], verbose=0)
    with pytest.raises(ValueError, match=r"validation x is empty"):
        model.fit(X, LABELS, validation_data=(X[:0], LABELS[:0]), verbose=0)
    with pytest.raises(ValueError, match=r"x is empty"):
        model.evaluate(X[:0], LABELS[:0], verbose=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model.predict(X[:0], verbose=0).shape[0] == 0  # predicting nothing is fine


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float16),
        lambda a: torch.from_numpy(a).to(torch.bfloat16),
        lambda a: a.astype(np.float64),
        lambda a: torch.from_numpy(a).half(),
    ],
    ids=["np.float16", "torch.bfloat16", "np.float64", "torch.float16"],
)
def test_any_float_input_dtype_is_cast_to_the_model_dtype(convert):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 4)).astype(np.float16).astype(np.float32)  # exact in float16
    x_bf16 = torch.from_numpy(x).bfloat16().float().numpy()  # and in bfloat16
    results = []
    for data in (x_bf16, convert(x_bf16)):
        torch.manual_seed(0)
        model = compiled()
        model.fit(data, LABELS, epochs=2, verbose=0)
        results.append((model.evaluate(data, LABELS, verbose=0), model.predict(data, verbose=0)))
        loader = torch.utils.data.TensorDataset(torch.as_tensor(data))  # cast per batch too
        assert model.predict(loader, verbose=0).dtype == np.float32
    assert results[1][1].dtype == np.float32
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
