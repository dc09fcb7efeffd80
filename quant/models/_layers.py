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


def fixed_padding(x, kernel: int, scope: str):
    """Zero-pad ``x`` by ``(kernel - 1) // 2`` before and the rest after, on both spatial axes.

    TF-slim's ``_fixed_padding`` (``use_explicit_padding``): a 'VALID' convolution of the
    padded map has the 'SAME' output size whatever the input size, and a stride-2 window
    is centred the same way on even and odd inputs (a 'SAME' stride-2 convolution of an even
    map pads only after). Returns ``x`` unchanged for 1x1 kernels.
    """
    if kernel == 1:
        return x
    before = (kernel - 1) // 2
    return layers.ZeroPadding2D(((before, kernel - 1 - before),) * 2, name=f"{scope}/Pad")(x)


def padded(x, kernel: int, scope: str, explicit_padding: bool):
    """``(x, padding)`` for a conv or pool: 'SAME', or :func:`fixed_padding` then 'VALID'."""
    if explicit_padding:
        return fixed_padding(x, kernel, scope), "valid"
    return x, "same"


def conv_bn(x, filters: int, kernel: int, stride: int, scope: str, activation: bool = True,
            explicit_padding: bool = False, epsilon: float = BATCH_NORM_EPSILON,
            relu_max: float | None = 6.0):
    """Conv2D (no bias) + BatchNorm + optional ReLU6, TF-slim style ('SAME' padding, or
    :func:`fixed_padding` and 'VALID' with ``explicit_padding``). ``relu_max=None``: a plain
    ReLU (``.../Relu``) instead."""
    x, padding = padded(x, kernel, scope, explicit_padding)
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                      name=scope)(x)
    x = layers.BatchNormalization(epsilon=epsilon, name=f"{scope}/BatchNorm")(x)
    if activation:
        name = "Relu6" if relu_max == 6.0 else "Relu"
        x = layers.ReLU(relu_max, name=f"{scope}/{name}")(x)
    return x


def depthwise_bn(x, stride: int, scope: str, kernel: int = 3, explicit_padding: bool = False,
                 epsilon: float = BATCH_NORM_EPSILON):
    """DepthwiseConv2D (no bias) + BatchNorm + ReLU6, TF-slim style (padding as
    :func:`conv_bn`)."""
    x, padding = padded(x, kernel, scope, explicit_padding)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False,
                               name=scope)(x)
    x = layers.BatchNormalization(epsilon=epsilon, name=f"{scope}/BatchNorm")(x)
    return layers.ReLU(6.0, name=f"{scope}/Relu6")(x)


def logits_head(x, num_classes: int, scope: str):
    """Global average pool, 1x1 conv with bias (the TF-slim ``Conv2d_1c_1x1``), flatten."""
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{scope}/AvgPool")(x)
    x = layers.Conv2D(num_classes, 1, use_bias=True, name=f"{scope}/Conv2d_1c_1x1")(x)
    return layers.Reshape((num_classes,), name=f"{scope}/Squeeze")(x)
