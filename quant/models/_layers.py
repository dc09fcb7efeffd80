"""Conv / BatchNorm / ReLU6 blocks whose Keras layer names are the checkpoint scopes.

Naming rule shared by every builder and by :mod:`quant.checkpoints`: a layer named
``S`` holds the checkpoint variables ``S/weights`` (Conv2D), ``S/depthwise_weights``
(DepthwiseConv2D), ``S/biases`` (a bias), or ``S/{gamma,beta,moving_mean,moving_variance}``
(BatchNormalization, named ``S/BatchNorm`` after its conv).
"""

from __future__ import annotations

from edgeq._tensorflow import keras

BATCH_NORM_EPSILON = 1e-3

layers = keras.layers


def conv_bn(x, filters: int, kernel: int, stride: int, scope: str, activation: bool = True):
    """Conv2D (no bias) + BatchNorm + optional ReLU6, TF-slim style ('SAME' padding)."""
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=scope)(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{scope}/BatchNorm")(x)
    if activation:
        x = layers.ReLU(6.0, name=f"{scope}/Relu6")(x)
    return x


def depthwise_bn(x, stride: int, scope: str, kernel: int = 3):
    """DepthwiseConv2D (no bias) + BatchNorm + ReLU6, TF-slim style ('SAME' padding)."""
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               name=scope)(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{scope}/BatchNorm")(x)
    return layers.ReLU(6.0, name=f"{scope}/Relu6")(x)


def logits_head(x, num_classes: int, scope: str):
    """Global average pool, 1x1 conv with bias (the TF-slim ``Conv2d_1c_1x1``), flatten."""
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{scope}/AvgPool")(x)
    x = layers.Conv2D(num_classes, 1, use_bias=True, name=f"{scope}/Conv2d_1c_1x1")(x)
    return layers.Reshape((num_classes,), name=f"{scope}/Squeeze")(x)
