"""MobileNet v2 exactly as TF-slim builds it (``nets/mobilenet/mobilenet_v2.py``).

Channels are ``make_divisible(c * multiplier, 8)``; the expansion is
``make_divisible(input_channels * 6, 8)``; below multiplier 1.0 the last 1x1 conv keeps
1280 channels. Layer names are the checkpoint scopes (``MobilenetV2/expanded_conv_3/expand``).
"""

from __future__ import annotations

from edgeq._tensorflow import keras
from quant.models._layers import BATCH_NORM_EPSILON, conv_bn, depthwise_bn, logits_head

# (expansion factor, output channels, repeats, first stride), the MobileNetV2 paper's table 2.
INVERTED_RESIDUAL_SETTINGS = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
LAST_CONV_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going down by more than 10%."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def _expanded_conv(x, expansion: int, channels: int, stride: int, scope: str,
                   explicit_padding: bool = False, epsilon: float = BATCH_NORM_EPSILON):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = conv_bn(y, make_divisible(in_channels * expansion), 1, 1, f"{scope}/expand",
                    epsilon=epsilon)
    y = depthwise_bn(y, stride, f"{scope}/depthwise", explicit_padding=explicit_padding,
                     epsilon=epsilon)
    y = conv_bn(y, channels, 1, 1, f"{scope}/project", activation=False, epsilon=epsilon)
    if stride == 1 and in_channels == channels:
        y = keras.layers.Add(name=f"{scope}/add")([x, y])
    return y


def mobilenet_v2_features(inputs, multiplier: float = 1.0, scope: str = "MobilenetV2",
                          explicit_padding: bool = False, epsilon: float = BATCH_NORM_EPSILON):
    """Build the MobileNet v2 trunk up to ``Conv_1`` and return its output tensor.

    ``explicit_padding``: slim's ``use_explicit_padding`` (every 3x3 conv reads a
    :func:`quant.models._layers.fixed_padding` of its input, with 'VALID' padding).
    ``epsilon``: the BatchNorm epsilon of the arg scope in force.
    """
    x = conv_bn(inputs, make_divisible(32 * multiplier), 3, 2, f"{scope}/Conv",
                explicit_padding=explicit_padding, epsilon=epsilon)
    block = 0
    for expansion, channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
        for i in range(repeats):
            name = "expanded_conv" if block == 0 else f"expanded_conv_{block}"
            x = _expanded_conv(x, expansion, make_divisible(channels * multiplier),
                               first_stride if i == 0 else 1, f"{scope}/{name}",
                               explicit_padding, epsilon)
            block += 1
    last = make_divisible(LAST_CONV_CHANNELS * max(multiplier, 1.0))
    return conv_bn(x, last, 1, 1, f"{scope}/Conv_1", epsilon=epsilon)


def mobilenet_v2(input_size: int = 224, multiplier: float = 1.0, num_classes: int = 1001):
    """Return the TF-slim MobileNet v2 classifier as a tf-keras Model (logits out)."""
    inputs = keras.Input((input_size, input_size, 3), batch_size=1, name="input")
    features = mobilenet_v2_features(inputs, multiplier)
    logits = logits_head(features, num_classes, "MobilenetV2/Logits")
    return keras.Model(inputs, logits, name=f"mobilenet_v2_{multiplier}_{input_size}")
