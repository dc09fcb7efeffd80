"""MobileNet v1 exactly as TF-slim builds it (``nets/mobilenet_v1.py``).

Channels are ``max(int(c * multiplier), min_depth)``; 3x3 convs use 'SAME' padding; every
conv is followed by BatchNorm (epsilon 1e-3) and ReLU6. Layer names are the checkpoint
scopes (``MobilenetV1/Conv2d_3_depthwise``...), see :mod:`quant.models._layers`.
"""

from __future__ import annotations

from edgeq._tensorflow import keras
from quant.models._layers import conv_bn, depthwise_bn, logits_head

# (pointwise output channels, depthwise stride) of Conv2d_1 ... Conv2d_13.
SEPARABLE_LAYERS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


def mobilenet_v1_features(inputs, multiplier: float = 1.0, min_depth: int = 8,
                          scope: str = "MobilenetV1") -> dict:
    """Build the MobileNet v1 trunk on ``inputs``.

    Args:
        inputs: a Keras tensor (batch, height, width, 3).
        multiplier: the depth multiplier.
        min_depth: smallest channel count any layer may have.
        scope: name prefix (``FeatureExtractor/MobilenetV1`` inside detection models).

    Returns:
        The endpoints by TF-slim name (``Conv2d_0``, ``Conv2d_N_pointwise``).
    """

    def depth(channels: int) -> int:
        return max(int(channels * multiplier), min_depth)

    endpoints = {}
    x = conv_bn(inputs, depth(32), 3, 2, f"{scope}/Conv2d_0")
    endpoints["Conv2d_0"] = x
    for i, (channels, stride) in enumerate(SEPARABLE_LAYERS, start=1):
        x = depthwise_bn(x, stride, f"{scope}/Conv2d_{i}_depthwise")
        x = conv_bn(x, depth(channels), 1, 1, f"{scope}/Conv2d_{i}_pointwise")
        endpoints[f"Conv2d_{i}_pointwise"] = x
    return endpoints


def mobilenet_v1(input_size: int = 224, multiplier: float = 1.0, num_classes: int = 1001):
    """Return the TF-slim MobileNet v1 classifier as a tf-keras Model (logits out)."""
    inputs = keras.Input((input_size, input_size, 3), batch_size=1, name="input")
    features = mobilenet_v1_features(inputs, multiplier)["Conv2d_13_pointwise"]
    logits = logits_head(features, num_classes, "MobilenetV1/Logits")
    return keras.Model(inputs, logits, name=f"mobilenet_v1_{multiplier}_{input_size}")
