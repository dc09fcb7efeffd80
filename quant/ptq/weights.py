"""Weight stage between calibration and quantization: Hessian-aware rounding, bias correction.

Both act on the calibrated float model (BatchNorm folded), so the quantizer then writes
exactly the chosen int8 weights and corrected biases.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from quant.modes import Rounding, parse
from quant.ptq import bias_correction, layers, rounding, statistics
from quant.tflite_edit import get_array, set_array

if TYPE_CHECKING:
    from tensorflow.lite.python.schema_py_generated import ModelT


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """What the weight stage did (recorded in the sidecar).

    Attributes:
        layers: weighted layers edited.
        rounding: ``hessian`` or ``nearest``.
        bias_corrected: whether biases were corrected.
        nearest_channels: channels that kept nearest rounding (their largest weight would
            have changed the converter's scale).
        images: calibration images the statistics were measured on.
    """

    layers: int
    rounding: str
    bias_corrected: bool
    nearest_channels: int
    images: int


def adjust_weights(model: ModelT, inputs: Iterable[np.ndarray], per_tensor: bool,
                   rounding_method: Rounding | str = Rounding.HESSIAN,
                   correct_bias: bool = True) -> WeightReport:
    """Round the weights and / or correct the biases of ``model`` (edited in place).

    Args:
        model: the calibrated float model.
        inputs: float model inputs [1, H, W, C] to measure layer inputs on.
        per_tensor: the weight granularity the quantizer will use.
        rounding_method: ``hessian`` (:mod:`.rounding`) or ``nearest`` (the converter's).
        correct_bias: apply :mod:`.bias_correction`.

    Returns:
        What was done.
    """
    rounding_method = parse(Rounding, rounding_method, "rounding")
    inputs = list(inputs)
    found = layers.weighted_layers(model)
    hessian = rounding_method == Rounding.HESSIAN
    if not found or not (hessian or correct_bias):
        return WeightReport(0, rounding_method, False, 0, 0)
    stats = statistics.collect(model, inputs, found, second_moment=hessian)
    kept = 0
    for layer, layer_stats in zip(found, stats, strict=True):
        weights = get_array(model, layer.weights)
        if hessian:
            quantized, nearest = rounding.round_layer(weights, layer_stats.second_moment, layer,
                                                      per_tensor)
            kept += nearest
            set_array(model, layer.weights, quantized)
        else:
            quantized = rounding.round_nearest(
                weights, rounding.weight_scales(weights, layer, per_tensor))
        if correct_bias:
            bias = get_array(model, layer.bias)
            set_array(model, layer.bias, bias_correction.corrected_bias(
                bias, weights, quantized, layer_stats.mean, layer))
    return WeightReport(len(found), rounding_method, correct_bias, kept, len(inputs))
