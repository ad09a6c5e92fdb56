"""fit refreshes SophiaG's curvature estimate every k steps (Gauss-Newton-Bartlett, Alg. 3)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense
from optimist.optim import SophiaG


def make(seed: int = 2) -> optimist.Sequential:
    torch.manual_seed(seed)
    return optimist.Sequential(
        [Dense(8, activation="relu", input_shape=(4,)), Dense(3, activation="softmax")]
    )


def hessians(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [opt.state[p]["hessian"].clone() for g in opt.param_groups for p in g["params"]]


def test_fit_equals_a_hand_loop_that_refreshes_every_k_steps(blobs):
    x, labels = blobs
    x, labels = torch.from_numpy(x[:96]), torch.from_numpy(labels[:96])
    k, batch, epochs = 3, 16, 2  # 6 steps an epoch: refreshes after steps 3, 6, 9, 12

    fitted = make()
    opt = SophiaG(fitted.parameters(), lr=0.01, rho=0.05)
    opt.hessian_interval = k
    fitted.compile(opt, "sparse_categorical_crossentropy")
    seen: list[list[torch.Tensor]] = []
    record = optimist.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(hessians(fitted.optimizer))
    )
    torch.manual_seed(5)
    fitted.fit(
        x, labels, batch_size=batch, epochs=epochs, shuffle=False, verbose=0, callbacks=[record]
    )

    by_hand = make()
    hand = SophiaG(by_hand.parameters(), lr=0.01, rho=0.05)
    by_hand.train()
    torch.manual_seed(5)
    step = 0
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            xb, yb = x[i : i + batch], labels[i : i + batch]
            hand.zero_grad()
            F.cross_entropy(by_hand._forward_logits(xb), yb).backward()
            hand.step()
            step += 1
            if step % k == 0:  # the authors' refresh, right after the step
                hand.zero_grad()
                logits = by_hand._forward_logits(xb)
                y_hat = torch.distributions.Categorical(logits=logits.detach()).sample()
                F.cross_entropy(logits, y_hat).backward()
                for group in hand.param_groups:
                    group["bs"] = len(xb)
                hand.update_hessian()
                hand.zero_grad()

    for a, b in zip(fitted.parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    for a, b in zip(hessians(fitted.optimizer), hessians(hand), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    # the estimate changes after every k-th step and only then (counted across the epochs)
    changed = [
        not all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        for before, after in zip(seen, seen[1:], strict=False)
    ]
    assert changed == [(s + 1) % k == 0 for s in range(1, len(seen))]
    assert any(bool(h.abs().sum() > 0) for h in seen[-1])
    assert fitted.optimizer.param_groups[0]["bs"] == batch


def test_binary_crossentropy_samples_bernoulli_labels(blobs):
    x, labels = blobs
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(1, activation="sigmoid", input_shape=(4,))])
    opt = SophiaG(model.parameters(), lr=0.01)
    opt.hessian_interval = 2
    model.compile(opt, "binary_crossentropy")
    model.fit(x[:64], (labels[:64] == 0).astype("float32"), batch_size=16, verbose=0)
    assert all(bool(h.abs().sum() > 0) for h in hessians(model.optimizer))


def test_other_losses_warn_once_and_leave_the_estimate_alone(blobs):
    x, labels = blobs
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(1, input_shape=(4,))])
    model.compile(SophiaG(model.parameters(), lr=0.01), "mse")
    y = labels[:64].astype("float32")
    with pytest.warns(RuntimeWarning, match="curvature estimate stays at its start"):
        model.fit(x[:64], y, batch_size=8, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.fit(x[:64], y, batch_size=8, verbose=0)  # once per optimizer
    assert all(not bool(h.any()) for h in hessians(model.optimizer))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_interval_is_refused(blobs, bad):
    x, labels = blobs
    model = make()
    opt = SophiaG(model.parameters())
    opt.hessian_interval = bad
    model.compile(opt, "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="hessian_interval"):
        model.fit(x[:32], labels[:32], batch_size=16, verbose=0)


def test_optimizers_without_update_hessian_are_untouched(blobs):
    x, labels = blobs
    model = make()
    model.compile("adam", "sparse_categorical_crossentropy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.fit(x[:32], labels[:32], batch_size=16, verbose=0)
