"""Functional models of several inputs: fit / evaluate / predict / validation, as Keras."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist import layers as L

RNG = np.random.default_rng(0)
X1 = RNG.standard_normal((60, 4)).astype(np.float32)
X2 = RNG.standard_normal((60, 3)).astype(np.float32)
Y = ((X1[:, 0] + X2[:, 1]) > 0).astype(np.int64)  # needs both inputs


def two_input_model(k=optimist, layers=L, names=("a", "b")):
    a = k.Input(shape=(4,), name=names[0])
    b = k.Input(shape=(3,), name=names[1])
    merged = layers.Concatenate()(
        [layers.Dense(6, activation="relu")(a), layers.Dense(6, activation="tanh")(b)]
    )
    return k.Model(inputs=[a, b], outputs=layers.Dense(2, activation="softmax")(merged))


def test_fit_shuffles_the_inputs_together_like_a_hand_loop():
    torch.manual_seed(5)
    fitted = two_input_model()
    opt = optimist.optim.SGD(fitted.parameters(), lr=0.1)
    fitted.compile(opt, "sparse_categorical_crossentropy")
    fitted.fit([X1, X2], Y, batch_size=8, epochs=2, verbose=0)

    torch.manual_seed(5)
    by_hand = two_input_model()
    opt = optimist.optim.SGD(by_hand.parameters(), lr=0.1)
    x1, x2, y = torch.from_numpy(X1), torch.from_numpy(X2), torch.from_numpy(Y)
    g = torch.Generator().manual_seed(torch.initial_seed())
    by_hand.train()
    for _ in range(2):
        for idx in torch.randperm(60, generator=g).split(8):
            opt.zero_grad()
            loss = F.cross_entropy(by_hand._forward_logits(x1[idx], x2[idx]), y[idx])
            loss.backward()
            opt.step()
    for a, b in zip(fitted.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(a, b)


def test_list_and_dict_inputs_evaluate_predict_and_validate_alike():
    torch.manual_seed(0)
    model = two_input_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    history = model.fit(
        {"a": X1, "b": X2},
        Y,
        batch_size=10,
        epochs=30,
        verbose=0,
        validation_data=([X1[:20], X2[:20]], Y[:20]),
    )
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.history["loss"][-1] < history.history["loss"][0]
    as_list = model.evaluate([X1, X2], Y, verbose=0, return_dict=True)
    as_dict = model.evaluate({"b": X2, "a": X1}, Y, verbose=0, return_dict=True)
    assert as_list == as_dict and as_list["accuracy"] > 0.8  # it learned from both inputs
    probs = model.predict([X1, X2], batch_size=7, verbose=0)
    np.testing.assert_allclose(probs, model([X1, X2]).numpy(), rtol=1e-6)
    np.testing.assert_allclose(probs, model.predict({"a": X1, "b": X2}, verbose=0), rtol=1e-6)
    # validation_split holds out the last rows of every input
    history = model.fit([X1, X2], Y, epochs=1, validation_split=0.25, verbose=0, shuffle=False)
    last = model.evaluate([X1[45:], X2[45:]], Y[45:], verbose=0, return_dict=True)
    assert history.history["val_loss"][0] == pytest.approx(last["loss"])


@pytest.mark.parametrize(
    "x,message",
    [
        (X1, "has 2 inputs"),
        ([X1], "has 2 inputs"),
        ([X1, X2[:50]], "different lengths"),
        ([X1, X1], r"x\[1\] has shape \(60, 4\)"),
        ({"a": X1}, "must have the keys"),
        ([X1, np.full_like(X2, np.nan)], r"x\[1\] contains 180 NaN"),
    ],
)
def test_bad_multi_input_is_refused_clearly(x, message):
    model = two_input_model()
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        model.fit(x, Y, verbose=0)
    for a, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(a, b)  # nothing trained


def test_dict_needs_named_inputs():
    model = two_input_model(names=(None, None))
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="not every Input has a name"):
        model.fit({"a": X1, "b": X2}, Y, verbose=0)
