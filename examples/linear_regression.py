"""Linear regression, the classic first Keras model: learn y = 2x + 1 with one Dense unit.

Trains it twice, with ``fit`` and with a hand-written PyTorch loop doing the same work, and
shows that the two give bit-identical parameters.

    python examples/linear_regression.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import optimist
from optimist.layers import Dense

EPOCHS, BATCH = 250, 8


def data() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(-1, 1, 200, dtype=np.float32).reshape(-1, 1)
    return x, 2 * x + 1


def with_fit(x: np.ndarray, y: np.ndarray) -> optimist.Sequential:
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    print(f"fit:       final loss {history.history['loss'][-1]:.2e}")
    return model


def by_hand(x: np.ndarray, y: np.ndarray) -> optimist.Sequential:
    torch.manual_seed(0)
    model = optimist.Sequential([Dense(1, input_shape=(1,))])
    opt = optimist.optim.Adam(model.parameters())
    # fit's documented shuffle: one randperm per epoch from a generator seeded like this
    g = torch.Generator().manual_seed(torch.initial_seed())
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(xt), generator=g).split(BATCH):
            opt.zero_grad()
            loss = F.mse_loss(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    print(f"hand loop: final batch loss {loss.item():.2e}")
    return model


def main() -> None:
    x, y = data()
    a, b = with_fit(x, y), by_hand(x, y)
    kernel, bias = a[0].kernel.item(), a[0].bias.item()
    print(f"learned y = {kernel:.4f} x + {bias:.4f}   (true: y = 2 x + 1)")
    same = all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    print("fit and the hand loop give identical parameters:", same)
    print("prediction for x = 3:", a.predict(np.array([[3.0]], dtype=np.float32), verbose=0)[0, 0])


if __name__ == "__main__":
    main()
