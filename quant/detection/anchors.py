"""SSD anchors exactly as the TF Object Detection API's ``ssd_anchor_generator`` and
``multiscale_anchor_generator`` make them.

``create_ssd_anchors`` picks, per feature map, a list of (scale, aspect ratio) box specs;
``MultipleGridAnchorGenerator`` tiles them over each map: anchor centres at
``(i + 0.5) / size`` (default strides and offsets), height ``scale / sqrt(ratio)``, width
``scale * sqrt(ratio)``, ordered row, column, then box spec. ``MultiscaleGridAnchorGenerator``
(RetinaNet, FPN levels ``min_level`` ... ``max_level``) tiles, on level ``l``, boxes of base
size ``anchor_scale * 2**l`` pixels at scales ``2**(i / scales_per_octave)`` for every aspect
ratio (ratio-major), with stride ``2**l`` and offset ``2**l / 2`` (0 where the image side is
not a multiple of ``2**l``), then divides by the image size. The result is what
``TFLite_Detection_PostProcess`` takes: ``[A, 4]`` float32 as (ycenter, xcenter, h, w),
normalized to the image.

Example::

    anchors = ssd_anchors(AnchorConfig(), [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    anchors.shape  # (1917, 4)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from edgeq.errors import BadInputError


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """The ``ssd_anchor_generator`` fields of a ``pipeline.config`` (OD API defaults).

    Attributes:
        num_layers: number of feature maps.
        min_scale: scale of the lowest layer.
        max_scale: scale of the highest layer.
        aspect_ratios: box aspect ratios (width / height) at every location.
        scales: explicit per-layer scales (overrides min/max scale when given).
        interpolated_scale_aspect_ratio: ratio of the extra box at scale
            ``sqrt(scale * next_scale)``; 0 disables it.
        reduce_boxes_in_lowest_layer: lowest layer gets 3 boxes (0.1 / 1, s / 2, s / 0.5).
        base_anchor_height: base anchor height.
        base_anchor_width: base anchor width.
        height_stride: explicit anchor strides in pixels (one per layer), or empty.
        width_stride: explicit anchor strides in pixels (one per layer), or empty.
        height_offset: explicit anchor offsets in pixels (one per layer), or empty.
        width_offset: explicit anchor offsets in pixels (one per layer), or empty.
    """

    num_layers: int = 6
    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 0.3333)
    scales: tuple[float, ...] = ()
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = True
    base_anchor_height: float = 1.0
    base_anchor_width: float = 1.0
    height_stride: tuple[int, ...] = ()
    width_stride: tuple[int, ...] = ()
    height_offset: tuple[int, ...] = ()
    width_offset: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class MultiscaleAnchorConfig:
    """The ``multiscale_anchor_generator`` fields of a ``pipeline.config`` (OD API defaults).

    Attributes:
        min_level: finest pyramid level (stride ``2**min_level``).
        max_level: coarsest pyramid level.
        anchor_scale: base anchor size in strides.
        aspect_ratios: box aspect ratios (width / height) at every location.
        scales_per_octave: intermediate scales ``2**(i / scales_per_octave)``.
        normalize_coordinates: anchors relative to the image size (else in pixels).
    """

    min_level: int = 3
    max_level: int = 7
    anchor_scale: float = 4.0
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5)
    scales_per_octave: int = 2
    normalize_coordinates: bool = True


def box_specs(config: AnchorConfig) -> list[list[tuple[float, float]]]:
    """Return the (scale, aspect ratio) specs of every layer, as ``create_ssd_anchors``."""
    if config.num_layers < 1:
        raise BadInputError(f"ssd_anchor_generator: num_layers {config.num_layers} must be >= 1")
    if config.scales:
        if len(config.scales) != config.num_layers:
            raise BadInputError(
                f"ssd_anchor_generator: {len(config.scales)} scales for "
                f"{config.num_layers} layers"
            )
        scales = [float(s) for s in config.scales]
    elif config.num_layers == 1:
        scales = [config.min_scale]
    else:
        step = (config.max_scale - config.min_scale) / (config.num_layers - 1)
        scales = [config.min_scale + step * i for i in range(config.num_layers)]
    scales.append(1.0)
    specs = []
    for layer, (scale, scale_next) in enumerate(zip(scales[:-1], scales[1:], strict=True)):
        if layer == 0 and config.reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        layer_specs = [(scale, float(ratio)) for ratio in config.aspect_ratios]
        if config.interpolated_scale_aspect_ratio > 0.0:
            layer_specs.append(
                (math.sqrt(scale * scale_next), config.interpolated_scale_aspect_ratio)
            )
        specs.append(layer_specs)
    return specs


def anchors_per_location(config: AnchorConfig | MultiscaleAnchorConfig) -> list[int]:
    """Return the number of boxes per feature-map cell of every layer."""
    if isinstance(config, MultiscaleAnchorConfig):
        levels = config.max_level - config.min_level + 1
        return [len(config.aspect_ratios) * config.scales_per_octave] * levels
    return [len(layer) for layer in box_specs(config)]


def ssd_anchors(
    config: AnchorConfig | MultiscaleAnchorConfig,
    feature_map_sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Return the anchors of all feature maps as float32 ``[A, 4]`` (yc, xc, h, w).

    Args:
        config: the generator settings.
        feature_map_sizes: (height, width) of each feature map, lowest layer first.
        image_size: (height, width) of the input; for ``ssd_anchor_generator`` only used for
            explicit strides/offsets and for non-square inputs (the base anchor is scaled to
            the shorter side); ``multiscale_anchor_generator`` always needs it.

    Raises:
        BadInputError: the number of feature maps differs from the generator's layers.
    """
    layers = len(anchors_per_location(config))
    if len(feature_map_sizes) != layers:
        raise BadInputError(
            f"the anchor generator has {layers} layers but the model has "
            f"{len(feature_map_sizes)} feature maps"
        )
    if isinstance(config, MultiscaleAnchorConfig):
        return _multiscale_anchors(config, feature_map_sizes, image_size)
    specs = box_specs(config)
    im_height, im_width = (float(v) for v in image_size)
    min_side = min(im_height, im_width)
    base_height = config.base_anchor_height * min_side / im_height
    base_width = config.base_anchor_width * min_side / im_width
    out = []
    for layer, ((rows, cols), layer_specs) in enumerate(
        zip(feature_map_sizes, specs, strict=True)
    ):
        stride_y, stride_x = _pick(config.height_stride, layer, im_height, 1.0 / rows), _pick(
            config.width_stride, layer, im_width, 1.0 / cols)
        offset_y = _pick(config.height_offset, layer, im_height, 0.5 * stride_y)
        offset_x = _pick(config.width_offset, layer, im_width, 0.5 * stride_x)
        scales = np.array([s for s, _ in layer_specs], np.float64)
        ratios = np.array([r for _, r in layer_specs], np.float64)
        out.append(_tile((rows, cols), scales, ratios, (base_height, base_width),
                         (stride_y, stride_x), (offset_y, offset_x)))
    return np.concatenate(out).astype(np.float32)


def _multiscale_anchors(config: MultiscaleAnchorConfig,
                        feature_map_sizes: Sequence[tuple[int, int]],
                        image_size: tuple[int, int]) -> np.ndarray:
    """``MultiscaleGridAnchorGenerator`` anchors, normalized like ``to_normalized_coordinates``."""
    im_height, im_width = image_size
    norm_y, norm_x = (float(im_height), float(im_width)) if config.normalize_coordinates \
        else (1.0, 1.0)
    per_octave = config.scales_per_octave
    # GridAnchorGenerator's meshgrid(scales, aspect_ratios): ratio-major, scale-minor.
    scales = np.tile(2.0 ** (np.arange(per_octave) / per_octave), len(config.aspect_ratios))
    ratios = np.repeat(np.array(config.aspect_ratios, np.float64), per_octave)
    out = []
    for level, size in zip(range(config.min_level, config.max_level + 1), feature_map_sizes,
                           strict=True):
        stride = 2.0 ** level
        base = stride * config.anchor_scale
        offset_y = stride / 2 if im_height % stride == 0 else 0.0
        offset_x = stride / 2 if im_width % stride == 0 else 0.0
        out.append(_tile(size, scales, ratios, (base / norm_y, base / norm_x),
                         (stride / norm_y, stride / norm_x),
                         (offset_y / norm_y, offset_x / norm_x)))
    return np.concatenate(out).astype(np.float32)


def _tile(size: tuple[int, int], scales: np.ndarray, ratios: np.ndarray,
          base: tuple[float, float], stride: tuple[float, float],
          offset: tuple[float, float]) -> np.ndarray:
    """Return one feature map's anchors (``tile_anchors``), ordered row, column, then box.

    ``base``, ``stride`` and ``offset`` are (y, x) pairs; box ``k`` is ``scales[k] /
    sqrt(ratios[k]) * base_y`` high and ``scales[k] * sqrt(ratios[k]) * base_x`` wide.
    """
    rows, cols = size
    ratio_sqrts = np.sqrt(ratios)
    heights = scales / ratio_sqrts * base[0]
    widths = scales * ratio_sqrts * base[1]
    y_centers = np.arange(rows, dtype=np.float64) * stride[0] + offset[0]
    x_centers = np.arange(cols, dtype=np.float64) * stride[1] + offset[1]
    yc, xc, k = np.meshgrid(y_centers, x_centers, np.arange(len(scales)), indexing="ij")
    return np.stack([yc.ravel(), xc.ravel(), heights[k.ravel()], widths[k.ravel()]], 1)


def _pick(values: tuple[int, ...], layer: int, image_side: float, default: float) -> float:
    """Return an explicit pixel stride/offset normalized to the image side, or the default."""
    return values[layer] / image_side if values else default
