"""ResNet v1 (bottleneck) backbones as TF-slim builds them for the Object Detection API.

From ``nets/resnet_v1.py`` and ``nets/resnet_utils.py``, called by
``ssd_resnet_v1_fpn_feature_extractor.py`` with ``store_non_strided_activations=True``:

- root: ``conv1`` (7x7 / 2, 64 channels, ``conv2d_same``: a fixed padding of 3 then 'VALID'),
  ``pool1`` (3x3 / 2 'SAME' max pool);
- four blocks ``block1`` ... ``block4`` of ``unit_N/bottleneck_v1`` units: ``shortcut`` (1x1
  conv, only where the depth changes), ``conv1`` (1x1), ``conv2`` (3x3), ``conv3`` (1x1, no
  activation), then ReLU of the sum (plain ReLU, hard-coded in ``bottleneck``);
- a block's stride is moved off its last unit to a 1x1 / stride max pool after the block
  (``subsample``), so the block's endpoint is its non-strided output: ``block1`` ...
  ``block4`` are at strides 4, 8, 16, 32 (FPN levels 2 ... 5).

Base depths are ``max(int(d * depth_multiplier), min_base_depth)`` for 64, 128, 256, 512;
outputs are 4x. Every conv has BatchNorm and the activation of the arg scope in force (the
detection configs override the ResNet one: ReLU6, epsilon 0.001). Layer names are the
checkpoint scopes (see :mod:`quant.models._layers`).
"""

from __future__ import annotations

import dataclasses

from edgeq._tensorflow import keras
from quant.models._layers import conv_bn

layers = keras.layers

#: Units per block of each depth (``resnet_v1_50``, ``resnet_v1_101``).
UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BASE_DEPTHS = (64, 128, 256, 512)
BLOCK_STRIDES = (2, 2, 2, 1)
ROOT_DEPTH = 64


@dataclasses.dataclass(frozen=True)
class ConvStyle:
    """The arg scope of the backbone's convs: the ReLU's cap (None: plain ReLU, 6.0: ReLU6)
    and the BatchNorm epsilon. The default is ``resnet_arg_scope``'s."""

    relu_max: float | None = None
    epsilon: float = 1e-5


def resnet_v1_features(inputs, depth: int, scope: str, depth_multiplier: float = 1.0,
                       min_base_depth: int = 8, style: ConvStyle = ConvStyle()) -> dict:
    """Build ResNet v1 ``depth`` (50 or 101) on ``inputs``; return ``block1`` ... ``block4``.

    Args:
        inputs: a Keras tensor (batch, height, width, 3).
        depth: 50 or 101 (:data:`UNITS`).
        scope: name prefix (``FeatureExtractor/resnet_v1_50`` in the SSDs).
        depth_multiplier: multiplier of the bottleneck depths.
        min_base_depth: the smallest bottleneck depth.
        style: activation and BatchNorm epsilon of every conv.
    """
    x = _conv_bn(inputs, ROOT_DEPTH, 7, 2, f"{scope}/conv1", style, explicit_padding=True)
    x = layers.MaxPooling2D(3, 2, padding="same", name=f"{scope}/pool1")(x)
    endpoints = {}
    for index, (units, base, stride) in enumerate(
            zip(UNITS[depth], BASE_DEPTHS, BLOCK_STRIDES, strict=True), start=1):
        bottleneck = max(int(base * depth_multiplier), min_base_depth)
        block = f"{scope}/block{index}"
        for unit in range(1, units + 1):
            x = _bottleneck(x, bottleneck * 4, bottleneck, f"{block}/unit_{unit}/bottleneck_v1",
                            style)
        endpoints[f"block{index}"] = x
        if stride > 1:
            x = layers.MaxPooling2D(1, stride, name=f"{block}/subsample")(x)
    return endpoints


def _bottleneck(x, depth: int, depth_bottleneck: int, scope: str, style: ConvStyle):
    shortcut = x
    if int(x.shape[-1]) != depth:
        shortcut = _conv_bn(x, depth, 1, 1, f"{scope}/shortcut", style, activation=False)
    residual = _conv_bn(x, depth_bottleneck, 1, 1, f"{scope}/conv1", style)
    residual = _conv_bn(residual, depth_bottleneck, 3, 1, f"{scope}/conv2", style)
    residual = _conv_bn(residual, depth, 1, 1, f"{scope}/conv3", style, activation=False)
    x = layers.Add(name=f"{scope}/add")([shortcut, residual])
    return layers.ReLU(name=f"{scope}/Relu")(x)


def _conv_bn(x, filters: int, kernel: int, stride: int, scope: str, style: ConvStyle,
             activation: bool = True, explicit_padding: bool = False):
    return conv_bn(x, filters, kernel, stride, scope, activation, explicit_padding,
                   style.epsilon, style.relu_max)
