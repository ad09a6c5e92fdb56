"""The linear-regression classic, and ``fit`` == a hand-written PyTorch loop, bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense, Dropout


def hand_loop(model, opt, x, y, *, epochs, batch_size, shuffle):
    """What ``fit`` documents it does: per epoch one randperm from a generator seeded with
    ``torch.initial_seed()`` (at compile time), then zero_grad / forward / mean loss / backward /
    step per batch."""
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    g = torch.Generator().manual_seed(torch.initial_seed())
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g) if shuffle else torch.arange(len(x))
        for idx in order.split(batch_size):
            opt.zero_grad()
            loss = F.mse_loss(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return model


def test_linear_regression_learns_2x_plus_1(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=250, batch_size=8, verbose=0)
    kernel, bias = model[0].kernel.item(), model[0].bias.item()
    assert kernel == pytest.approx(2.0, abs=1e-2)
    assert bias == pytest.approx(1.0, abs=1e-2)
    assert history.history["loss"][-1] < 1e-4
    assert model.predict([[3.0]], verbose=0)[0, 0] == pytest.approx(7.0, abs=3e-2)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [32, 7])
def test_fit_equals_hand_loop_with_adam(line_data, shuffle, batch_size):
    x, y = line_data
    torch.manual_seed(123)
    fitted = optimist.Sequential([Dense(1, input_shape=(1,))])
    fitted.compile(optimizer=optimist.optim.Adam, loss="mse")  # a factory params -> optimizer
    fitted.fit(x, y, epochs=3, batch_size=batch_size, shuffle=shuffle, verbose=0)

    torch.manual_seed(123)
    by_hand = optimist.Sequential([Dense(1, input_shape=(1,))])
    opt = optimist.optim.Adam(by_hand.parameters())
    hand_loop(by_hand, opt, x, y, epochs=3, batch_size=batch_size, shuffle=shuffle)

    for (name, a), b in zip(fitted.named_parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert fitted[0].kernel.item() != 0.0


def test_fit_equals_hand_loop_mlp_with_dropout():
    """Dropout draws from torch's global generator in the same order in both loops."""
    torch.manual_seed(0)
    x = torch.randn(96, 5)
    y = x @ torch.randn(5, 2) + 0.1

    def make():
        return optimist.Sequential(
            [Dense(16, activation="relu", input_shape=(5,)), Dropout(0.3), Dense(2)]
        )

    torch.manual_seed(7)
    fitted = make()
    fitted.compile(optimizer=optimist.optim.SGD(fitted.parameters(), lr=0.05), loss="mse")
    fitted.fit(x, y, epochs=2, batch_size=16, verbose=0)

    torch.manual_seed(7)
    by_hand = make()
    hand_loop(
        by_hand,
        optimist.optim.SGD(by_hand.parameters(), lr=0.05),
        x,
        y,
        epochs=2,
        batch_size=16,
        shuffle=True,
    )
    for a, b in zip(fitted.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(a, b)


def test_full_batch_is_plain_gradient_descent(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    w0, b0 = model[0].kernel.detach().clone(), model[0].bias.detach().clone()
    model.compile(optimizer="sgd", loss="mse")  # Keras' SGD default lr = 0.01
    assert model.optimizer.param_groups[0]["lr"] == 0.01
    steps = []
    model.fit(
        x,
        y,
        batch_size=None,
        epochs=1,
        verbose=0,
        callbacks=[
            optimist.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
        ],
    )
    assert steps == [0]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    residual = xt @ w0 + b0 - yt
    grad_w = 2 * (xt * residual).mean()
    grad_b = 2 * residual.mean()
    torch.testing.assert_close(model[0].kernel.detach(), w0 - 0.01 * grad_w)
    torch.testing.assert_close(model[0].bias.detach(), b0 - 0.01 * grad_b)


def test_batch_size_one_is_stochastic(line_data):
    x, y = line_data
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    model.fit(
        x[:20],
        y[:20],
        batch_size=1,
        epochs=2,
        verbose=0,
        callbacks=[
            optimist.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
        ],
    )
    assert seen == list(range(20)) * 2
