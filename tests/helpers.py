"""Shared test helpers.

``require`` skips a test whose outside resource (a data package, a database server, a browser) is
missing on a developer's machine, but fails it under CI (``CI`` set in the environment), where
``.ci/run`` installs every such resource: a missing install step must not turn into a silent skip.
"""

from __future__ import annotations

import os

import pytest


def require(available: bool, what: str, how_to_install: str) -> None:
    """Skip (locally) or fail (in CI) unless ``available``."""
    if available:
        return
    message = f"{what} is not available; install it with: {how_to_install}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {message}")
    pytest.skip(message)
