"""Parameter and multiply-accumulate counts computed from a built Keras model."""

from __future__ import annotations

import numpy as np

from edgeq._tensorflow import keras


def count_params(model) -> int:
    """Return the number of weights, BatchNorm moving statistics excluded (as published)."""
    total = 0
    for layer in model.layers:
        for weight in layer.weights:
            if "moving_" not in weight.name:
                total += int(np.prod(weight.shape))
    return total


def count_macs(model) -> int:
    """Return the multiply-accumulates of the convolutions and dense layers for one image."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.SeparableConv2D):  # depthwise, then pointwise
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            _, oh, ow, cout = layer.output.shape
            total += oh * ow * cin * mult * (kh * kw + cout)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, cin, mult = layer.depthwise_kernel.shape
            _, oh, ow, _ = layer.output.shape
            total += oh * ow * kh * kw * cin * mult
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, oh, ow, _ = layer.output.shape
            total += oh * ow * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)
