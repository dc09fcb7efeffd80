"""Read an Object Detection API ``pipeline.config`` (text protobuf) into plain typed data.

The text format is parsed without the OD API's ``.proto`` files: messages become dicts whose
values are lists (every field may repeat), scalars become int / float / bool / str (enum
names such as ``RELU_6`` stay strings). :func:`read_ssd_config` then picks the fields an
SSD export needs into frozen dataclasses, with the OD API defaults where a field is absent.

Example::

    config = read_ssd_config("ssd_mobilenet_v2_coco/pipeline.config")
    config.feature_extractor.type, config.nms.iou_threshold  # ('ssd_mobilenet_v2', 0.6)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgeq.errors import BadInputError
from edgeq.textproto import Message, parse_text_proto
from quant.detection.anchors import AnchorConfig, MultiscaleAnchorConfig


@dataclasses.dataclass(frozen=True)
class FeatureExtractorConfig:
    """``feature_extractor`` settings: type (``ssd_mobilenet_v1``...), depth, activation, and
    the ``fpn`` levels and depth of the FPN extractors (OD API defaults 3, 7, 256).

    ``override_base_hyperparams`` (``override_base_feature_extractor_hyperparams``): the
    ``conv_hyperparams`` (``activation``, ``batch_norm_epsilon``) apply to the backbone too,
    not only to the layers added on top of it. ``spaghettinet_arch_name``: the
    ``ssd_spaghettinet`` variant (OD API default ``spaghettinet_edgetpu_m``).
    """

    type: str
    depth_multiplier: float = 1.0
    min_depth: int = 16
    pad_to_multiple: int = 1
    use_depthwise: bool = False
    use_explicit_padding: bool = False
    activation: str = "RELU_6"
    override_base_hyperparams: bool = False
    batch_norm_epsilon: float = 0.001
    fpn_min_level: int = 3
    fpn_max_level: int = 7
    additional_layer_depth: int = 256
    spaghettinet_arch_name: str = "spaghettinet_edgetpu_m"


@dataclasses.dataclass(frozen=True)
class BoxPredictorConfig:
    """``convolutional_box_predictor`` or ``weight_shared_convolutional_box_predictor`` settings.

    Attributes:
        kernel_size: kernel of the predictor convolutions (and of the weight-shared towers).
        use_depthwise: separable predictor convolutions (SSDLite).
        num_layers_before_predictor: tower convolutions before the predictors.
        box_code_size: box encoding size.
        activation: ``conv_hyperparams`` activation.
        weight_shared: ``weight_shared_convolutional_box_predictor`` (one predictor for all
            feature maps).
        depth: channels of the weight-shared tower convolutions.
        share_prediction_tower: one tower for boxes and classes instead of one each.
        batch_norm: ``conv_hyperparams`` has ``batch_norm`` (the weight-shared towers then get
            one BatchNorm per feature map instead of biases).
    """

    kernel_size: int = 1
    use_depthwise: bool = False
    num_layers_before_predictor: int = 0
    box_code_size: int = 4
    activation: str = "RELU_6"
    weight_shared: bool = False
    depth: int = 0
    share_prediction_tower: bool = False
    batch_norm: bool = True


@dataclasses.dataclass(frozen=True)
class BoxCoderScales:
    """``faster_rcnn_box_coder`` scales (the post-processing op's y/x/h/w scales)."""

    y_scale: float = 10.0
    x_scale: float = 10.0
    height_scale: float = 5.0
    width_scale: float = 5.0


@dataclasses.dataclass(frozen=True)
class NmsConfig:
    """``post_processing`` settings: ``batch_non_max_suppression`` and the score converter."""

    score_threshold: float = 0.0
    iou_threshold: float = 0.6
    max_detections_per_class: int = 100
    max_total_detections: int = 100
    use_class_agnostic_nms: bool = False
    score_converter: str = "IDENTITY"


@dataclasses.dataclass(frozen=True)
class SsdConfig:
    """The parts of an SSD ``pipeline.config`` that define the network and its export."""

    num_classes: int
    image_size: tuple[int, int]
    feature_extractor: FeatureExtractorConfig
    box_predictor: BoxPredictorConfig
    anchors: AnchorConfig | MultiscaleAnchorConfig
    box_coder: BoxCoderScales
    nms: NmsConfig
    encode_background_as_zeros: bool = False


def read_pipeline_config(path: str | Path) -> Message:
    """Return the parsed ``pipeline.config`` at ``path``.

    Raises:
        BadInputError: the file is missing or unparsable.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read pipeline config ({exc.strerror})") from exc
    return parse_text_proto(text, str(path))


def read_ssd_config(path: str | Path) -> SsdConfig:
    """Return the SSD settings of the ``pipeline.config`` at ``path``.

    Raises:
        BadInputError: the file is unreadable or does not describe an SSD model with a
            fixed-shape resizer and an ``ssd_anchor_generator`` or
            ``multiscale_anchor_generator``.
    """
    return ssd_config_from_message(read_pipeline_config(path), str(path))


def ssd_config_from_message(config: Message, source: str = "pipeline.config") -> SsdConfig:
    """Return the :class:`SsdConfig` of a parsed ``pipeline.config``.

    Raises:
        BadInputError: a required section is missing or unsupported (named in the message).
    """
    model = _one(config, "model", source)
    if "ssd" not in model:
        raise BadInputError(
            f"{source}: model is {', '.join(model) or 'empty'}, not ssd; only SSD / SSDLite "
            "detection models are supported"
        )
    ssd = _one(model, "ssd", source)
    resizer = _one(_one(ssd, "image_resizer", source), "fixed_shape_resizer", source,
                   "a fixed_shape_resizer (Edge TPU models need a static input size)")
    extractor = _one(ssd, "feature_extractor", source)
    fpn = _get(extractor, "fpn", {})
    predictors = _one(ssd, "box_predictor", source)
    weight_shared = "weight_shared_convolutional_box_predictor" in predictors
    predictor = _one(predictors, "weight_shared_convolutional_box_predictor" if weight_shared
                     else "convolutional_box_predictor", source)
    coder = _get(ssd, "box_coder", {}).get("faster_rcnn_box_coder", [{}])[0]
    post = _get(ssd, "post_processing", {})
    nms = _get(post, "batch_non_max_suppression", {})
    return SsdConfig(
        num_classes=int(_get(ssd, "num_classes", 0)) or _missing(source, "ssd.num_classes"),
        image_size=(int(_get(resizer, "height", 300)), int(_get(resizer, "width", 300))),
        feature_extractor=FeatureExtractorConfig(
            type=str(_get(extractor, "type", "")) or _missing(source, "feature_extractor.type"),
            depth_multiplier=float(_get(extractor, "depth_multiplier", 1.0)),
            min_depth=int(_get(extractor, "min_depth", 16)),
            pad_to_multiple=int(_get(extractor, "pad_to_multiple", 1)),
            use_depthwise=bool(_get(extractor, "use_depthwise", False)),
            use_explicit_padding=bool(_get(extractor, "use_explicit_padding", False)),
            activation=_activation(extractor),
            override_base_hyperparams=bool(
                _get(extractor, "override_base_feature_extractor_hyperparams", False)),
            batch_norm_epsilon=_batch_norm_epsilon(extractor),
            fpn_min_level=int(_get(fpn, "min_level", 3)),
            fpn_max_level=int(_get(fpn, "max_level", 7)),
            additional_layer_depth=int(_get(fpn, "additional_layer_depth", 256)),
            spaghettinet_arch_name=str(
                _get(extractor, "spaghettinet_arch_name", "spaghettinet_edgetpu_m")),
        ),
        box_predictor=BoxPredictorConfig(
            kernel_size=int(_get(predictor, "kernel_size", 3 if weight_shared else 1)),
            use_depthwise=bool(_get(predictor, "use_depthwise", False)),
            num_layers_before_predictor=int(_get(predictor, "num_layers_before_predictor", 0)),
            box_code_size=int(_get(predictor, "box_code_size", 4)),
            activation=_activation(predictor),
            weight_shared=weight_shared,
            depth=int(_get(predictor, "depth", 0)),
            share_prediction_tower=bool(_get(predictor, "share_prediction_tower", False)),
            batch_norm="batch_norm" in _get(predictor, "conv_hyperparams", {}),
        ),
        anchors=_anchor_config(_one(ssd, "anchor_generator", source), source),
        box_coder=BoxCoderScales(
            y_scale=float(_get(coder, "y_scale", 10.0)),
            x_scale=float(_get(coder, "x_scale", 10.0)),
            height_scale=float(_get(coder, "height_scale", 5.0)),
            width_scale=float(_get(coder, "width_scale", 5.0)),
        ),
        nms=NmsConfig(
            score_threshold=float(_get(nms, "score_threshold", 0.0)),
            iou_threshold=float(_get(nms, "iou_threshold", 0.6)),
            max_detections_per_class=int(_get(nms, "max_detections_per_class", 100)),
            max_total_detections=int(_get(nms, "max_total_detections", 100)),
            use_class_agnostic_nms=bool(_get(nms, "use_class_agnostic_nms", False)),
            score_converter=str(_get(post, "score_converter", "IDENTITY")),
        ),
        encode_background_as_zeros=bool(_get(ssd, "encode_background_as_zeros", False)),
    )


# Anchor generator fields -> the type of their values (tuple fields repeat).
_SSD_ANCHOR_FIELDS = {
    "num_layers": int, "min_scale": float, "max_scale": float, "aspect_ratios": float,
    "scales": float, "interpolated_scale_aspect_ratio": float,
    "reduce_boxes_in_lowest_layer": bool, "base_anchor_height": float,
    "base_anchor_width": float, "height_stride": int, "width_stride": int,
    "height_offset": int, "width_offset": int,
}
_MULTISCALE_ANCHOR_FIELDS = {
    "min_level": int, "max_level": int, "anchor_scale": float, "aspect_ratios": float,
    "scales_per_octave": int, "normalize_coordinates": bool,
}


def _anchor_config(generator: Message, source: str) -> AnchorConfig | MultiscaleAnchorConfig:
    """Return the settings of an ``ssd_anchor_generator`` or ``multiscale_anchor_generator``."""
    if "multiscale_anchor_generator" in generator:
        return _with_fields(MultiscaleAnchorConfig(),
                            _one(generator, "multiscale_anchor_generator", source),
                            _MULTISCALE_ANCHOR_FIELDS)
    anchor = _one(generator, "ssd_anchor_generator", source,
                  "ssd_anchor_generator or multiscale_anchor_generator")
    return _with_fields(AnchorConfig(), anchor, _SSD_ANCHOR_FIELDS)


def _with_fields(defaults: Any, message: Message, fields: dict[str, type]) -> Any:
    """Return the dataclass ``defaults`` with the ``fields`` that ``message`` sets: the last
    value of a scalar field, all values of a tuple field, each cast to its type."""
    changes = {}
    for name, cast in fields.items():
        values = message.get(name)
        if values:
            repeated = isinstance(getattr(defaults, name), tuple)
            changes[name] = tuple(cast(v) for v in values) if repeated else cast(values[-1])
    return dataclasses.replace(defaults, **changes)


def _get(message: Message, name: str, default: Any) -> Any:
    """Return the last value of a field (protobuf text semantics), or ``default``."""
    values = message.get(name)
    return values[-1] if values else default


def _one(message: Message, name: str, source: str, what: str | None = None) -> Message:
    values = message.get(name)
    if not values or not isinstance(values[-1], dict):
        raise BadInputError(
            f"{source}: no {name} section; expected {what or name} as in the Object "
            "Detection API's SSD configs"
        )
    return values[-1]


def _missing(source: str, field: str) -> Any:
    raise BadInputError(f"{source}: {field} is missing")


def _batch_norm_epsilon(section: Message) -> float:
    """The ``conv_hyperparams.batch_norm.epsilon`` of a section (proto default 0.001)."""
    batch_norm = _get(_get(section, "conv_hyperparams", {}), "batch_norm", {})
    return float(_get(batch_norm, "epsilon", 0.001))


def _activation(section: Message) -> str:
    hyperparams = _get(section, "conv_hyperparams", {})
    return str(_get(hyperparams, "activation", "RELU"))
