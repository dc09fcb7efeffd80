"""Inception v2 (BN-Inception) as TF-slim builds it (``nets/inception_v2.py``,
``inception_v2_base``), the backbone of the Object Detection API's ``ssd_inception_v2``.

Stem: ``Conv2d_1a_7x7`` (a separable 7x7 / 2 conv: depthwise with a channel multiplier of
``min(depth(64) // 3, 8)``, then a pointwise conv to 64; variables ``depthwise_weights`` and
``pointwise_weights`` in one scope), ``MaxPool_2a_3x3``, ``Conv2d_2b_1x1``,
``Conv2d_2c_3x3``, ``MaxPool_3a_3x3``. Then the Inception modules ``Mixed_3b`` ...
``Mixed_5c``: four branches (``Branch_0`` 1x1; ``Branch_1`` 1x1 then 3x3; ``Branch_2`` 1x1
then two 3x3; ``Branch_3`` a 3x3 / 1 pool then 1x1) concatenated on channels, and two
reduction modules (``Mixed_4a``, ``Mixed_5a``) whose 3x3 convs and max pool have stride 2.
Every conv has BatchNorm and ReLU6 (the detection config's hyperparameters, which the SSD
extractor applies to the backbone), and 'SAME' padding. Depths are
``max(int(d * depth_multiplier), min_depth)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edgeq._tensorflow import keras
from quant.models._layers import BATCH_NORM_EPSILON, conv_bn

layers = keras.layers


@dataclasses.dataclass(frozen=True)
class Module:
    """A regular Inception module: branch depths and the pool of ``Branch_3``."""

    name: str
    branch_0: int
    branch_1: tuple[int, int]
    branch_2: tuple[int, int]
    pool: str
    branch_3: int


@dataclasses.dataclass(frozen=True)
class Reduction:
    """A stride-2 module: ``Branch_0`` 1x1 then 3x3 / 2, ``Branch_1`` 1x1, 3x3, 3x3 / 2,
    ``Branch_2`` a 3x3 / 2 max pool."""

    name: str
    branch_0: tuple[int, int]
    branch_1: tuple[int, int]


BLOCKS = (
    Module("Mixed_3b", 64, (64, 64), (64, 96), "avg", 32),
    Module("Mixed_3c", 64, (64, 96), (64, 96), "avg", 64),
    Reduction("Mixed_4a", (128, 160), (64, 96)),
    Module("Mixed_4b", 224, (64, 96), (96, 128), "avg", 128),
    Module("Mixed_4c", 192, (96, 128), (96, 128), "avg", 128),
    Module("Mixed_4d", 160, (128, 160), (128, 160), "avg", 96),
    Module("Mixed_4e", 96, (128, 192), (160, 192), "avg", 96),
    Reduction("Mixed_5a", (128, 192), (192, 256)),
    Module("Mixed_5b", 352, (192, 320), (160, 224), "avg", 128),
    Module("Mixed_5c", 352, (192, 320), (192, 224), "max", 128),
)


def inception_v2_features(inputs, scope: str = "InceptionV2", depth_multiplier: float = 1.0,
                          min_depth: int = 16) -> dict:
    """Build ``inception_v2_base`` up to ``Mixed_5c``; return every module's output by name."""

    def depth(channels: int) -> int:
        return max(int(channels * depth_multiplier), min_depth)

    stem = f"{scope}/Conv2d_1a_7x7"
    x = layers.SeparableConv2D(depth(64), 7, strides=2, padding="same",
                               depth_multiplier=min(depth(64) // 3, 8), use_bias=False,
                               name=stem)(inputs)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{stem}/BatchNorm")(x)
    x = layers.ReLU(6.0, name=f"{stem}/Relu6")(x)
    x = layers.MaxPooling2D(3, 2, padding="same", name=f"{scope}/MaxPool_2a_3x3")(x)
    x = conv_bn(x, depth(64), 1, 1, f"{scope}/Conv2d_2b_1x1")
    x = conv_bn(x, depth(192), 3, 1, f"{scope}/Conv2d_2c_3x3")
    x = layers.MaxPooling2D(3, 2, padding="same", name=f"{scope}/MaxPool_3a_3x3")(x)
    endpoints = {}
    for block in BLOCKS:
        name = f"{scope}/{block.name}"
        if isinstance(block, Module):
            x = _module(x, block, name, depth)
        else:
            x = _reduction(x, block, name, depth)
        endpoints[block.name] = x
    return endpoints


def _module(x, module: Module, scope: str, depth: Callable[[int], int]):
    branch_0 = conv_bn(x, depth(module.branch_0), 1, 1, f"{scope}/Branch_0/Conv2d_0a_1x1")
    branch_1 = conv_bn(x, depth(module.branch_1[0]), 1, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    branch_1 = conv_bn(branch_1, depth(module.branch_1[1]), 3, 1,
                       f"{scope}/Branch_1/Conv2d_0b_3x3")
    branch_2 = conv_bn(x, depth(module.branch_2[0]), 1, 1, f"{scope}/Branch_2/Conv2d_0a_1x1")
    for conv in ("Conv2d_0b_3x3", "Conv2d_0c_3x3"):
        branch_2 = conv_bn(branch_2, depth(module.branch_2[1]), 3, 1, f"{scope}/Branch_2/{conv}")
    pool = layers.AveragePooling2D if module.pool == "avg" else layers.MaxPooling2D
    kind = "AvgPool" if module.pool == "avg" else "MaxPool"
    branch_3 = pool(3, 1, padding="same", name=f"{scope}/Branch_3/{kind}_0a_3x3")(x)
    branch_3 = conv_bn(branch_3, depth(module.branch_3), 1, 1, f"{scope}/Branch_3/Conv2d_0b_1x1")
    return layers.Concatenate(name=f"{scope}/concat")([branch_0, branch_1, branch_2, branch_3])


def _reduction(x, module: Reduction, scope: str, depth: Callable[[int], int]):
    branch_0 = conv_bn(x, depth(module.branch_0[0]), 1, 1, f"{scope}/Branch_0/Conv2d_0a_1x1")
    branch_0 = conv_bn(branch_0, depth(module.branch_0[1]), 3, 2,
                       f"{scope}/Branch_0/Conv2d_1a_3x3")
    branch_1 = conv_bn(x, depth(module.branch_1[0]), 1, 1, f"{scope}/Branch_1/Conv2d_0a_1x1")
    branch_1 = conv_bn(branch_1, depth(module.branch_1[1]), 3, 1,
                       f"{scope}/Branch_1/Conv2d_0b_3x3")
    branch_1 = conv_bn(branch_1, depth(module.branch_1[1]), 3, 2,
                       f"{scope}/Branch_1/Conv2d_1a_3x3")
    branch_2 = layers.MaxPooling2D(3, 2, padding="same",
                                   name=f"{scope}/Branch_2/MaxPool_1a_3x3")(x)
    return layers.Concatenate(name=f"{scope}/concat")([branch_0, branch_1, branch_2])
