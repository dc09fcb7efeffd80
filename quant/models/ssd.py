"""SSD / SSDLite detectors as the TF1 Object Detection API builds them, from a pipeline config.

The network ends before post-processing: outputs are the raw box encodings ``[1, A, 4]``
and the class scores after the score converter (sigmoid) ``[1, A, num_classes + 1]``, the
inputs of ``TFLite_Detection_PostProcess``. Layer names are the OD API checkpoint scopes:
the backbone under ``FeatureExtractor/<Backbone>``, extra feature maps named by
``multi_resolution_feature_maps`` (``Conv2d_13_pointwise_2_Conv2d_2_3x3_s2_512``), box
predictors ``BoxPredictor_N/{BoxEncodingPredictor,ClassPredictor}`` (with ``_depthwise``
separable parts in SSDLite). See :mod:`quant.models._layers` for the naming rule.

Example::

    config = read_ssd_config("pipeline.config")
    model = build_ssd(config)              # random weights
    load_weights(model, "model.ckpt", scope="FeatureExtractor")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from quant._tensorflow import keras
from quant.anchors import anchors_per_location
from quant.errors import BadInputError
from quant.models._layers import conv_bn, depthwise_bn
from quant.models.mobilenet_edgetpu import V3_EDGETPU
from quant.models.mobilenet_v1 import mobilenet_v1_features
from quant.models.mobilenet_v2 import mobilenet_v2_features
from quant.models.mobilenet_v3 import V3_LARGE_DETECTION, V3_SMALL_DETECTION, mobilenet_v3_trunk
from quant.pipeline_config import SsdConfig

layers = keras.layers

# Depth of the extra feature maps added after the backbone ("-1": a backbone endpoint).
EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
BOX_ENCODINGS = "box_encodings"
CLASS_SCORES = "class_scores"


@dataclasses.dataclass(frozen=True)
class _Backbone:
    """A feature extractor: its scope, endpoints builder and the two endpoints it feeds."""

    scope: str
    endpoints: Callable[[object, SsdConfig, str], list]
    base_name: str


def _mobilenet_v1_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    ends = mobilenet_v1_features(inputs, fe.depth_multiplier, fe.min_depth, scope)
    return [ends["Conv2d_11_pointwise"], ends["Conv2d_13_pointwise"]]


def _mobilenet_v2_endpoints(inputs, config: SsdConfig, scope: str) -> list:
    fe = config.feature_extractor
    if fe.depth_multiplier < 1.0:
        raise BadInputError(
            f"ssd_mobilenet_v2 with depth_multiplier {fe.depth_multiplier} is not supported "
            "(the builder keeps Conv_1 at 1280 channels below 1.0, the OD API does not)"
        )
    top = mobilenet_v2_features(inputs, fe.depth_multiplier, scope)
    trunk = keras.Model(inputs, top)
    # layer_15/expansion_output of TF-slim: the expand conv (after ReLU6) of expanded_conv_13.
    return [trunk.get_layer(f"{scope}/expanded_conv_13/expand/Relu6").output, top]


def _trunk_endpoints(spec, first: str, last: str) -> Callable[[object, SsdConfig, str], list]:
    """Endpoints of a block-spec trunk (MobileNet v3 / EdgeTPU): ``first`` and ``last``."""

    def endpoints(inputs, config: SsdConfig, scope: str) -> list:
        fe = config.feature_extractor
        ends = mobilenet_v3_trunk(inputs, spec, scope, fe.depth_multiplier, fe.min_depth)
        return [ends[first], ends[last]]

    return endpoints


_BACKBONES: dict[str, _Backbone] = {
    "ssd_mobilenet_v1": _Backbone("FeatureExtractor/MobilenetV1", _mobilenet_v1_endpoints,
                                  "Conv2d_13_pointwise"),
    "ssd_mobilenet_v2": _Backbone("FeatureExtractor/MobilenetV2", _mobilenet_v2_endpoints,
                                  "layer_19"),
    # ssd_mobilenet_v3_feature_extractor.py: from_layer of the large / small extractors.
    "ssd_mobilenet_v3_large": _Backbone(
        "FeatureExtractor/MobilenetV3",
        _trunk_endpoints(V3_LARGE_DETECTION, "layer_14/expansion_output", "layer_17"),
        "layer_17"),
    "ssd_mobilenet_v3_small": _Backbone(
        "FeatureExtractor/MobilenetV3",
        _trunk_endpoints(V3_SMALL_DETECTION, "layer_10/expansion_output", "layer_13"),
        "layer_13"),
    # ssd_mobilenet_edgetpu_feature_extractor.py.
    "ssd_mobilenet_edgetpu": _Backbone(
        "FeatureExtractor/MobilenetEdgeTPU",
        _trunk_endpoints(V3_EDGETPU, "layer_18/expansion_output", "layer_23"),
        "layer_23"),
}


def list_feature_extractors() -> list[str]:
    """Return the ``feature_extractor.type`` values :func:`build_ssd` supports."""
    return sorted(_BACKBONES)


def build_ssd(config: SsdConfig, name: str | None = None):
    """Build the SSD network of ``config`` (random weights), batch 1, float32 input in [-1, 1].

    Args:
        config: the parsed ``pipeline.config``.
        name: the Keras model name (default: the feature extractor type).

    Returns:
        A tf-keras Model with outputs ``box_encodings`` [1, A, 4] and ``class_scores``
        [1, A, num_classes + 1].

    Raises:
        BadInputError: an architecture option this builder does not implement.
    """
    fe, predictor = config.feature_extractor, config.box_predictor
    backbone = _BACKBONES.get(fe.type)
    if backbone is None:
        raise BadInputError(
            f"feature extractor {fe.type!r} is not supported; supported: "
            f"{list_feature_extractors()}"
        )
    _check_supported(config)
    height, width = config.image_size
    inputs = keras.Input((height, width, 3), batch_size=1, name="normalized_input_image_tensor")
    feature_maps = backbone.endpoints(inputs, config, backbone.scope)
    x = feature_maps[-1]

    def depth(channels: int) -> int:
        return max(int(channels * fe.depth_multiplier), fe.min_depth)

    for index, layer_depth in enumerate(EXTRA_LAYER_DEPTHS, start=len(feature_maps)):
        prefix = f"{backbone.scope}/{backbone.base_name}"
        x = conv_bn(x, depth(layer_depth // 2), 1, 1,
                    f"{prefix}_1_Conv2d_{index}_1x1_{depth(layer_depth // 2)}")
        scope = f"{prefix}_2_Conv2d_{index}_3x3_s2_{depth(layer_depth)}"
        if fe.use_depthwise:
            x = depthwise_bn(x, 2, f"{scope}_depthwise")
            x = conv_bn(x, depth(layer_depth), 1, 1, scope)
        else:
            x = conv_bn(x, depth(layer_depth), 3, 2, scope)
        feature_maps.append(x)

    boxes, scores = [], []
    num_slots = config.num_classes + 1
    for index, (feature_map, anchors) in enumerate(
        zip(feature_maps, anchors_per_location(config.anchors), strict=True)
    ):
        scope = f"BoxPredictor_{index}"
        box = _predictor_conv(feature_map, anchors * predictor.box_code_size,
                              f"{scope}/BoxEncodingPredictor", config)
        boxes.append(layers.Reshape((-1, predictor.box_code_size), name=f"{scope}/Reshape")(box))
        cls = _predictor_conv(feature_map, anchors * num_slots, f"{scope}/ClassPredictor", config)
        scores.append(layers.Reshape((-1, num_slots), name=f"{scope}/Reshape_1")(cls))
    box_encodings = layers.Concatenate(axis=1, name=BOX_ENCODINGS)(boxes)
    logits = layers.Concatenate(axis=1, name="concat_1")(scores)
    class_scores = layers.Activation("sigmoid", name=CLASS_SCORES)(logits)
    return keras.Model(inputs, [box_encodings, class_scores], name=name or fe.type)


def _predictor_conv(x, filters: int, scope: str, config: SsdConfig):
    """One box-predictor head: [separable 3x3 + BN + ReLU6, then] conv with bias."""
    kernel = config.box_predictor.kernel_size
    if config.box_predictor.use_depthwise:
        x = depthwise_bn(x, 1, f"{scope}_depthwise", kernel=kernel)
        kernel = 1
    return layers.Conv2D(filters, kernel, padding="same", use_bias=True, name=scope)(x)


def _check_supported(config: SsdConfig) -> None:
    fe, predictor = config.feature_extractor, config.box_predictor
    problems = []
    if fe.activation != "RELU_6" or (predictor.use_depthwise and predictor.activation != "RELU_6"):
        problems.append(f"activation {fe.activation} (only RELU_6)")
    if fe.use_explicit_padding:
        problems.append("use_explicit_padding")
    if predictor.num_layers_before_predictor:
        problems.append(f"num_layers_before_predictor {predictor.num_layers_before_predictor}")
    if config.anchors.num_layers != 2 + len(EXTRA_LAYER_DEPTHS):
        problems.append(f"{config.anchors.num_layers} anchor layers (6 feature maps)")
    if config.nms.score_converter not in ("SIGMOID",):
        problems.append(f"score_converter {config.nms.score_converter} (only SIGMOID)")
    if problems:
        raise BadInputError(f"unsupported SSD settings in pipeline.config: {'; '.join(problems)}")
