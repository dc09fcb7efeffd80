"""MobileDet backbones as the Object Detection API builds them.

From ``research/object_detection/models/ssd_mobiledet_feature_extractor.py``.

MobileDets (Xiong, Liu et al., https://arxiv.org/abs/2004.14525) mix four block kinds, each a
TF1 variable scope numbered by kind as ``tf.variable_scope(None, default_name=...)`` numbers
them (``IBN``, ``IBN_1``, ...; ``FusedConv``, ``FusedConv_1``, ...):

- ``IBN``: 1x1 expansion ``Conv``, depthwise ``SeparableConv2d``, optional ``SqueezeExcite``,
  1x1 projection ``Conv_1`` (no activation), optional residual add;
- ``IBNNoExpansion``: the same without the expansion (projection ``Conv``);
- ``FusedConv``: a full ``kernel`` x ``kernel`` expansion ``Conv`` and the projection
  ``Conv_1``;
- ``TuckerConv``: 1x1 ``Conv`` to the input rank, ``kernel`` x ``kernel`` ``Conv_1`` to the
  output rank, 1x1 ``Conv_2`` (no activation).

Every conv has BatchNorm (epsilon 0.01 in the backbone, not the usual 0.001) and the search
space's activation: ReLU6, or for MobileDet-CPU hard-swish (``x * relu6(x + 3) / 6``, the
OD API's ``swish6``; lowered to Edge TPU ops by our PTQ like MobileNet v3's). The squeeze-excite
(MobileDet-CPU only) is a global average pool, a 1x1 conv with bias and the activation, a 1x1
conv with bias and a sigmoid, and the product with its input. Expansion widths are
``input channels * expansion``; ranks and squeeze widths are rounded to multiples of 8
(:func:`scale_filters`). Layer names are the checkpoint scopes (see :mod:`quant.models._layers`).
"""

from __future__ import annotations

import dataclasses

from edgeq._tensorflow import keras
from quant.models.mobilenet_v3 import activation

layers = keras.layers

#: BatchNorm epsilon of the MobileDet backbones (the extractor's ``slim.arg_scope``).
BACKBONE_EPSILON = 0.01
IBN = "IBN"
NO_EXPANSION = "IBNNoExpansion"
FUSED = "FusedConv"
TUCKER = "TuckerConv"


@dataclasses.dataclass(frozen=True)
class Block:
    """One MobileDet block.

    Attributes:
        kind: :data:`IBN`, :data:`NO_EXPANSION`, :data:`FUSED` or :data:`TUCKER`.
        filters: output channels (before the multiplier).
        expansion: expansion factor of the input channels (IBN, fused).
        kernel: depthwise (IBN) or full conv (fused, Tucker) kernel.
        stride: stride of that conv.
        residual: add the block's input to its output.
        ranks: Tucker input and output rank ratios.
    """

    kind: str
    filters: int
    expansion: int = 8
    kernel: int = 3
    stride: int = 1
    residual: bool = True
    ranks: tuple[float, float] = (0.25, 0.25)


@dataclasses.dataclass(frozen=True)
class MobileDetSpec:
    """A MobileDet backbone: stem conv, blocks, where ``C4`` is, activation and SE."""

    stem: int
    blocks: tuple[Block, ...]
    c4_blocks: int
    activation: str = "relu6"
    squeeze_excite: bool = False


def _ibn(filters: int, expansion: int = 8, kernel: int = 3, stride: int = 1,
         residual: bool = True) -> Block:
    return Block(IBN, filters, expansion, kernel, stride, residual and stride == 1)


def _fused(filters: int, expansion: int = 8, kernel: int = 3, stride: int = 1,
           residual: bool = True) -> Block:
    return Block(FUSED, filters, expansion, kernel, stride, residual and stride == 1)


def _tucker(filters: int, input_rank: float, output_rank: float, residual: bool = True) -> Block:
    return Block(TUCKER, filters, residual=residual, ranks=(input_rank, output_rank))


# mobiledet_cpu_backbone: every IBN (and the first block) with squeeze-excite, hard-swish.
MOBILEDET_CPU = MobileDetSpec(16, (
    Block(NO_EXPANSION, 8, residual=False),
    _ibn(16, 4, stride=2),
    _ibn(32, 8, stride=2), _ibn(32, 4), _ibn(32, 4), _ibn(32, 4),
    _ibn(72, 8, 5, 2), _ibn(72, 8), _ibn(72, 4, 5), _ibn(72, 4), _ibn(72, 8, residual=False),
    _ibn(72, 8), _ibn(72, 8), _ibn(72, 8),
    _ibn(104, 8, 5, 2), _ibn(104, 4, 5), _ibn(104, 4, 5), _ibn(104, 4),
    _ibn(144, 8, residual=False),
), c4_blocks=14, activation="hard_swish", squeeze_excite=True)
# mobiledet_dsp_backbone.
MOBILEDET_DSP = MobileDetSpec(32, (
    Block(NO_EXPANSION, 24, residual=False),
    _fused(32, 4, stride=2), _fused(32, 4), _ibn(32, 4), _tucker(32, 0.25, 0.75),
    _fused(64, 8, stride=2), _ibn(64, 4), _fused(64, 4), _fused(64, 4),
    _fused(120, 8, stride=2), _ibn(120, 4), _ibn(120, 8), _ibn(120, 8),
    _fused(144, 8, residual=False), _ibn(144, 8), _ibn(144, 8), _ibn(144, 8),
    _ibn(160, 4, stride=2), _ibn(160, 4), _fused(160, 4), _tucker(160, 0.75, 0.75),
    _ibn(240, 8, residual=False),
), c4_blocks=17)
# mobiledet_edgetpu_backbone.
MOBILEDET_EDGETPU = MobileDetSpec(32, (
    _tucker(16, 0.25, 0.75, residual=False),
    _fused(16, 8, stride=2), _fused(16, 4), _fused(16, 8), _fused(16, 4),
    _fused(40, 8, 5, 2), _fused(40, 4), _fused(40, 4), _fused(40, 4),
    _ibn(72, 8, stride=2), _ibn(72, 8), _fused(72, 4), _fused(72, 4),
    _ibn(96, 8, 5, residual=False), _ibn(96, 8, 5), _ibn(96, 8), _ibn(96, 8),
    _ibn(120, 8, 5, 2), _ibn(120, 8), _ibn(120, 4, 5), _ibn(120, 8),
    _ibn(384, 8, 5, residual=False),
), c4_blocks=17)
# mobiledet_gpu_backbone.
MOBILEDET_GPU = MobileDetSpec(32, (
    _tucker(16, 0.25, 0.25, residual=False),
    _fused(32, 8, stride=2), _tucker(32, 0.25, 0.25), _tucker(32, 0.25, 0.25),
    _tucker(32, 0.25, 0.25),
    _fused(64, 8, stride=2), _fused(64, 8), _fused(64, 8), _fused(64, 4),
    _fused(128, 8, stride=2), _fused(128, 4), _fused(128, 4), _fused(128, 4),
    _fused(128, 8, residual=False), _fused(128, 8), _fused(128, 8), _fused(128, 8),
    _fused(128, 4, stride=2), _fused(128, 4), _fused(128, 4), _fused(128, 4),
    _ibn(384, 8, residual=False),
), c4_blocks=17)


def scale_filters(filters: int, multiplier: float, base: int = 8) -> int:
    """Return ``filters * multiplier`` rounded half up to a multiple of ``base`` (at least
    ``base``), the OD API's ``_scale_filters``."""
    return max(int(int(filters) * multiplier / base + 0.5) * base, base)


def mobiledet_backbone(inputs, spec: MobileDetSpec, scope: str,
                       multiplier: float = 1.0) -> dict:
    """Build the MobileDet backbone ``spec`` on ``inputs``.

    Args:
        inputs: a Keras tensor (batch, height, width, 3).
        spec: the backbone.
        scope: name prefix (``FeatureExtractor/MobileDetEdgeTPU`` inside detection models).
        multiplier: the depth multiplier (:func:`scale_filters`).

    Returns:
        The endpoints ``C4`` and ``C5`` (the extractor's feature map sources).
    """
    act = spec.activation
    x = _conv_bn(inputs, scale_filters(spec.stem, multiplier), 3, 2, f"{scope}/Conv", act)
    counts: dict[str, int] = {}
    endpoints = {}
    for index, block in enumerate(spec.blocks, start=1):
        count = counts.get(block.kind, 0)
        counts[block.kind] = count + 1
        name = f"{scope}/{block.kind}_{count}" if count else f"{scope}/{block.kind}"
        x = _block(x, block, scale_filters(block.filters, multiplier), name, spec)
        if index == spec.c4_blocks:
            endpoints["C4"] = x
    endpoints["C5"] = x
    return endpoints


def _block(x, block: Block, filters: int, scope: str, spec: MobileDetSpec):
    """One block (see the module docstring for its layers and names)."""
    inputs, act = x, spec.activation
    in_channels = int(x.shape[-1])
    convs = 0
    if block.kind == TUCKER:
        input_rank = scale_filters(in_channels, block.ranks[0])
        x = _conv_bn(x, input_rank, 1, 1, f"{scope}/Conv", act)
        x = _conv_bn(x, scale_filters(filters, block.ranks[1]), block.kernel, block.stride,
                     f"{scope}/Conv_1", act)
        convs = 2
    else:
        expanded = in_channels * block.expansion
        if block.kind != NO_EXPANSION:
            kernel, stride = (block.kernel, block.stride) if block.kind == FUSED else (1, 1)
            x = _conv_bn(x, expanded, kernel, stride, f"{scope}/Conv", act)
            convs = 1
        if block.kind != FUSED:
            x = _depthwise_bn(x, block.kernel, block.stride, f"{scope}/SeparableConv2d", act)
        if spec.squeeze_excite:
            squeeze = in_channels if block.kind == NO_EXPANSION else expanded
            x = _squeeze_excite(x, scale_filters(squeeze, 0.25), f"{scope}/SqueezeExcite", act)
    x = _conv_bn(x, filters, 1, 1, f"{scope}/Conv_{convs}" if convs else f"{scope}/Conv", None)
    if block.residual:
        x = layers.Add(name=f"{scope}/add")([inputs, x])
    return x


def _conv_bn(x, filters: int, kernel: int, stride: int, scope: str, act: str | None):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=scope)(x)
    x = layers.BatchNormalization(epsilon=BACKBONE_EPSILON, name=f"{scope}/BatchNorm")(x)
    return x if act is None else activation(act, scope)(x)


def _depthwise_bn(x, kernel: int, stride: int, scope: str, act: str):
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=scope)(x)
    x = layers.BatchNormalization(epsilon=BACKBONE_EPSILON, name=f"{scope}/BatchNorm")(x)
    return activation(act, scope)(x)


def _squeeze_excite(x, hidden: int, scope: str, act: str):
    squeeze = layers.GlobalAveragePooling2D(keepdims=True, name=f"{scope}/AvgPool2D")(x)
    squeeze = layers.Conv2D(hidden, 1, name=f"{scope}/Conv")(squeeze)
    squeeze = activation(act, f"{scope}/Conv")(squeeze)
    gate = layers.Conv2D(int(x.shape[-1]), 1, activation="sigmoid", name=f"{scope}/Conv_1")(
        squeeze)
    return layers.Multiply(name=f"{scope}/mul")([x, gate])
