"""Bias correction (Nagel et al. 2019): remove the mean output shift that weight rounding causes.

Rounding a layer's weights by ``dW`` shifts its mean output by ``dW . E[x]``; the shift is
systematic (the same for every image) and adds up through the network. With the mean input
patch measured on calibration images (:mod:`quant.ptq.statistics`, zero padding included),
subtracting it from the float bias makes the quantized layer unbiased on that data.
"""

from __future__ import annotations

import numpy as np
import tflite

from quant.ptq.layers import WeightedLayer


def output_shift(weight_error: np.ndarray, mean_input: np.ndarray,
                 layer: WeightedLayer) -> np.ndarray:
    """Return the mean output change per channel caused by ``weight_error``.

    Args:
        weight_error: quantized minus float weights (TFLite layout).
        mean_input: the layer's mean input patch (:class:`~quant.ptq.statistics.LayerStats`).
        layer: the layer.
    """
    if layer.kind == tflite.BuiltinOperator.CONV_2D:
        return np.einsum("ohwi,hwi->o", weight_error, mean_input)
    if layer.kind == tflite.BuiltinOperator.DEPTHWISE_CONV_2D:
        return np.einsum("hwc,hwc->c", weight_error[0], mean_input)
    return weight_error @ mean_input


def corrected_bias(bias: np.ndarray, float_weights: np.ndarray, quantized_weights: np.ndarray,
                   mean_input: np.ndarray, layer: WeightedLayer) -> np.ndarray:
    """Return the bias that cancels the mean output shift of the quantized weights."""
    shift = output_shift(quantized_weights.astype(np.float64) - float_weights, mean_input, layer)
    return (bias - shift).astype(np.float32)
