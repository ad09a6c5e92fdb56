"""Keras' ``models`` namespace: ``optimist.models.Sequential``, ``Model``, ``load_model``."""

from __future__ import annotations

import os

from optimist.training.model import Model, load_model
from optimist.training.sequential import Sequential

__all__ = ["Model", "Sequential", "load_model", "save_model"]


def save_model(model: Model, filepath: str | os.PathLike[str]) -> None:
    """``model.save(filepath)`` (Keras' function form)."""
    model.save(filepath)
