"""MobileNet v3 trunks as TF-slim builds them (``nets/mobilenet/mobilenet_v3.py``).

Architectures are data: a list of :class:`Block` specs decoded by one builder,
:func:`mobilenet_v3_trunk`. Blocks are ``expanded_conv`` (optional ``expand``, optional
``depthwise``, optional ``squeeze_excite``, ``project``, residual when shapes allow) or a
plain ``Conv``; scopes are numbered as TF-slim numbers them (``expanded_conv``,
``expanded_conv_1``..., ``Conv``, ``Conv_1``), and endpoint ``layer_K`` is block ``K - 1``.
Expansion sizes are ``make_divisible(input_channels * factor, 8)``; the squeeze-excite
width is ``make_divisible(channels / 4, 8)`` with ReLU inside and a hard sigmoid gate.
Layer names are the checkpoint scopes (see :mod:`quant.models._layers`).

The ``*_DETECTION`` specs halve the last stage, as the Object Detection API's
``V3_LARGE_DETECTION`` / ``V3_SMALL_DETECTION`` do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from edgeq._tensorflow import keras, tf
from quant.models._layers import BATCH_NORM_EPSILON
from quant.models.mobilenet_v2 import make_divisible

layers = keras.layers


@dataclasses.dataclass(frozen=True)
class Block:
    """One TF-slim op: ``expanded_conv`` (default) or a plain ``conv``.

    Attributes:
        channels: output channels (before the depth multiplier).
        expansion: expansion factor of the input channels (expanded_conv only).
        kernel: depthwise kernel (or the conv / fused expansion kernel).
        stride: stride of the depthwise conv (or of the conv / fused expansion).
        activation: ``"relu"``, ``"relu6"`` or ``"hard_swish"``.
        squeeze_excite: add a squeeze-excite block after the depthwise conv.
        fused: the expansion is a full ``kernel`` x ``kernel`` conv and there is no
            depthwise conv (MobileNet EdgeTPU's fused inverted bottleneck).
        residual: add the input when stride is 1 and the channels match.
        conv: a plain ``Conv`` (conv + BatchNorm + activation) instead of a block.
    """

    channels: int
    expansion: float = 1.0
    kernel: int = 3
    stride: int = 1
    activation: str = "relu"
    squeeze_excite: bool = False
    fused: bool = False
    residual: bool = True
    conv: bool = False


def _conv(channels: int, kernel: int = 1, stride: int = 1, activation: str = "relu") -> Block:
    return Block(channels, kernel=kernel, stride=stride, activation=activation, conv=True)


def _ir(expansion: float, channels: int, kernel: int = 3, stride: int = 1,
        activation: str = "relu", se: bool = False) -> Block:
    return Block(channels, expansion, kernel, stride, activation, se)


HS = "hard_swish"

# Ops 0 .. 16 of V3_LARGE (the pooling and 1280 head are not part of the trunk).
V3_LARGE = (
    _conv(16, 3, 2, HS),
    _ir(1, 16), _ir(4, 24, stride=2), _ir(3, 24),
    _ir(3, 40, 5, 2, se=True), _ir(3, 40, 5, se=True), _ir(3, 40, 5, se=True),
    _ir(6, 80, 3, 2, HS), _ir(2.5, 80, 3, 1, HS), _ir(184 / 80, 80, 3, 1, HS),
    _ir(184 / 80, 80, 3, 1, HS),
    _ir(6, 112, 3, 1, HS, True), _ir(6, 112, 3, 1, HS, True),
    _ir(6, 160, 5, 2, HS, True), _ir(6, 160, 5, 1, HS, True), _ir(6, 160, 5, 1, HS, True),
    _conv(960, 1, 1, HS),
)
# Ops 0 .. 12 of V3_SMALL.
V3_SMALL = (
    _conv(16, 3, 2, HS),
    _ir(1, 16, 3, 2, se=True), _ir(72 / 16, 24, stride=2), _ir(88 / 24, 24),
    _ir(4, 40, 5, 2, HS, True), _ir(6, 40, 5, 1, HS, True), _ir(6, 40, 5, 1, HS, True),
    _ir(3, 48, 5, 1, HS, True), _ir(3, 48, 5, 1, HS, True),
    _ir(6, 96, 5, 2, HS, True), _ir(6, 96, 5, 1, HS, True), _ir(6, 96, 5, 1, HS, True),
    _conv(576, 1, 1, HS),
)


def reduce_blocks(spec: Sequence[Block], first: int, last: int,
                  multiplier: float = 0.5) -> tuple[Block, ...]:
    """Return ``spec`` with the outputs of blocks ``first..last`` (inclusive) scaled."""
    return tuple(
        dataclasses.replace(block, channels=int(round(block.channels * multiplier)))
        if first <= index <= last else block
        for index, block in enumerate(spec)
    )


V3_LARGE_DETECTION = reduce_blocks(V3_LARGE, 13, 16)
V3_SMALL_DETECTION = reduce_blocks(V3_SMALL, 9, 12)


def mobilenet_v3_trunk(inputs, spec: Sequence[Block], scope: str, multiplier: float = 1.0,
                       min_depth: int = 8) -> dict:
    """Build the blocks of ``spec`` on ``inputs``.

    Args:
        inputs: a Keras tensor (batch, height, width, 3).
        spec: the blocks, first to last.
        scope: name prefix (``FeatureExtractor/MobilenetV3`` inside detection models).
        multiplier: the depth multiplier (output channels, divisible by 8).
        min_depth: smallest output channel count.

    Returns:
        Endpoints by TF-slim name: ``layer_K`` (output of block K - 1) and
        ``layer_K/expansion_output`` (after the expansion conv, where there is one).
    """
    endpoints = {}
    counts = {"Conv": 0, "expanded_conv": 0}
    x = inputs
    for index, block in enumerate(spec):
        kind = "Conv" if block.conv else "expanded_conv"
        name = kind if counts[kind] == 0 else f"{kind}_{counts[kind]}"
        counts[kind] += 1
        channels = make_divisible(block.channels * multiplier, 8, min_depth)
        layer = f"layer_{index + 1}"
        if block.conv:
            x = _conv_bn(x, channels, block.kernel, block.stride, f"{scope}/{name}",
                         block.activation)
        else:
            x, expanded = _expanded_conv(x, block, channels, f"{scope}/{name}")
            if expanded is not None:
                endpoints[f"{layer}/expansion_output"] = expanded
        endpoints[layer] = x
    return endpoints


def _expanded_conv(x, block: Block, channels: int, scope: str):
    inputs = x
    in_channels = int(x.shape[-1])
    inner = make_divisible(in_channels * block.expansion, 8)
    expanded = None
    if inner > in_channels:
        kernel, stride = (block.kernel, block.stride) if block.fused else (1, 1)
        x = expanded = _conv_bn(x, inner, kernel, stride, f"{scope}/expand", block.activation)
    if not block.fused:
        x = layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding="same",
                                   use_bias=False, name=f"{scope}/depthwise")(x)
        x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                      name=f"{scope}/depthwise/BatchNorm")(x)
        x = activation(block.activation, f"{scope}/depthwise")(x)
    if block.squeeze_excite:
        x = _squeeze_excite(x, f"{scope}/squeeze_excite")
    x = _conv_bn(x, channels, 1, 1, f"{scope}/project", None)
    if block.residual and block.stride == 1 and in_channels == channels:
        x = layers.Add(name=f"{scope}/add")([inputs, x])
    return x, expanded


def _conv_bn(x, channels: int, kernel: int, stride: int, scope: str, act: str | None):
    x = layers.Conv2D(channels, kernel, strides=stride, padding="same", use_bias=False,
                      name=scope)(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{scope}/BatchNorm")(x)
    return x if act is None else activation(act, scope)(x)


def _squeeze_excite(x, scope: str):
    channels = int(x.shape[-1])
    squeeze = layers.GlobalAveragePooling2D(keepdims=True, name=f"{scope}/AvgPool")(x)
    squeeze = layers.Conv2D(make_divisible(channels / 4, 8), 1, activation="relu",
                            name=f"{scope}/Conv")(squeeze)
    gate = layers.Conv2D(channels, 1, name=f"{scope}/Conv_1")(squeeze)
    gate = layers.Activation(hard_sigmoid, name=f"{scope}/hard_sigmoid")(gate)
    return layers.Multiply(name=f"{scope}/mul")([x, gate])


def hard_sigmoid(x):
    """Return ``relu6(x + 3) * 0.16667`` (TF-slim's gate, constant included)."""
    return tf.nn.relu6(x + 3.0) * 0.16667


def hard_swish(x):
    """Return ``x * relu6(x + 3) / 6``."""
    return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)


def activation(name: str, scope: str):
    """Return the Keras layer of an activation named as in the specs."""
    if name == "hard_swish":
        return layers.Activation(hard_swish, name=f"{scope}/hard_swish")
    if name == "relu6":
        return layers.ReLU(6.0, name=f"{scope}/Relu6")
    return layers.ReLU(name=f"{scope}/Relu")
