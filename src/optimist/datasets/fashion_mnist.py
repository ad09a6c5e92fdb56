"""Fashion-MNIST (Zalando): 60,000 + 10,000 grey 28x28 images of clothes in 10 classes, offline.

Source: Debian's package ``dataset-fashion-mnist`` installs the four official idx files, gzipped,
in ``/usr/share/datasets/fashion-mnist/``; ``$OPTIMIST_FASHION_MNIST_DIR`` may name another folder
holding the same four files (``.gz`` or plain). The idx format is parsed here, with its magic
numbers and lengths checked.

Install with ``apt-get install -y dataset-fashion-mnist`` or run ``scripts/install_data.sh``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from optimist.datasets import _common

__all__ = ["CLASS_NAMES", "DEFAULT_DIR", "INSTALL_COMMAND", "load_data", "locate_source"]

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "OPTIMIST_FASHION_MNIST_DIR"
INSTALL_COMMAND = f"apt-get update && apt-get install -y {DEBIAN_PACKAGE}"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

#: Label -> class name, as listed by Zalando.
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_NAME = "fashion_mnist"


def locate_source() -> list[Path]:
    """The four idx files (x_train, y_train, x_test, y_test order).

    Raises :class:`DatasetNotAvailableError` with the install command when any is missing.
    """
    env = os.environ.get(ENV_DIR, "").strip()
    folder = Path(env).expanduser() if env else DEFAULT_DIR
    found = {key: _common.find_idx(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[key] for key, path in found.items() if path is None]
    if missing:
        if env:
            raise _common.DatasetNotAvailableError(
                f"${ENV_DIR} is {folder}, which lacks {', '.join(missing)} (.gz or plain); "
                f"unset it to use Debian's package: {INSTALL_COMMAND} "
                f"(or run {_common.INSTALL_SCRIPT})"
            )
        raise _common.DatasetNotAvailableError(
            f"Fashion-MNIST needs the Debian package '{DEBIAN_PACKAGE}' (files in {folder}): "
            f"{INSTALL_COMMAND} (or run {_common.INSTALL_SCRIPT}, or set ${ENV_DIR} to a folder "
            "holding the four idx files)"
        )
    return [found[key] for key in IDX_FILES]  # type: ignore[misc]


def _check(arrays: Any) -> None:
    _common.check_image_set(
        arrays,
        what="Fashion-MNIST",
        n_train=60000,
        n_test=10000,
        image_shape=(28, 28),
        num_classes=10,
    )


def load_data(
    *, copy: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Fashion-MNIST as ``(x_train, y_train), (x_test, y_test)``, like Keras' loader.

    ``x_*`` are ``uint8`` images ``(n, 28, 28)``, ``y_*`` ``uint8`` labels 0..9 (see
    :data:`CLASS_NAMES`), n = 60000 and 10000. ``copy=False`` returns the shared read-only arrays.
    """
    sources = locate_source()
    files = dict(zip(IDX_FILES, sources, strict=True))
    arrays = _common.cached(_NAME, sources, lambda: _common.read_idx_set(files), _check)
    return _common.keras_tuple(arrays, copy)
