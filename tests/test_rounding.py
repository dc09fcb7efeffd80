"""Hessian-aware weight rounding: on the converter's grid, and better than nearest rounding."""

from __future__ import annotations

import numpy as np
import pytest
import tflite

from quant.ptq.layers import WeightedLayer
from quant.ptq.rounding import round_layer, round_nearest, weight_scales

CONV = WeightedLayer(0, tflite.BuiltinOperator.CONV_2D, 0, 1, 2, 3)
DEPTHWISE = WeightedLayer(0, tflite.BuiltinOperator.DEPTHWISE_CONV_2D, 0, 1, 2, 3)


def _correlated_inputs(rng, positions: int, width: int) -> np.ndarray:
    mixing = rng.normal(size=(width, width)) / np.sqrt(width)
    return rng.normal(size=(positions, width)) @ mixing + 0.3


def _conv_case(seed: int = 0, outlier: float = 1.0):
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(16, 1, 1, 48)).astype(np.float32)
    weights[0] *= outlier  # a large channel sets the per-tensor step
    x = _correlated_inputs(rng, 4000, 48)
    return weights, x.T @ x / len(x), x


def _output_error(weights, rounded, x) -> float:
    delta = (rounded - weights).reshape(weights.shape[0], -1)
    return float(np.mean((x @ delta.T) ** 2))


def _on_converter_grid(rounded: np.ndarray, per_tensor: bool) -> bool:
    """The converter's scale is max|w| / 127 of what it is given: every value a multiple."""
    scales = weight_scales(rounded, CONV, per_tensor)
    steps = rounded / scales
    return bool(np.allclose(steps, np.round(steps), atol=1e-3) and np.abs(steps).max() <= 127.5)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_rounding_is_on_the_grid_and_beats_nearest(per_tensor):
    weights, moment, x = _conv_case(outlier=6.0)
    rounded, _ = round_layer(weights, moment, CONV, per_tensor)
    nearest = round_nearest(weights, weight_scales(weights, CONV, per_tensor))
    assert _on_converter_grid(rounded, per_tensor)
    assert _output_error(weights, rounded, x) < 0.8 * _output_error(weights, nearest, x)


def test_per_tensor_clips_weights_of_a_nearly_silent_input():
    """Large weights on an input that is almost always zero (a dead ReLU channel, common in
    MobileNetV2) should not set the step of the whole tensor."""
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(16, 1, 1, 48)).astype(np.float32)
    weights[..., 0] *= 30.0
    x = _correlated_inputs(rng, 4000, 48)
    x[:, 0] *= 0.01
    moment = x.T @ x / len(x)
    rounded, _ = round_layer(weights, moment, CONV, per_tensor=True)
    assert _on_converter_grid(rounded, per_tensor=True)
    assert np.abs(rounded).max() < 0.95 * np.abs(weights).max()  # a smaller step was chosen
    unclipped = round_nearest(weights, weight_scales(weights, CONV, True))
    assert _output_error(weights, rounded, x) < 0.5 * _output_error(weights, unclipped, x)


def test_depthwise_rounding_per_channel():
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(1, 3, 3, 8)).astype(np.float32)
    patches = rng.normal(size=(2000, 9, 8)) + 0.5
    moment = np.einsum("pkc,plc->ckl", patches, patches) / len(patches)
    rounded, _ = round_layer(weights, moment, DEPTHWISE, per_tensor=False)
    scales = weight_scales(rounded, DEPTHWISE, False)
    assert np.allclose(rounded / scales, np.round(rounded / scales), atol=1e-3)

    def error(values):
        delta = (values - weights)[0].reshape(9, 8)
        return float(np.einsum("kc,ckl,lc->", delta, moment, delta))

    assert error(rounded) <= error(round_nearest(weights, weight_scales(weights, DEPTHWISE,
                                                                        False)))
