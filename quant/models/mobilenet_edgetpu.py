"""MobileNet EdgeTPU as TF-slim builds it (``V3_EDGETPU`` in ``nets/mobilenet/mobilenet_v3.py``).

Fused inverted bottlenecks (a full 3x3 expansion conv, no depthwise) in the early stages,
ordinary ones later, ReLU throughout, no squeeze-excite; scope ``MobilenetEdgeTPU``.
Decoded by :func:`quant.models.mobilenet_v3.mobilenet_v3_trunk`.
"""

from __future__ import annotations

import dataclasses

from quant.models.mobilenet_v3 import Block


def _fused(expansion: float, channels: int, stride: int = 1) -> Block:
    return Block(channels, expansion, 3, stride, fused=True)


def _ir(expansion: float, channels: int, kernel: int = 3, stride: int = 1) -> Block:
    return Block(channels, expansion, kernel, stride)


V3_EDGETPU = (
    Block(32, kernel=3, stride=2, conv=True),
    _fused(1, 16), _fused(8, 32, 2), _fused(4, 32), _fused(4, 32), _fused(4, 32),
    _fused(8, 48, 2), _fused(4, 48), _fused(4, 48), _fused(4, 48),
    _ir(8, 96, 3, 2), _ir(4, 96), _ir(4, 96), _ir(4, 96),
    dataclasses.replace(_ir(8, 96), residual=False), _ir(4, 96), _ir(4, 96), _ir(4, 96),
    _ir(8, 160, 5, 2), _ir(4, 160, 5), _ir(4, 160, 5), _ir(4, 160, 5),
    _ir(8, 192, 3),
    Block(1280, kernel=1, conv=True),
)
