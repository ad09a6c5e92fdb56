"""Bad arguments to the Keras-style optimizers that Keras itself lets through (and then
trains on NaN, never grows a scale, or reads a string letter by letter) get a clear error or
their evident meaning here."""

from __future__ import annotations

import math

import pytest
import torch

from optimist import optimizers


@pytest.mark.parametrize("scale", [0, -4.0, math.inf, math.nan, "big"])
def test_loss_scale_must_be_finite_and_positive(scale):
    with pytest.raises(ValueError, match="initial_scale"):
        optimizers.LossScaleOptimizer(optimizers.SGD(), initial_scale=scale)


@pytest.mark.parametrize("steps", [0, -1, 2.5, True])
def test_growth_interval_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match="dynamic_growth_steps"):
        optimizers.LossScaleOptimizer(optimizers.SGD(), dynamic_growth_steps=steps)


def test_a_string_is_one_pattern_not_its_letters():
    muon = optimizers.Muon(exclude_layers="head")
    assert muon.exclude_layers == ["head"]
    adamw = optimizers.AdamW()
    adamw.exclude_from_weight_decay(var_names="bias")
    # "embeddings" has the letters b, i and s but not "bias"
    assert adamw._use_weight_decay(torch.zeros(2), "embedding.embeddings")
    assert not adamw._use_weight_decay(torch.zeros(2), "dense.bias")


def test_bad_regular_expressions_are_value_errors():
    with pytest.raises(ValueError, match="regular expressions"):
        optimizers.Muon(exclude_layers=["("])
    with pytest.raises(ValueError, match="regular expressions"):
        optimizers.AdamW().exclude_from_weight_decay(var_names=["("])
